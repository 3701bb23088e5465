from django import forms
from django.contrib import admin, messages

from generation import services
from generation.models import Checkpoint, CreditAccount, CreditEntry, Job, PromptAudit


@admin.register(Checkpoint)
class CheckpointAdmin(admin.ModelAdmin):
    list_display = ("name", "source", "family", "enabled", "is_default", "is_test_model")
    list_filter = ("enabled", "family")


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

    class Meta:
        model = CreditAccount
        fields = ()

    def clean(self):
        data = super().clean()
        if data.get("adjust_by") and not data.get("reason"):
            self.add_error("reason", "Say why the balance changes; it goes into the ledger.")
        return data


class CreditEntryInline(admin.TabularInline):
    model = CreditEntry
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
    list_display = ("user", "balance", "last_topup_at")
    search_fields = ("user__username",)
    readonly_fields = ("user", "balance")
    inlines = [CreditEntryInline]

    def has_add_permission(self, request):
        return False

    def save_model(self, request, obj, form, change):
        amount = form.cleaned_data.get("adjust_by")
        if amount:
            services.credits_grant(user=obj.user, amount=amount, reason=form.cleaned_data["reason"], staff=request.user)
            messages.info(request, f"{amount:+d} credits recorded in {obj.user}'s ledger.")


@admin.register(PromptAudit)
class PromptAuditAdmin(admin.ModelAdmin):
    list_display = ("created_at", "username", "decision", "checkpoint", "prompt", "reason")
    list_filter = ("decision", "checkpoint")
    search_fields = ("prompt", "username")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
