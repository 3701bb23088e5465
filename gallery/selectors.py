from django.core.paginator import Paginator

from gallery.models import Image

PAGE_SIZE = 24


def gallery_page(*, owner=None, public=False, query: str = "", page=1):
    images = Image.objects.select_related("job").order_by("-created_at", "index")
    if owner is not None:
        images = images.filter(owner=owner)
    if public:
        images = images.filter(is_public=True)
    if query:
        images = images.filter(job__prompt__icontains=query)
    return Paginator(images, PAGE_SIZE).get_page(page)
