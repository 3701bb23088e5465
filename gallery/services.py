"""Every write of the gallery: publishing a job's images, sharing, deleting, keeping variants,
exporting, and moderation. It imports nothing of generation but the accounts (settings, staff
actions): generation publishes through it."""

import json
import secrets
import zipfile

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from gallery.models import Image, Report
from generation.accounts.models import StaffEvent, UserSettings
from generation.accounts.staff import staff_action


def image_files_save(*, image_id: int, attempt: int, png: bytes, thumbnail: bytes) -> dict:
    """Write an image's original and thumbnail under names of one attempt's own, so an attempt
    that loses its job (its lease ran out) never replaces or deletes the winner's files."""
    stem = f"{image_id:016x}-{attempt}"
    return {"png": default_storage.save(f"images/{stem}.png", ContentFile(png)),
            "thumbnail": default_storage.save(f"thumbnails/{stem}.webp", ContentFile(thumbnail))}


def saved_files_delete(saved: list[dict]) -> None:
    """Delete files image_files_save wrote, for images that were never published."""
    for names in saved:
        default_storage.delete(names["png"])
        default_storage.delete(names["thumbnail"])


def image_files_delete(images) -> None:
    saved_files_delete([{"png": image.png.name, "thumbnail": image.thumbnail.name} for image in images])


def owner_images_delete(*, user) -> list[dict]:
    """Delete every image `user` owns, inside the caller's transaction; returns their files, for
    saved_files_delete once it has committed."""
    images = Image.objects.filter(owner=user)
    files = [{"png": png, "thumbnail": thumbnail} for png, thumbnail in images.values_list("png", "thumbnail")]
    images.delete()
    return files


def images_publish(*, job, made: list[dict]) -> list[Image]:
    """A finished job's images into its owner's gallery, inside the caller's transaction: each of
    `made` has the image's id, index, seed, width, height and the files image_files_save wrote.
    Images made from one staff hid meanwhile are hidden too: the source's row is held until this
    commits, so a takedown waits, then finds them."""
    source = Image.objects.select_for_update().filter(pk=job.init_image_id).values_list("hidden", flat=True)
    hidden = bool(job.init_image_id and source.first())
    return Image.objects.bulk_create([Image(owner_id=job.user_id, team_id=job.team_id, job=job, hidden=hidden,
                                             **fields) for fields in made])


@transaction.atomic
def image_set_public(*, image: Image, public: bool, actor) -> Image:
    """Public images get a fresh share slug; making one private closes the old link at once.
    An image staff hid stays private, and so do a suspended owner's. Staff changing someone
    else's image leave a staff action."""
    if public and image.hidden:
        raise PermissionError("Staff hid this image; it can't be made public again.")
    if public and UserSettings.objects.filter(user_id=image.owner_id, suspended_at__isnull=False).exists():
        raise PermissionError("This account is suspended, so its images can't be made public.")
    image.is_public = public
    image.share_slug = secrets.token_urlsafe(16) if public else None
    image.save(update_fields=["is_public", "share_slug"])
    if actor.pk != image.owner_id:
        staff_action(staff=actor, event=StaffEvent.PUBLISH_IMAGE if public else StaffEvent.UNPUBLISH_IMAGE, target=str(image))
    return image


def images_delete(*, images, actor=None) -> int:
    """Delete images and their files. Rows go first: a file without its row is never served.
    Staff deleting someone else's image leave a staff action."""
    images = list(images)
    with transaction.atomic():
        Image.objects.filter(pk__in=[image.pk for image in images]).delete()
        for image in images:
            if actor is not None and actor.pk != image.owner_id:
                staff_action(staff=actor, event=StaffEvent.DELETE_IMAGE, target=str(image), details=f"owner {image.owner_id}")
    image_files_delete(images)
    return len(images)


def images_keep(*, job, keep_ids: set[int]) -> int:
    """Keep the chosen variants of a job and delete the rest; returns how many were deleted."""
    return images_delete(images=job.images.exclude(pk__in=keep_ids))


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


# Moderation ---------------------------------------------------------------------------------

def report_create(*, image: Image, reporter, reason: str) -> Report:
    return Report.objects.create(image=image, reporter=reporter if reporter.is_authenticated else None,
                                 reason=reason.strip()[:1000] or "(no reason given)")


def _hide(images, outcome: str) -> int:
    """Hide `images` and every image made from them (img2img, upscales, and so on down). Each
    generation is hidden before the next is looked for: a job publishing from one of them holds
    its row (finish._publish), so it either sees it hidden or is done before the search."""
    ids = {image.pk for image in images}
    found = set(ids)
    while found:
        Image.objects.filter(pk__in=found).update(is_public=False, share_slug=None, hidden=True)
        found = set(Image.objects.filter(job__init_image_id__in=found).exclude(pk__in=ids).values_list("pk", flat=True))
        ids |= found
    Report.objects.filter(image_id__in=ids, resolved_at=None).update(resolved_at=timezone.now(), outcome=outcome)
    return len(ids)


@transaction.atomic
def image_hide(*, image: Image, staff, reason: str = "") -> None:
    """Staff take a public image down: private for good, its open reports resolved."""
    _hide([image], "image hidden")
    staff_action(staff=staff, event=StaffEvent.HIDE_IMAGE, target=str(image), details=reason)


@transaction.atomic
def report_dismiss(*, report: Report, staff) -> None:
    Report.objects.filter(pk=report.pk, resolved_at=None).update(resolved_at=timezone.now(), outcome="dismissed")
    staff_action(staff=staff, event=StaffEvent.DISMISS_REPORT, target=f"report {report.pk} on {report.image}")


@transaction.atomic
def user_suspend(*, user, staff, reason: str = "") -> int:
    """No more submissions from `user`, and their public images hidden; returns how many."""
    UserSettings.objects.update_or_create(user=user, defaults={"suspended_at": timezone.now(),
                                                               "suspended_reason": reason})
    hidden = _hide(list(Image.objects.filter(owner=user, is_public=True)), "owner suspended")
    staff_action(staff=staff, event=StaffEvent.SUSPEND_USER, target=user.get_username(),
                       details=f"{reason} ({hidden} images hidden)".strip())
    return hidden


@transaction.atomic
def user_unsuspend(*, user, staff) -> None:
    UserSettings.objects.filter(user=user).update(suspended_at=None, suspended_reason="")
    staff_action(staff=staff, event=StaffEvent.UNSUSPEND_USER, target=user.get_username())


def sharing_name_set(*, user, shown: bool) -> None:
    """The user chooses whether their name appears on the images they share."""
    UserSettings.objects.update_or_create(user=user, defaults={"show_name_publicly": shown})
