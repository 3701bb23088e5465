"""A job (what was asked, how it went) and a user's saved styles."""

import copy
import uuid
from functools import cached_property

from django.conf import settings
from django.db import models
from django.db.models import Q

from generation.credits.models import CreditEntry
from generation.engine.request import (
    IMAGE_INPUT_PARAMS,
    MASKED_CONTENT,
    RESIZE_MODES,
    SETTINGS,
    GenerationRequest,
    LoraUse,
    ModelRef,
    batch_key,
)
from generation.library.models import Checkpoint, Vae


class Job(models.Model):
    QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"
    STATUSES = [(s, s) for s in (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)]
    ACTIVE = (QUEUED, RUNNING)
    PARAMS = SETTINGS

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs")
    team = models.ForeignKey("generation.Team", null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs",
                             help_text="Paid from this team's pool; its images are the team's")
    checkpoint = models.ForeignKey(Checkpoint, on_delete=models.PROTECT)
    prompt = models.TextField()
    negative_prompt = models.TextField(blank=True)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    steps = models.PositiveIntegerField()
    guidance_scale = models.FloatField()
    distilled_guidance_scale = models.FloatField(default=3.5, help_text="FLUX.1 [dev]'s guidance (it runs no CFG)")
    scheduler = models.CharField(max_length=40)
    seed = models.BigIntegerField(help_text="The first image's seed; image k has seed + k")
    subseed = models.BigIntegerField(default=-1, help_text="Variation seed (A1111's): image k's is subseed + k")
    subseed_strength = models.FloatField(default=0.0, help_text="How far the starting noise moves toward it")
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
    plot = models.JSONField(default=dict, blank=True, help_text="An X/Y/Z plot: its axes, and each cell's settings "
                            "where they differ from the job's (image k is cell k; the last, the grid)")
    image_ids = models.JSONField(help_text="Identifiers allocated at submit; also the watermark payloads")
    cost = models.PositiveIntegerField()
    storage_bound = models.PositiveBigIntegerField(default=0, help_text="Bytes its images may take at the most: held "
                                                   "against its owner's storage quota while it is queued or running")

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
    batch_size = models.PositiveSmallIntegerField(default=1, help_text="Jobs denoised together in its run")
    error = models.TextField(blank=True, help_text="What its owner is told, in one plain sentence")
    error_detail = models.TextField(blank=True, help_text="For staff only: the exception that ended it")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    request_digest = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "created_at"]),  # the image page's upscales of it:
                   models.Index(fields=["init_image_id"], condition=Q(init_image_id__isnull=False),
                                name="job_from_image")]
        constraints = [models.UniqueConstraint(fields=["user", "idempotency_key"],
                                               condition=Q(idempotency_key__isnull=False), name="one_job_per_idempotency_key")]

    def __str__(self):
        return f"{self.id} ({self.status})"

    @property
    def is_active(self):
        return self.status in self.ACTIVE

    def params(self) -> dict:
        return {f: getattr(self, f) for f in self.PARAMS}

    def as_made(self, index: int) -> "Job":
        """The job as its image `index` was made: an X/Y/Z plot's cell with the cell's own settings."""
        cells = self.plot.get("cells", []) if self.plot else []
        if index >= len(cells):
            return self
        made = copy.copy(self)
        made._state = copy.copy(self._state)
        made._state.fields_cache = {}
        for field, value in {**cells[index]["params"], "checkpoint_id": cells[index]["checkpoint"],
                             "vae_id": cells[index]["vae"], "refiner_id": cells[index]["refiner"]}.items():
            setattr(made, field, value)
        return made

    @property
    def plot_cells(self) -> list[tuple[int, str]]:
        """An X/Y/Z plot's (image id, label) for each cell, x fastest."""
        return [(image_id, cell["label"]) for image_id, cell in zip(self.image_ids, self.plot.get("cells", []))]

    @property
    def charged_images(self) -> int:
        """The images it was charged for: an X/Y/Z plot's grid is free."""
        return len(self.plot["cells"]) if self.plot else self.num_images

    @property
    def refunded(self) -> int:
        """Credits given back for it (a failed or cancelled job: all; withheld images: their share),
        as it ends: none while it is queued or running (not asked of the database)."""
        if self.status in self.ACTIVE:
            return 0
        return sum(e.amount for e in self.credit_entries.all() if e.kind == CreditEntry.REFUND)

    @property
    def init_image_hex(self) -> str:
        return f"{self.init_image_id:016x}" if self.init_image_id else ""

    @cached_property
    def batch_key(self) -> tuple | None:
        """What jobs must share to be denoised in one run: the engine's own rule (request.batch_key),
        asked with the job's settings and files (once per loaded row: the claim and the queue's
        forecast compare it many times)."""
        if self.mode != "txt2img" or self.plot:
            return None
        loras = tuple(LoraUse(ModelRef("", hash=a["sha256"][:12]), a["unet"], a["te"]) for a in self.addons
                      if a["kind"] == "lora")
        units = tuple(a for a in self.addons if a["kind"] == "controlnet")
        return batch_key(GenerationRequest(
            model=self.checkpoint.model_ref(with_parts=False), vae=self.vae and self.vae.model_ref(),
            refiner=self.refiner_id and "refiner",
            loras=loras, controlnets=units, **{f: getattr(self, f) for f in self.PARAMS if f not in IMAGE_INPUT_PARAMS}))

    @property
    def mode(self) -> str:
        if self.upscale_by:
            return "upscale"
        return "inpaint" if self.mask else "img2img" if self.init_image else "txt2img"


class PromptStyle(models.Model):
    """A user's saved prompt fragments (A1111's styles): "{prompt}" in them marks where the prompt
    goes; without it they are added after the prompt."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prompt_styles")
    name = models.CharField(max_length=100)
    prompt = models.TextField(blank=True, max_length=2000)
    negative_prompt = models.TextField(blank=True, max_length=2000)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["owner", "name"], name="one_style_per_name")]

    def __str__(self):
        return self.name
