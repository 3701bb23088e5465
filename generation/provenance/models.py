"""The append-only prompt audit and what hangs off it: its chain, the images it made and their
fingerprints, and the prompt filter's rules."""

import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

# What the audit records of a job's inputs
INPUT_DIGESTS = ("init_image_sha256", "mask_sha256", "init_image_id", "controlnet_sha256")


class AppendOnly(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("audit rows are append-only")

    def delete(self):
        raise PermissionError("audit rows are append-only")

    def pseudonymise_user(self, user_id: int, pseudonym: str) -> int:
        """The one change allowed: a deleted account's name replaced by a stable pseudonym
        (outside the hash chain, which covers `subject` instead)."""
        return models.QuerySet.update(self.filter(user_id=user_id), username=pseudonym)

    def seal(self, pk: int, position: int, hash: str) -> int:
        """Set a new row's place in the chain and its hash, once (generation.provenance.audit.chain_seal)."""
        return models.QuerySet.update(self.filter(pk=pk, position=None), position=position, hash=hash)

    def prune_through(self, position: int) -> int:
        """The one removal allowed, used by `prune_audit`: every row up to that place in the chain."""
        return models.QuerySet.delete(self.filter(position__lte=position))[1].get(self.model._meta.label, 0)


class PromptAudit(models.Model):
    """Every submission, accepted or refused, as it was decided. Appended, never edited."""

    objects = AppendOnly.as_manager()

    ACCEPTED, REFUSED = "accepted", "refused"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    username = models.CharField(max_length=150)
    subject = models.CharField(max_length=40, blank=True, help_text="A stable pseudonym of the user id")
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    prompt = models.TextField(blank=True)
    negative_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict)
    checkpoint = models.CharField(max_length=100, blank=True)
    decision = models.CharField(max_length=10, choices=[(ACCEPTED, ACCEPTED), (REFUSED, REFUSED)])
    reason = models.TextField(blank=True)
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    image_ids = models.JSONField(default=list)
    hash = models.CharField(max_length=64, blank=True, help_text="sha256 of this row and the hash before it")
    position = models.BigIntegerField(null=True, blank=True, unique=True, editable=False,
                                      help_text="The row's place in the chain, given when it is sealed")
    search_text = models.TextField(blank=True, editable=False, help_text="The prompts' normal forms and skeletons, "
                                   "so staff find disguised spellings (not part of the hash)")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["username", "-created_at"], name="audit_user_newest")]
        permissions = [("trace_image", "Can trace an image to the job, owner and prompt that made it")]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("audit rows are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("audit rows are append-only")


def new_image_id() -> int:
    """A random positive 63-bit id: fits a signed bigint, and its 8 bytes are the watermark."""
    return secrets.randbits(63) or 1


class AuditChain(models.Model):
    """The one row that holds the audit chain's head and the point it was pruned to."""

    head = models.CharField(max_length=64, default="0" * 64)
    length = models.BigIntegerField(default=0, help_text="Rows ever appended")
    base = models.CharField(max_length=64, default="0" * 64, help_text="The hash before the first kept row")
    base_position = models.BigIntegerField(default=0, help_text="Rows up to this place in the chain were pruned")
    pruned = models.BigIntegerField(default=0)


class AuditImage(models.Model):
    """Which audit row made an image: tracing a watermark finds its job after the job is gone."""

    image_id = models.BigIntegerField(primary_key=True)
    audit = models.ForeignKey(PromptAudit, on_delete=models.CASCADE, related_name="+")


class ImageFingerprint(models.Model):
    """Perceptual hashes of an image as it was handed out: the trace's second way in when a copy's
    watermark can't be read. Kept, like AuditImage, after the image or its account is deleted.
    Searched by a scan of bit counts (bench/provenance.py: faster at 1 M rows than any index here)."""

    image_id = models.BigIntegerField(primary_key=True)
    phash = models.BigIntegerField()
    whash = models.BigIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    @classmethod
    def of(cls, image_id: int, image) -> "ImageFingerprint":
        from generation.engine.fingerprint import fingerprint

        return cls(image_id=image_id, **vars(fingerprint(image)))


class BlockRule(models.Model):
    """A prompt filter rule staff edit in the admin (SDWEB_BLOCKLIST adds more from settings)."""

    pattern = models.CharField(max_length=500, help_text="A word or phrase, or a regular expression")
    is_regex = models.BooleanField(default=False)
    note = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)

    def __str__(self):
        return f"{'re:' if self.is_regex else ''}{self.pattern}"

    def clean(self):
        import re

        from django.core.exceptions import ValidationError

        if self.is_regex:
            try:
                re.compile(self.pattern)
            except re.error as error:
                raise ValidationError({"pattern": f"Not a valid regular expression: {error}"})
