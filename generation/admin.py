import csv
import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q
from django.http import HttpResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path
from django.utils import timezone
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.text import smart_split, unescape_string_literal

from generation.accounts import admin as accounts_admin  # noqa: F401 (registers roles and teams)
from generation.accounts.models import StaffAction, StaffEvent
from generation.accounts.staff import staff_action
from generation.credits.ledger import credits_grant, team_credits_grant
from generation.credits.models import CreditAccount, CreditEntry
from generation.jobs.models import Job
from generation.library.addons import addon_publish, addons_remove, addons_scan
from generation.library.checkpoints import checkpoints_scan
from generation.library.models import AddOn, Checkpoint, Vae
from generation.provenance import prompt_filter
from generation.provenance.models import BlockRule, PromptAudit
from generation.provenance.trace import trace_image


class FolderScanAdmin(admin.ModelAdmin):
    """A changelist button registering what an operator copied into a folder (POST: it may hash for a while)."""

    scan_permission = scan_what = ""
    scan_files = None  # a service: scan(staff=) -> (found, {file: why skipped})

    def get_urls(self):
        name = f"{self.model._meta.app_label}_{self.model._meta.model_name}"
        return [path("scan/", self.admin_site.admin_view(self.scan), name=f"{name}_scan")] + super().get_urls()

    def scan(self, request):
        if request.method != "POST" or not request.user.has_perm(self.scan_permission):
            raise PermissionDenied
        found, skipped = self.scan_files(staff=request.user)
        self.message_user(request, f"{len(found)} {self.scan_what}: " + (", ".join(x.title for x in found) or "none"))
        for name, reason in skipped.items():
            self.message_user(request, f"Skipped {name}: {reason}", level=messages.WARNING)
        return redirect(f"admin:{self.model._meta.app_label}_{self.model._meta.model_name}_changelist")


@admin.register(Checkpoint)
class CheckpointAdmin(FolderScanAdmin):
    list_display = ("name", "source", "family", "short_hash", "enabled", "is_default", "is_test_model")
    list_filter = ("enabled", "family")
    readonly_fields = ("sha256", "file_size", "file_mtime")
    change_list_template = "admin/generation/checkpoint/change_list.html"
    scan_permission, scan_what = "generation.add_checkpoint", "checkpoint(s) in the models folder"
    scan_files = staticmethod(checkpoints_scan)


@admin.register(AddOn)
class AddOnAdmin(FolderScanAdmin):
    list_display = ("name", "kind", "family", "short_hash", "owner", "published", "enabled", "trigger_words")
    list_filter = ("kind", "family", "enabled", "published")
    search_fields = ("name", "owner__username", "sha256")
    readonly_fields = ("kind", "family", "source", "stored", "sha256", "file_size", "file_mtime", "owner", "published",
                       "preview")
    actions = ["publish", "unpublish"]
    change_list_template = "admin/generation/addon/change_list.html"
    scan_permission, scan_what = "generation.add_addon", "add-on(s) in the add-on folders"
    scan_files = staticmethod(addons_scan)

    def has_add_permission(self, request):
        return False  # files come from the add-on folders (Scan) or users' uploads

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        staff_action(staff=request.user, event=StaffEvent.CHANGE_ADDON, target=f"{obj.get_kind_display()} {obj.title}",
                     details=", ".join(form.changed_data))

    def delete_model(self, request, obj):
        addons_remove(staff=request.user, addons=[obj])

    def delete_queryset(self, request, queryset):
        addons_remove(staff=request.user, addons=list(queryset))

    @admin.action(description="Publish the selected uploads to everyone", permissions=["change"])
    def publish(self, request, queryset):
        for addon in queryset.exclude(owner=None):
            addon_publish(staff=request.user, addon=addon, published=True)

    @admin.action(description="Make the selected uploads private again", permissions=["change"])
    def unpublish(self, request, queryset):
        for addon in queryset.exclude(owner=None):
            addon_publish(staff=request.user, addon=addon, published=False)


@admin.register(Vae)
class VaeAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "enabled")
    readonly_fields = ("sha256", "file_size", "file_mtime")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "status", "checkpoint", "num_images", "cost", "attempts", "created_at")
    list_filter = ("status", "checkpoint")
    search_fields = ("prompt", "user__username", "id")
    exclude = ("preview",)
    readonly_fields = [f.name for f in Job._meta.fields if f.name != "preview"]

    def has_add_permission(self, request):
        return False


class CreditAccountForm(forms.ModelForm):
    adjust_by = forms.IntegerField(required=False, help_text="Credits to add (negative to remove)")
    reason = forms.CharField(required=False, max_length=200)
    allow_negative = forms.BooleanField(required=False, help_text="Let this adjustment take the balance below zero")

    class Meta:
        model = CreditAccount
        fields = ()

    def clean(self):
        data = super().clean()
        if data.get("adjust_by") and not data.get("reason"):
            self.add_error("reason", "Say why the balance changes; it goes into the ledger.")
        after = self.instance.balance + (data.get("adjust_by") or 0)
        if after < 0 and (data.get("adjust_by") or 0) < 0 and not data.get("allow_negative"):
            self.add_error("adjust_by", f"This would leave the balance at {after}. Remove at most "
                                        f"{self.instance.balance}, or tick \"Allow negative\" if you mean it.")
        return data


class CreditEntryInline(admin.TabularInline):
    model = CreditEntry
    verbose_name, verbose_name_plural = "ledger row", "ledger (every change of the balance, newest first)"
    fields = ("created_at", "kind", "amount", "reason", "job", "staff")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ("-created_at",)

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(CreditAccount)
class CreditAccountAdmin(admin.ModelAdmin):
    """Balances change only through ledger rows: an adjustment here is one, signed by the admin."""

    form = CreditAccountForm
    list_display = ("__str__", "balance", "last_topup_at")
    search_fields = ("user__username", "team__name")
    readonly_fields = ("user", "team", "balance")
    inlines = [CreditEntryInline]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False  # an account goes only with its user: the ledger must add up

    def save_model(self, request, obj, form, change):
        amount = form.cleaned_data.get("adjust_by")
        if amount and obj.team_id:
            team_credits_grant(team=obj.team, amount=amount, reason=form.cleaned_data["reason"], staff=request.user)
        elif amount:
            credits_grant(user=obj.user, amount=amount, reason=form.cleaned_data["reason"], staff=request.user)
        if amount:
            messages.info(request, f"{amount:+d} credits recorded in {obj.user or obj.team}'s ledger.")


class AppendOnlyAdmin(admin.ModelAdmin):
    """Rows staff may read but never add, change or delete."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


class UsernameFilter(admin.SimpleListFilter):
    """?username=…: one account's rows (the names in the list link here). Its only choice is the
    one in use: listing every name would read the whole log."""

    title, parameter_name = "username", "username"

    def lookups(self, request, model_admin):
        return [(self.value(), self.value())] if self.value() else []

    def queryset(self, request, queryset):
        return queryset.filter(username=self.value()) if self.value() else queryset


class CheckpointFilter(admin.SimpleListFilter):
    """The registered checkpoints' names, from their own small table."""

    title, parameter_name = "checkpoint", "checkpoint"

    def lookups(self, request, model_admin):
        return [(name, name) for name in Checkpoint.objects.order_by("name").values_list("name", flat=True)]

    def queryset(self, request, queryset):
        return queryset.filter(checkpoint=self.value()) if self.value() else queryset


class EstimatedCountPaginator(Paginator):
    """Counts that don't read a million rows (PostgreSQL): an unfiltered list's from the table's
    statistics, a filtered one's up to COUNT_UP_TO rows. `count_shown` says which it is."""

    COUNT_UP_TO = 500

    @cached_property
    def count(self):
        if connection.vendor != "postgresql":
            return super().count
        query = self.object_list.query
        if not query.where:
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s", [query.model._meta.db_table])
                estimate = (cursor.fetchone() or (-1,))[0]
            if estimate > 10_000:
                self.count_shown = f"about {estimate:,}"
                return estimate
            return super().count
        counted = self.object_list.order_by()[:self.COUNT_UP_TO + 1].count()
        if counted > self.COUNT_UP_TO:
            self.count_shown = f"more than {self.COUNT_UP_TO:,}"
        return counted


@admin.register(PromptAudit)
class PromptAuditAdmin(AppendOnlyAdmin):
    """Every submission, as decided. Read-only here; the CSV export takes the rows as filtered."""

    list_display = ("created", "user_link", "team", "decision", "checkpoint", "prompt_text", "reason", "job_id")
    # Filters whose choices don't come from a DISTINCT over a million rows; no date hierarchy (its
    # DISTINCT dates read every row), and the unfiltered count estimated (PostgreSQL).
    list_filter = ("decision", CheckpointFilter, ("created_at", admin.DateFieldListFilter), UsernameFilter)
    search_fields = ("prompt",)  # searched as get_search_results says
    show_full_result_count = False
    # A row's page (read-only) links back to the whole list, not the filtered one: carrying the
    # filters made every row's link resolve the URL again, a fifth of a filtered page's time.
    preserve_filters = False
    paginator = EstimatedCountPaginator
    list_per_page = 50
    change_list_template = "admin/generation/promptaudit/change_list.html"

    @admin.display(description="created at", ordering="created_at")
    def created(self, row):  # to the second, and cheaper than the admin's localised date format
        return timezone.localtime(row.created_at).strftime("%Y-%m-%d %H:%M:%S")

    @admin.display(description="team")
    def team(self, row):
        return row.params.get("team", "")

    @admin.display(description="username", ordering="username")
    def user_link(self, row):
        return format_html('<a href="?username={}">{}</a>', row.username, row.username)

    def get_search_results(self, request, queryset, search_term):
        """Rows with every word (or "quoted phrase") in a prompt or the reason. The prompts are
        matched by their normal forms and skeletons, so any case or width and the disguised
        spellings match too ("nude" finds a Cyrillic "nudе"); PostgreSQL reads trigram indexes."""
        for word in smart_split(search_term):
            if word[0] in "\"'" and word[0] == word[-1] and len(word) > 1:
                word = unescape_string_literal(word)
            spellings = dict.fromkeys((prompt_filter.normalise(word), prompt_filter.skeleton(word)))  # mostly one
            queryset = queryset.filter(Q(*(Q(search_text__contains=s) for s in spellings), Q(reason__icontains=word),
                                         _connector=Q.OR))
        return queryset, False

    @admin.display(description="prompt")
    def prompt_text(self, row):
        return row.prompt[:120]

    def get_urls(self):
        export = path("export/", self.admin_site.admin_view(self.export_csv), name="generation_promptaudit_export")
        trace = path("trace/", self.admin_site.admin_view(self.trace), name="generation_promptaudit_trace")
        return [export, trace] + super().get_urls()

    def trace(self, request):
        """Trace an image: upload it, read its watermark, show the audit row that made it."""
        if not request.user.has_perm("generation.trace_image"):
            raise PermissionDenied
        result, error = None, None
        if request.method == "POST":
            try:
                result = trace_image(request.FILES.get("image"), staff=request.user)
            except ValueError as problem:
                error = str(problem)
        return TemplateResponse(request, "admin/generation/promptaudit/trace.html", {
            **self.admin_site.each_context(request), "title": "Trace an image", "result": result, "error": error,
            "opts": self.model._meta}, status=400 if error else 200)

    def export_csv(self, request):
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = self.get_changelist_instance(request).get_queryset(request)
        response = HttpResponse(content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="prompt-audit.csv"'
        write_audit_csv(rows, response)
        return response


AUDIT_COLUMNS = ("created_at", "username", "user_id", "client_ip", "decision", "reason", "checkpoint", "prompt",
                 "negative_prompt", "params", "job_id", "image_ids")


def write_audit_csv(rows, out) -> None:
    writer = csv.writer(out)
    writer.writerow(AUDIT_COLUMNS)
    for row in rows.iterator():
        values = {f: getattr(row, f) for f in AUDIT_COLUMNS}
        values["params"] = json.dumps(row.params, sort_keys=True)
        values["image_ids"] = " ".join(f"{i:016x}" for i in row.image_ids)
        writer.writerow([spreadsheet_safe(values[f]) for f in AUDIT_COLUMNS])


def spreadsheet_safe(value):
    """A cell a spreadsheet would run as a formula is written as text (a leading apostrophe)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


@admin.register(BlockRule)
class BlockRuleAdmin(admin.ModelAdmin):
    """The prompt filter: words and phrases match whole words of the normalised prompt (case,
    full-width forms, zero-width characters and accents don't hide them); regexes match it as is."""

    list_display = ("pattern", "is_regex", "enabled", "note")
    list_filter = ("enabled", "is_regex")


@admin.register(StaffAction)
class StaffActionAdmin(AppendOnlyAdmin):
    list_display = ("created_at", "staff_name", "action", "target", "details")
    list_filter = ("action",)
    search_fields = ("staff_name", "target", "details")
