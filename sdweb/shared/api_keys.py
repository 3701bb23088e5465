"""Writes of the site itself: API keys."""

import hashlib
import secrets
from datetime import timedelta

from django.utils import timezone

from sdweb.models import ApiKey

KEY_PREFIX = "sdw_"


def digest(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_create(*, user, name: str) -> tuple[ApiKey, str]:
    """A new key; the raw key is returned this once and never stored."""
    raw = KEY_PREFIX + secrets.token_urlsafe(32)
    key = ApiKey.objects.create(user=user, name=name.strip()[:100] or "API key", prefix=raw[:12], digest=digest(raw))
    return key, raw


def api_key_revoke(*, user, key_id: int) -> bool:
    return bool(ApiKey.objects.filter(pk=key_id, user=user, revoked_at=None).update(revoked_at=timezone.now()))


def api_key_user(raw_key: str):
    """The active key's user and the key, or None. Marks the key used (at most once a minute)."""
    key = ApiKey.objects.select_related("user").filter(digest=digest(raw_key), revoked_at=None).first()
    if key is None or not key.user.is_active:
        return None
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.user, key
