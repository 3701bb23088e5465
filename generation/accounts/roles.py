"""What a user may use and how much, from their roles (accounts.models.Role): one answer that the
submit path, the lists of models and the credit top-up all ask."""

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from django.conf import settings

from generation.accounts.models import Role


@dataclass(frozen=True)
class Allowance:
    checkpoints: frozenset | None  # the checkpoints' ids a user may use; None: every one
    active_jobs: int
    max_side: int
    max_steps: int
    max_images: int
    monthly_credits: int | None  # None: the site's periodic top-up
    roles: tuple[str, ...]  # their names, for messages
    addons: frozenset | None = None  # the library add-ons' ids a user may use; None: every one
    blocked_addons: frozenset = frozenset()
    own_addons: bool = True  # may upload add-ons, and use their own and published ones
    max_upscale: float | None = None
    storage_bytes: int = 0  # 0: no quota


_KEPT: ContextVar[dict | None] = ContextVar("sdweb_allowances", default=None)


@contextmanager
def allowances_kept():
    """Within it, each user's allowance is worked out once: one request asks several times (the
    studio page: its lists, its checks), and a role changed meanwhile counts from the next request."""
    token = _KEPT.set({})
    try:
        yield
    finally:
        _KEPT.reset(token)


def allowance(user) -> Allowance:
    """The most any of `user`'s roles allows; the site's settings for someone in none (or anonymous)."""
    kept = _KEPT.get()
    key = user.pk if user is not None and user.is_authenticated else None
    if kept is None:
        return _allowance(user)
    if key not in kept:
        kept[key] = _allowance(user)
    return kept[key]


def _allowance(user) -> Allowance:
    site = settings.SDWEB
    roles = list(Role.objects.filter(group__user=user).select_related("group").prefetch_related(
        "checkpoints", "addons", "blocked_addons")) if user is not None and user.is_authenticated else []
    storage = site["STORAGE_QUOTA_MB"] * 2**20
    if not roles:
        return Allowance(None, site["ACTIVE_JOB_CAP"], site["MAX_SIDE"], site["MAX_STEPS"], site["MAX_IMAGES"], None, (),
                         storage_bytes=storage)

    def most(field: str, ceiling: int) -> int:  # blank: the site's own, which is also a role's ceiling
        return min(ceiling, max(ceiling if getattr(r, field) is None else getattr(r, field) for r in roles))

    def union(lists):  # every role lists some: what any of them allows; one lists none: everything
        return None if not all(lists) else frozenset().union(*lists)

    chosen = [frozenset(c.pk for c in r.checkpoints.all()) for r in roles]
    addons = [frozenset(a.pk for a in r.addons.all()) for r in roles]
    grants = [r.monthly_credits for r in roles if r.monthly_credits is not None]
    factors = [r.max_upscale for r in roles]
    quotas = [storage if r.storage_mb is None else r.storage_mb * 2**20 for r in roles]
    return Allowance(union(chosen), most("active_jobs", site["ACTIVE_JOB_CAP"]),
                     most("max_side", site["MAX_SIDE"]), most("max_steps", site["MAX_STEPS"]),
                     most("max_images", site["MAX_IMAGES"]), max(grants) if grants else None,
                     tuple(sorted(r.group.name for r in roles)), addons=union(addons),
                     blocked_addons=frozenset.intersection(*(frozenset(a.pk for a in r.blocked_addons.all()) for r in roles)),
                     own_addons=any(r.own_addons for r in roles),
                     max_upscale=None if None in factors else max(factors),
                     storage_bytes=0 if 0 in quotas else max(quotas))
