"""Reads of the library: which checkpoint a request gets, which add-ons a user may use."""

from django.db.models import Case, IntegerField, Q, Value, When

from generation.accounts.models import UserSettings
from generation.accounts.roles import allowance
from generation.library.models import AddOn, Checkpoint, is_model_name


def default_checkpoint(user=None) -> Checkpoint | None:
    """The checkpoint a request that names none gets (of those `user`'s roles allow)."""
    found = Checkpoint.objects.filter(enabled=True) if user is None else checkpoints_for(user)
    return found.order_by("-is_default", "name").first()


def checkpoints_for(user):
    """The enabled checkpoints `user`'s roles let them use (every one for someone in no role)."""
    allowed = allowance(user).checkpoints
    found = Checkpoint.objects.filter(enabled=True)
    return found if allowed is None else found.filter(pk__in=allowed)


def user_checkpoint(user) -> Checkpoint | None:
    """The user's own default (A1111 clients set it through /sdapi/v1/options), else the site's, else
    the first their roles allow."""
    chosen = UserSettings.objects.filter(user=user).values_list("default_checkpoint", flat=True).first()
    return checkpoints_for(user).filter(pk=chosen).first() or default_checkpoint(user)


def addons_for(user, *, kind: str | None = None, within_role: bool = True):
    """The add-ons `user` may use: the library, published uploads and their own; their own first
    where names clash, then the library's. Their roles may narrow the library's, block some, or
    leave uploads out (`within_role` False: as if in no role)."""
    allowed = allowance(user) if within_role else None
    library = Q(owner=None) if allowed is None or allowed.addons is None else Q(owner=None, pk__in=allowed.addons)
    shown = library
    if allowed is None or allowed.own_addons:
        shown |= Q(published=True) | (Q(owner=user) if user is not None and user.is_authenticated else Q(pk=None))
    found = AddOn.objects.filter(shown, enabled=True).select_related("owner")
    if allowed is not None and allowed.blocked_addons:
        found = found.exclude(pk__in=allowed.blocked_addons)
    if kind:
        found = found.filter(kind=kind)
    rank = Case(When(owner=user.pk if user is not None and user.is_authenticated else None, then=Value(0)),
                When(owner=None, then=Value(1)), default=Value(2), output_field=IntegerField())
    return found.annotate(rank=rank).order_by("kind", "name", "rank")


def addon_named(user, *, kind: str, name) -> AddOn | None:
    """The add-on `user` means by `name` (theirs first); None for any name that can't be one."""
    return addons_for(user, kind=kind).filter(name=name).first() if is_model_name(name) else None


def upscaler_models(user) -> list[str]:
    """The names of the upscaler models `user` may choose (hires fix and Upscale list them after
    the built-in ones)."""
    return list(addons_for(user, kind=AddOn.UPSCALER).values_list("name", flat=True).distinct())
