import secrets

from django.conf import settings
from django.db import models


def new_invite_code() -> str:
    return secrets.token_urlsafe(24)


class Invite(models.Model):
    """A one-use sign-up link for invite-only registration, issued by staff in the admin."""

    code = models.CharField(max_length=64, unique=True, default=new_invite_code, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    used_by = models.OneToOneField(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="invite")
    note = models.CharField(max_length=200, blank=True)

    def __str__(self):
        return self.note or self.code[:8]


class ApiKey(models.Model):
    """A long random key for scripts. Only its SHA-256 is stored: a fast hash is enough for a
    secret with 256 bits of entropy, and every API call checks one."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=12, help_text="The key's first characters, to recognise it")
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"
