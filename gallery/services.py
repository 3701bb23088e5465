"""Every write of the gallery: sharing, deleting, keeping variants, leaving, exporting."""

import json
import secrets
import zipfile

from django.core.files.storage import default_storage
from django.db import transaction

from gallery.models import Image
from generation import audit
from generation.models import PromptAudit


@transaction.atomic
def image_set_public(*, image: Image, public: bool) -> Image:
    """Public images get a fresh share slug; making one private closes the old link at once."""
    image.is_public = public
    image.share_slug = secrets.token_urlsafe(16) if public else None
    image.save(update_fields=["is_public", "share_slug"])
    return image


def images_delete(*, images) -> int:
    """Delete images and their files. Rows go first: a file without its row is never served."""
    images = list(images)
    with transaction.atomic():
        Image.objects.filter(pk__in=[image.pk for image in images]).delete()
    for image in images:
        default_storage.delete(image.png.name)
        default_storage.delete(image.thumbnail.name)
    return len(images)


def images_keep(*, job, keep_ids: set[int]) -> int:
    """Keep the chosen variants of a job and delete the rest; returns how many were deleted."""
    return images_delete(images=job.images.exclude(pk__in=keep_ids))


def account_delete(*, user) -> None:
    """Remove the user, their jobs, images and files; their audit rows stay, pseudonymised."""
    images = list(Image.objects.filter(owner=user))
    with transaction.atomic():
        PromptAudit.objects.pseudonymise_user(user.pk, audit.pseudonym(user.pk))
        Image.objects.filter(owner=user).delete()
        user.delete()  # jobs, credits and ledger go with it; audit rows keep their ids
    for image in images:
        default_storage.delete(image.png.name)
        default_storage.delete(image.thumbnail.name)


def export_zip(*, user, into) -> None:
    """Write a zip of the user's original PNGs (with their metadata) and an index.json into `into`."""
    index = []
    with zipfile.ZipFile(into, "w", compression=zipfile.ZIP_STORED) as archive:  # PNGs don't compress
        for image in Image.objects.filter(owner=user).select_related("job", "job__checkpoint").order_by("created_at"):
            name = f"sdweb-{image.hex_id}.png"
            with default_storage.open(image.png.name, "rb") as file:
                archive.writestr(name, file.read())
            job = image.job
            index.append({"file": name, "id": image.hex_id, "job": str(job.pk), "created_at": image.created_at.isoformat(),
                          "seed": image.seed, "public": image.is_public, "checkpoint": job.checkpoint.name,
                          **{k: v for k, v in job.params().items() if k not in ("seed", "num_images")}})
        archive.writestr("index.json", json.dumps(index, indent=1, ensure_ascii=False))
