from django.core.paginator import Paginator
from django.http import Http404

from gallery.models import Image

PAGE_SIZE = 24


def parse_image_id(hex_id: str) -> int:
    """An image id from its URL form; anything that can't be one is a 404, never an error."""
    try:
        value = int(hex_id, 16)
    except ValueError:
        raise Http404
    if not 0 < value < 2**63 or len(hex_id) != 16:
        raise Http404
    return value


def gallery_page(*, owner=None, public=False, query: str = "", page=1):
    images = Image.objects.select_related("job", "owner__studio_settings").order_by("-created_at", "index")
    if owner is not None:
        images = images.filter(owner=owner)
    if public:
        images = images.filter(is_public=True)
    if query:
        images = images.filter(job__prompt__icontains=query)
    return Paginator(images, PAGE_SIZE).get_page(page)


def public_name(image) -> str:
    """The maker's name on a shared image, if they chose to be named; else ""."""
    chosen = getattr(image.owner, "studio_settings", None)  # no settings row: never chosen
    return image.owner.username if chosen is not None and chosen.show_name_publicly else ""
