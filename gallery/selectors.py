from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.db.models import Q

from gallery.models import Image

PAGE_SIZE = 24
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_image_id(hex_id: str) -> int | None:
    """An image id from its URL form; None for anything that can't be one (the pages answer 404)."""
    try:
        value = int(hex_id, 16)
    except ValueError:
        return None
    return value if 0 < value < 2**63 and len(hex_id) == 16 else None


@dataclass
class Page:
    """A page of a gallery, newest first, found from the image it starts after (a cursor) rather than
    from an offset: a page deep in 100 000 images costs what the first does, and nothing is counted.
    `newer` and `older` are the cursors of the pages either side, "" where there is none."""

    images: list
    newer: str = ""
    older: str = ""

    def __iter__(self):
        return iter(self.images)

    def __len__(self):
        return len(self.images)


def visible_images(user):
    """A user's own private images and their teams' images (not those of teams they left)."""
    return Image.objects.filter(Q(owner=user, team__isnull=True) | Q(team__members__user=user))


def gallery_page(*, owner=None, team=None, public=False, query: str = "", before: str = "", after: str = "") -> Page:
    """The PAGE_SIZE images older than cursor `before` (or newer than `after`, or the newest): an
    owner's private ones, a team's, or the public ones."""
    # The grid shows each image's prompt and, on Explore, its maker's name: a job's other ~60 columns
    # (its JSON among them) are not read for every thumbnail.
    shown = [f.attname for f in Image._meta.concrete_fields] + ["job__prompt"]
    images = Image.objects.select_related("job").only(*shown)
    if owner is not None:
        images = images.filter(owner=owner, team__isnull=True)
    if team is not None:
        images = images.filter(team=team)
    if public:
        images = images.filter(is_public=True).select_related("owner__studio_settings").only(
            *shown, "owner__username", "owner__studio_settings__show_name_publicly")
    if query:  # one owner's jobs first: their prompts, not every job's, are read
        jobs = Image.job.field.related_model.objects.filter(prompt__icontains=query)
        images = images.filter(job__in=jobs.filter(user=owner) if owner is not None else jobs.filter(
            team=team) if team is not None else jobs)
    if start := cursor_parse(after):  # the page before: read towards the newest, shown newest first
        found = list(images.filter(created_at__gte=start[0]).filter(_beyond(start, newer=True)).order_by(
            "created_at", "-index", "-id")[:PAGE_SIZE + 1])
        shown = found[:PAGE_SIZE][::-1]
        return Page(shown, newer=cursor(shown[0]) if len(found) > PAGE_SIZE else "", older=cursor(shown[-1]) if shown else "")
    start = cursor_parse(before)
    if start:  # the bound alone, beside the exact condition, lets PostgreSQL start the index scan there
        images = images.filter(created_at__lte=start[0]).filter(_beyond(start, newer=False))
    found = list(images.order_by("-created_at", "index", "id")[:PAGE_SIZE + 1])
    shown = found[:PAGE_SIZE]
    return Page(shown, newer=cursor(shown[0]) if start and shown else "",
                older=cursor(shown[-1]) if len(found) > PAGE_SIZE else "")


def cursor(image: Image) -> str:
    return f"{(image.created_at - EPOCH) // timedelta(microseconds=1)}.{image.index}.{image.hex_id}"


def cursor_parse(text: str | None) -> tuple | None:
    """(created_at, index, id) from a cursor; anything else is no cursor (the newest page)."""
    try:
        micros, index, hex_id = (text or "").split(".")
        start = EPOCH + timedelta(microseconds=int(micros)), int(index), int(hex_id, 16)
    except (ValueError, OverflowError):
        return None
    return start if 0 <= start[1] < 2**31 and 0 <= start[2] < 2**63 else None  # what the columns hold


def _beyond(start: tuple, *, newer: bool) -> Q:
    """Images after `start` in the gallery's order (newest first, then by place in the job), or before it."""
    created_at, index, pk = start
    if newer:
        return Q(created_at__gt=created_at) | Q(created_at=created_at, index__lt=index) | Q(
            created_at=created_at, index=index, id__lt=pk)
    return Q(created_at__lt=created_at) | Q(created_at=created_at, index__gt=index) | Q(
        created_at=created_at, index=index, id__gt=pk)


def public_name(image) -> str:
    """The maker's name on a shared image, if they chose to be named; else ""."""
    chosen = getattr(image.owner, "studio_settings", None)  # no settings row: never chosen
    return image.owner.username if chosen is not None and chosen.show_name_publicly else ""
