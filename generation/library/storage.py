"""A user's storage against their quota (SDWEB_STORAGE_QUOTA_MB, or their roles'): the images of
their own gallery and the add-ons they uploaded, what they can delete to make room. (Starting
images are kept with their jobs, capped per upload, and not counted.)"""

from django.db.models import Sum

from gallery.models import Image
from generation.accounts.roles import allowance
from generation.library.models import AddOn


def storage_used(user) -> int:
    images = Image.objects.filter(owner=user, team__isnull=True).aggregate(n=Sum("stored_bytes"))["n"] or 0
    return images + (AddOn.objects.filter(owner=user).aggregate(n=Sum("file_size"))["n"] or 0)


def storage_full(user, adding: int = 0) -> str:
    """Why `user` can't store `adding` more bytes (or any more, at 0), or "" while there is room."""
    quota = allowance(user).storage_bytes
    if not quota:
        return ""
    used = storage_used(user)
    if (used + adding <= quota) if adding else (used < quota):
        return ""
    return (f"Your storage is full: {used / 2**20:.1f} MB of your {quota / 2**20:.0f} MB are used by your images and "
            "add-ons" + (f", and this needs {adding / 2**20:.1f} MB more" if adding else "")
            + ". Delete some images or add-ons to make room.")
