"""Leaving: an account and everything it made, across the apps."""

from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import Q

from gallery.services import owner_images_delete, saved_files_delete
from generation.jobs.models import Job
from generation.library.addons import addons_delete_owned
from generation.provenance.audit import pseudonym
from generation.provenance.models import PromptAudit


def account_delete(*, user) -> None:
    """Remove the user, their jobs, images and files (their uploaded starting images and masks
    too); their audit rows stay, pseudonymised."""
    jobs = Job.objects.filter(user=user)
    inputs = {name for pair in jobs.values_list("init_image", "mask") for name in pair if name} | {
        a["image"] for addons in jobs.exclude(addons=[]).values_list("addons", flat=True) for a in addons if "image" in a}
    addons_delete_owned(user=user)
    with transaction.atomic():
        PromptAudit.objects.pseudonymise_user(user.pk, pseudonym(user.pk))
        files = owner_images_delete(user=user)
        user.delete()  # jobs, credits and ledger go with it; audit rows keep their ids
    saved_files_delete(files)
    for name in inputs:  # named by their content: another account's job may use the same file
        if not Job.objects.filter(Q(init_image=name) | Q(mask=name) | Q(addons__icontains=name)).exists():
            default_storage.delete(name)
