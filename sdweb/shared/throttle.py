"""Who is asking, and how often: the client's address (from trusted proxies only), attempt
counters in the shared cache (Redis in production), and django-axes' lockouts for every place a
password is checked."""

import ipaddress
import unicodedata

from axes.handlers.cache import AxesCacheHandler
from axes.helpers import get_client_cache_keys
from django.conf import settings
from django.core.cache import cache
from django.shortcuts import render

TOO_MANY = "Too many attempts. Wait a few minutes and try again."


def too_many(scope: str, key: str, limit: int, window: int) -> bool:
    return cache.get(f"throttle:{scope}:{key}", 0) >= limit


def count(scope: str, key: str, window: int) -> None:
    name = f"throttle:{scope}:{key}"
    if not cache.add(name, 1, window):
        try:
            cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.add(name, 1, window)


def over_limit(scope: str, key: str, limit: int) -> bool:
    """Count one attempt in the window (SDWEB_AUTH_WINDOW_SECONDS) and say whether it is past `limit`."""
    window = settings.SDWEB["AUTH_WINDOW_SECONDS"]
    if too_many(scope, key, limit, window):
        return True
    count(scope, key, window)
    return False


def _address(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text.strip()))
    except ValueError:
        return None


def client_ip(request) -> str | None:
    """The client's address. X-Forwarded-For is believed only from a peer in SDWEB_TRUSTED_PROXIES,
    and then only up to the first address that is not a trusted proxy (read from the right, since
    a client can write anything on the left). Anything that is not an IP address is None."""
    peer = _address(request.META.get("REMOTE_ADDR", ""))
    trusted = settings.SDWEB["TRUSTED_PROXIES"]
    if peer is None or not any(ipaddress.ip_address(peer) in network for network in trusted):
        return peer
    for hop in reversed(request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")):
        address = _address(hop)
        if address is None:
            return peer  # a forged or broken header: the proxy is all we know
        if not any(ipaddress.ip_address(address) in network for network in trusted):
            return address
    return peer


def normalised_username(request, credentials) -> str:
    """The account name as Django's sign-in form reads it (NFKC, trimmed), case-folded: every
    spelling that reaches one account counts against that account."""
    name = (credentials or {}).get("username")
    if name is None and request is not None:
        name = request.POST.get("username", "")
    return unicodedata.normalize("NFKC", str(name)).strip().casefold()


def axes_client_ip(request) -> str:
    return client_ip(request) or "unknown"


class StudioLockouts(AxesCacheHandler):
    """Failed password checks lock an account name after SDWEB_AUTH_FAILURES_PER_ACCOUNT and a
    client address after SDWEB_AUTH_ATTEMPTS_PER_IP, each for SDWEB_AUTH_WINDOW_SECONDS.
    (AXES_LOCKOUT_PARAMETERS is ["username", "ip_address"], so the keys come in that order.)"""

    def is_locked(self, request, credentials=None) -> bool:
        by_name, by_ip = (self.cache.get(key, 0) for key in get_client_cache_keys(request, credentials))
        limits = settings.SDWEB
        return by_name >= limits["AUTH_FAILURES_PER_ACCOUNT"] or by_ip >= limits["AUTH_ATTEMPTS_PER_IP"]


def lockout_response(request, original_response=None, credentials=None):
    response = render(request, "too_many.html", {"message": TOO_MANY}, status=429)
    response["Retry-After"] = str(settings.SDWEB["AUTH_WINDOW_SECONDS"])
    return response
