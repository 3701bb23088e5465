from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404

from gallery.models import Image


def _viewable(request, hex_id) -> Image:
    try:
        image = get_object_or_404(Image, pk=int(hex_id, 16))
    except ValueError:
        raise Http404
    if not image.can_view(request.user):
        raise Http404  # the same answer as for an id that doesn't exist
    return image


@login_required
def image_file(request, hex_id):
    image = _viewable(request, hex_id)
    return FileResponse(image.png.open("rb"), content_type="image/png",
                        as_attachment="download" in request.GET, filename=f"sdweb-{hex_id}.png")


@login_required
def image_thumbnail(request, hex_id):
    return FileResponse(_viewable(request, hex_id).thumbnail.open("rb"), content_type="image/webp")
