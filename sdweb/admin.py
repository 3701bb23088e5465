from django.contrib import admin
from django.urls import reverse
from django.utils.html import format_html

from sdweb.models import Invite


@admin.register(Invite)
class InviteAdmin(admin.ModelAdmin):
    list_display = ("__str__", "created_by", "created_at", "used_by", "link")
    fields = ("note", "link", "used_by")
    readonly_fields = ("link", "used_by")

    def link(self, invite):
        if not invite.pk:
            return "Saved invites show their sign-up link here."
        return format_html("<code>{}</code>", reverse("signup-invite", args=[invite.code]))

    def save_model(self, request, obj, form, change):
        obj.created_by = obj.created_by if change else request.user
        super().save_model(request, obj, form, change)
