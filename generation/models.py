import secrets
import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from generation.engine.families import FAMILIES
from generation.engine.request import MASKED_CONTENT, RESIZE_MODES, ModelRef


def is_model_name(name) -> bool:
    """Whether `name` could be a stored model name (not NUL, a lone surrogate or too long)."""
    return isinstance(name, str) and "\x00" not in name and name.isprintable() and len(name) <= 100


class ModelQuerySet(models.QuerySet):
    def enabled_named(self, name):
        """The enabled row called `name`; None for any name that isn't one."""
        return self.filter(enabled=True, name=name).first() if is_model_name(name) else None


class Vae(models.Model):
    """A VAE file that decodes instead of a checkpoint's own (A1111's models/VAE)."""

    objects = ModelQuerySet.as_manager()

    name = models.CharField(max_length=100, unique=True, help_text="Its file name, as A1111 names a VAE")
    source = models.CharField(max_length=500, help_text="A .safetensors file")
    sha256 = models.CharField(max_length=64)
    file_size = models.BigIntegerField(null=True, blank=True)
    file_mtime = models.FloatField(null=True, blank=True)
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "VAE"

    def __str__(self):
        return self.name

    @property
    def title(self) -> str:
        return f"{self.name} [{self.sha256[:10]}]"

    def get_family_display(self) -> str:
        return "VAE"

    def model_ref(self) -> ModelRef:
        return ModelRef(self.source, name=self.name, hash=self.sha256[:10])


class Checkpoint(models.Model):
    """A registered model: a single .safetensors file, a diffusers folder on disk or a Hugging Face id."""

    objects = ModelQuerySet.as_manager()

    name = models.CharField(max_length=100, unique=True)
    source = models.CharField(max_length=500, help_text="A .safetensors file, a diffusers folder, or a Hugging Face id")
    family = models.CharField(max_length=20, choices=[(k, f.label) for k, f in FAMILIES.items()], default="sd1")
    config = models.CharField(max_length=500, blank=True,
                              help_text="A single file's diffusers config folder; blank: the one shipped for its family")
    sha256 = models.CharField(max_length=64, blank=True,
                              help_text="Of the file (a folder: of its UNet weights); A1111's hash is the first 10 digits")
    file_size = models.BigIntegerField(null=True, blank=True, help_text="When hashed: a change means hash again")
    file_mtime = models.FloatField(null=True, blank=True)
    default_vae = models.ForeignKey(Vae, null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
                                    help_text="Decodes this checkpoint's images unless a job picks another VAE")
    default_width = models.PositiveIntegerField(default=512)
    default_height = models.PositiveIntegerField(default=512)
    default_steps = models.PositiveIntegerField(default=20)
    enabled = models.BooleanField(default=True)
    is_default = models.BooleanField(default=False)
    is_test_model = models.BooleanField(default=False, help_text="The built-in random-weight model: images are noise")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-is_default", "name"]
        constraints = [models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True),
                                               name="one_default_checkpoint")]

    def __str__(self):
        return self.name

    @property
    def short_hash(self) -> str:
        return self.sha256[:10]

    @property
    def title(self) -> str:
        """As A1111 names a checkpoint."""
        return f"{self.name} [{self.short_hash}]" if self.sha256 else self.name

    @property
    def role(self) -> str:
        return FAMILIES[self.family].role if self.family in FAMILIES else "txt2img"

    @property
    def xl(self) -> bool:
        return self.family.startswith("sdxl")

    def model_ref(self) -> ModelRef:
        single = self.source.lower().endswith(".safetensors")
        return ModelRef(self.source, family=self.family if single else "", config=self.config, name=self.name,
                        hash=self.short_hash)


class AddOn(models.Model):
    """A LoRA, textual-inversion embedding or ControlNet: the operator's library (files in the
    add-on folders, owner empty) or a user's own upload (private unless staff publish it)."""

    LORA, EMBEDDING, CONTROLNET = "lora", "embedding", "controlnet"
    KINDS = [(LORA, "LoRA"), (EMBEDDING, "Embedding"), (CONTROLNET, "ControlNet")]
    BASE_FAMILIES = [("sd1", "SD 1.x"), ("sd2", "SD 2.x"), ("sdxl", "SDXL")]

    kind = models.CharField(max_length=12, choices=KINDS)
    name = models.CharField(max_length=100, help_text="As prompts name it: <lora:name:1>, or the embedding's word")
    family = models.CharField(max_length=8, choices=BASE_FAMILIES, help_text="Told from the file's tensors")
    source = models.CharField(max_length=500, help_text="The .safetensors file (an upload: its storage name)")
    stored = models.BooleanField(default=False, help_text="An upload kept in the site's storage, not a worker's file")
    config = models.CharField(max_length=500, blank=True, help_text="A ControlNet's diffusers config folder; "
                                                                    "blank: the one shipped for its family")
    sha256 = models.CharField(max_length=64)
    file_size = models.BigIntegerField()
    file_mtime = models.FloatField(null=True, blank=True)
    trigger_words = models.CharField(max_length=500, blank=True, help_text="From the file's training tags")
    preview = models.CharField(max_length=500, blank=True, help_text="A preview picture (storage name)")
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                              related_name="addons", help_text="Empty: the operator's library, for everyone")
    published = models.BooleanField(default=False, help_text="An upload shown to everyone (staff decide)")
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["kind", "name"]
        verbose_name = "add-on"
        constraints = [
            models.UniqueConstraint(fields=["kind", "name"], condition=Q(owner__isnull=True), name="one_library_addon_name"),
            models.UniqueConstraint(fields=["kind", "name", "owner"], name="one_addon_name_per_owner"),
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.name}"

    @property
    def short_hash(self) -> str:
        """A1111's: 12 hex digits for LoRAs and embeddings; the ControlNet extension's: 8."""
        return self.sha256[:8 if self.kind == self.CONTROLNET else 12]

    @property
    def title(self) -> str:
        return f"{self.name} [{self.short_hash}]"

    @property
    def tag(self) -> str:
        return f"<lora:{self.name}:1>" if self.kind == self.LORA else self.name


IMAGE_INPUT_PARAMS = ("denoising_strength", "resize_mode", "mask_blur", "inpainting_fill", "inpaint_full_res",
                      "inpaint_full_res_padding", "inpainting_mask_invert")
# What the audit records of a job's inputs
INPUT_DIGESTS = ("init_image_sha256", "mask_sha256", "init_image_id", "controlnet_sha256")
HIRES_PARAMS = ("enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y")


class Job(models.Model):
    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)
    # What a submission asks for (the engine's GenerationRequest fields, less the model).
    PARAMS = ("prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "scheduler", "seed",
              "num_images", "clip_skip", "refiner_switch_at", *IMAGE_INPUT_PARAMS, *HIRES_PARAMS)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField()
    scheduler = models.CharField(max_length=40)
    seed = models.BigIntegerField(help_text="The first image's seed; image k has seed + k")
    num_images = models.PositiveIntegerField()
    clip_skip = models.PositiveSmallIntegerField(default=1)
    refiner = models.ForeignKey(Checkpoint, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                                help_text="An SDXL refiner that takes over at refiner_switch_at")
    refiner_switch_at = models.FloatField(default=0.8)
    vae = models.ForeignKey(Vae, null=True, blank=True, on_delete=models.PROTECT, related_name="+",
                            help_text="The VAE file that decoded it; empty: the checkpoint's own")
    # img2img and inpaint: the starting image and mask as stored (clean PNGs) and the SHA-256 of
    # the files received, which the audit records too.
    init_image = models.CharField(max_length=200, blank=True, help_text="Storage name of the starting image")
    init_image_sha256 = models.CharField(max_length=64, blank=True)
    init_image_id = models.BigIntegerField(null=True, blank=True, help_text="The gallery image it started from")
    mask = models.CharField(max_length=200, blank=True, help_text="Storage name of the mask (white: repaint)")
    mask_sha256 = models.CharField(max_length=64, blank=True)
    denoising_strength = models.FloatField(default=0.75)
    resize_mode = models.PositiveSmallIntegerField(default=0, choices=list(enumerate(RESIZE_MODES)))
    mask_blur = models.PositiveSmallIntegerField(default=4)
    inpainting_fill = models.PositiveSmallIntegerField(default=1, choices=list(enumerate(MASKED_CONTENT)))
    inpaint_full_res = models.BooleanField(default=False, help_text="Only masked: work on the mask's box")
    inpaint_full_res_padding = models.PositiveSmallIntegerField(default=32)
    inpainting_mask_invert = models.BooleanField(default=False)
    enable_hr = models.BooleanField(default=False, help_text="Hires fix")
    hr_scale = models.FloatField(default=2.0)
    hr_upscaler = models.CharField(max_length=40, default="Latent")
    hr_second_pass_steps = models.PositiveSmallIntegerField(default=0)
    hr_resize_x = models.PositiveIntegerField(default=0)
    hr_resize_y = models.PositiveIntegerField(default=0)
    # An upscale of a finished image (init_image): no denoising, the picture resized by upscale_by.
    upscale_by = models.FloatField(default=0, help_text="0: not an upscale")
    upscaler = models.CharField(max_length=40, blank=True)
    addons = models.JSONField(default=list, blank=True, help_text="LoRAs, embeddings and ControlNet units it used: "
                                                                  "names, hashes, settings")
    image_ids = models.JSONField(help_text="Identifiers allocated at submit; also the watermark payloads")
    cost = models.PositiveIntegerField()

    status = models.CharField(max_length=10, choices=STATUSES, default=QUEUED, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    lease_until = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=100, blank=True, help_text="The worker that last started it")
    cancel_requested = models.BooleanField(default=False)
    progress_step = models.PositiveIntegerField(default=0)
    previews_sent = models.PositiveIntegerField(default=0)
    progress_total = models.PositiveIntegerField(default=0)
    preview = models.BinaryField(null=True, blank=True, editable=False)
    timings = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"])]
        constraints = [models.UniqueConstraint(fields=["user", "idempotency_key"],
                                               condition=Q(idempotency_key__isnull=False), name="one_job_per_idempotency_key")]

    def __str__(self):
        return f"{self.id} ({self.status})"

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    def params(self) -> dict:
        return {f: getattr(self, f) for f in self.PARAMS}

    @property
    def init_image_hex(self) -> str:
        return f"{self.init_image_id:016x}" if self.init_image_id else ""

    @property
    def mode(self) -> str:
        if self.upscale_by:
            return "upscale"
        return "inpaint" if self.mask else "img2img" if self.init_image else "txt2img"


class UserSettings(models.Model):
    """A user's own defaults (A1111 clients set the checkpoint through /sdapi/v1/options)."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="studio_settings")
    default_checkpoint = models.ForeignKey(Checkpoint, null=True, blank=True, on_delete=models.SET_NULL)
    suspended_at = models.DateTimeField(null=True, blank=True, help_text="Set by staff: no more submissions")
    suspended_reason = models.TextField(blank=True)
    show_name_publicly = models.BooleanField(default=False, help_text="The user chose to be named on images they share")


class CreditAccount(models.Model):
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="credits")
    balance = models.IntegerField(default=0)
    last_topup_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} ({self.balance})"


class CreditEntry(models.Model):
    """One change of a balance. The balance always equals the sum of its account's entries."""

    GRANT, TOPUP, CHARGE, REFUND, ADJUST = "grant", "topup", "charge", "refund", "adjust"
    KINDS = [(k, k) for k in (GRANT, TOPUP, CHARGE, REFUND, ADJUST)]

    account = models.ForeignKey(CreditAccount, on_delete=models.CASCADE, related_name="entries")
    kind = models.CharField(max_length=10, choices=KINDS)
    amount = models.IntegerField()
    reason = models.CharField(max_length=200)
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="credit_entries")
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "credit entries"
        # A job is charged once and refunded at most once, whatever retries or races happen.
        constraints = [models.UniqueConstraint(fields=["job", "kind"], condition=Q(kind__in=["charge", "refund"]),
                                               name="one_charge_and_one_refund_per_job")]


class AppendOnly(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("audit rows are append-only")

    def delete(self):
        raise PermissionError("audit rows are append-only")

    def pseudonymise_user(self, user_id: int, pseudonym: str) -> int:
        """The one change allowed: a deleted account's name replaced by a stable pseudonym
        (outside the hash chain, which covers `subject` instead)."""
        return models.QuerySet.update(self.filter(user_id=user_id), username=pseudonym)

    def seal(self, pk: int, hash: str) -> int:
        """Set a new row's chain hash, once (see generation.services.audit.audit_append)."""
        return models.QuerySet.update(self.filter(pk=pk, hash=""), hash=hash)

    def prune_through(self, pk: int) -> int:
        """The one removal allowed, used by `prune_audit`: every row up to `pk`."""
        return models.QuerySet.delete(self.filter(pk__lte=pk))[1].get(self.model._meta.label, 0)


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
    search_text = models.TextField(blank=True, editable=False, help_text="The prompts' normal forms and skeletons, "
                                   "so staff find disguised spellings (not part of the hash)")

    class Meta:
        ordering = ["-created_at", "-id"]
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
    base_id = models.BigIntegerField(default=0, help_text="Rows up to this id were pruned")
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


class StaffAction(models.Model):
    """What staff did to users, credits and images. Appended, never edited."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    staff = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    staff_name = models.CharField(max_length=150)
    action = models.CharField(max_length=40)
    target = models.CharField(max_length=200)
    details = models.TextField(blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionError("staff actions are append-only")
        super().save(*args, **kwargs)
