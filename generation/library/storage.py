"""A user's storage against their quota (SDWEB_STORAGE_QUOTA_MB, or their roles'): the images of
their own gallery and the add-ons they uploaded, what they can delete to make room. (Starting images
are kept with their jobs, capped per upload, and not counted.) Submitting a job asks for room for its
images at the most they can take, beside that held by the jobs still under way."""

from django.db.models import Sum

from gallery.models import Image
from generation.accounts.roles import allowance
from generation.library.models import AddOn

BYTES_PER_PIXEL = 3  # a PNG of RGB pixels is at most about its raw size
THUMBNAIL_BYTES = 2**16


def storage_used(user) -> int:
    images = Image.objects.filter(owner=user, team__isnull=True).aggregate(n=Sum("stored_bytes"))["n"] or 0
    return images + (AddOn.objects.filter(owner=user).aggregate(n=Sum("file_size"))["n"] or 0)


def storage_full(user, adding: int, held: int = 0) -> str:
    """Why `user` can't store `adding` more bytes beside `held` (room their jobs under way hold), or
    "" while there is room."""
    quota = allowance(user).storage_bytes
    used = storage_used(user) + held if quota else 0
    if not quota or used + adding <= quota:
        return ""
    return (f"Your storage is full: {used / 2**20:.1f} MB of your {quota / 2**20:.0f} MB are taken by your images, "
            f"add-ons and jobs under way, and this needs {adding / 2**20:.1f} MB more. Delete some images or add-ons "
            "to make room.")
