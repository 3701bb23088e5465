"""Attempt counting for sign-in and sign-up, in the shared cache (Redis in production)."""

from django.core.cache import cache


def too_many(scope: str, key: str, limit: int, window: int) -> bool:
    return cache.get(f"throttle:{scope}:{key}", 0) >= limit


def count(scope: str, key: str, window: int) -> None:
    name = f"throttle:{scope}:{key}"
    if not cache.add(name, 1, window):
        try:
            cache.incr(name)
        except ValueError:  # expired between add and incr
            cache.add(name, 1, window)


def client_ip(request) -> str | None:
    return request.META.get("REMOTE_ADDR")
