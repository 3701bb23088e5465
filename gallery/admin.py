from django.contrib import admin, messages

from gallery import services
from gallery.models import Image, Report


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("__str__", "owner", "job", "seed", "is_public", "hidden", "created_at")
    list_filter = ("is_public", "hidden")
    readonly_fields = ("id", "owner", "job", "index", "seed", "png", "thumbnail", "width", "height", "created_at",
                       "is_public", "share_slug", "hidden")
    actions = ["hide"]

    @admin.action(description="Hide the selected images (private for good)")
    def hide(self, request, queryset):
        for image in queryset:
            services.image_hide(image=image, staff=request.user)
        messages.success(request, f"Hid {queryset.count()} images.")


class ReportStatus(admin.SimpleListFilter):
    title, parameter_name = "status", "status"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("resolved", "Resolved")]

    def queryset(self, request, queryset):
        if self.value() == "open":
            return queryset.filter(resolved_at=None)
        if self.value() == "resolved":
            return queryset.exclude(resolved_at=None)
        return queryset


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    """The moderation queue: open reports first."""

    list_display = ("image", "thumbnail", "owner", "short_reason", "reporter", "created_at", "outcome")
    list_filter = (ReportStatus, "outcome")
    readonly_fields = ("image", "reporter", "reason", "created_at", "resolved_at", "outcome")
    actions = ["hide_images", "suspend_owners", "dismiss"]

    @admin.display(description="reason")
    def short_reason(self, report):
        return report.reason[:80] + ("…" if len(report.reason) > 80 else "")

    def has_add_permission(self, request):
        return False

    @admin.display(description="Preview")
    def thumbnail(self, report):
        from django.urls import reverse
        from django.utils.html import format_html

        return format_html('<img src="{}" width="64" height="64" alt="">',
                           reverse("image-thumbnail", args=[report.image.hex_id]))

    @admin.display(description="Owner")
    def owner(self, report):
        return report.image.owner

    @admin.action(description="Hide the reported images")
    def hide_images(self, request, queryset):
        for report in queryset.select_related("image"):
            services.image_hide(image=report.image, staff=request.user, reason=f"report {report.pk}: {report.reason}")
        messages.success(request, "The images are hidden.")

    @admin.action(description="Suspend the owners (no more submissions, public images hidden)")
    def suspend_owners(self, request, queryset):
        for owner in {report.image.owner for report in queryset.select_related("image__owner")}:
            services.user_suspend(user=owner, staff=request.user, reason="after a report")
        messages.success(request, "Suspended.")

    @admin.action(description="Dismiss the reports")
    def dismiss(self, request, queryset):
        for report in queryset:
            services.report_dismiss(report=report, staff=request.user)
        messages.success(request, "Dismissed.")
