from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gallery.models import Image
from generation.credits.models import CreditEntry
from generation.engine.request import HIRES_PARAMS, IMAGE_INPUT_PARAMS, MAX_PROMPT_CHARS, MAX_SEED, MAX_STEPS
from generation.engine.schedulers import SCHEDULERS
from generation.jobs.models import Job
from generation.jobs.presenters import job_images
from generation.jobs.selectors import queue_waits
from generation.library.models import AddOn, Checkpoint, Vae


@extend_schema_field({"type": "string", "format": "binary"})
class ImageInputField(serializers.Field):
    """A multipart file upload (PNG, JPEG or WebP), or the 16-hex-digit id of an image of yours or
    a public one; decoding and every check happen in submit, so a refusal is audited."""

    def to_internal_value(self, data):
        if isinstance(data, UploadedFile):
            if data.size > settings.SDWEB["UPLOAD_MAX_BYTES"]:
                raise serializers.ValidationError(f"At most {settings.SDWEB['UPLOAD_MAX_BYTES'] // 2**20} MB.")
            return data.read()
        if isinstance(data, str) and len(data) == 16:
            try:
                image = Image.objects.filter(pk=int(data, 16)).first()
            except ValueError:
                image = None
            if image is not None:
                return image
        # The same words as submit's for another user's private image: an id's existence isn't told.
        raise serializers.ValidationError("Upload a PNG, JPEG or WebP file, or give the id of an image of yours "
                                          "(or a public one).")

    def to_representation(self, value):
        return None


class ControlUnitSerializer(serializers.Serializer):
    """One ControlNet unit, as the sd-webui-controlnet extension's API shapes one."""

    image = serializers.CharField(help_text="The control image: base64 (PNG, JPEG or WebP; a data: URL is fine) or "
                                  "the 16-hex-digit id of an image of yours or a public one.")
    model = serializers.CharField(help_text="A ControlNet's name (GET /api/v1/addons/?kind=controlnet).")
    module = serializers.CharField(default="none", help_text="Preprocessor: none, canny, lineart_standard, invert.")
    weight = serializers.FloatField(default=1.0, help_text="0-2.")
    guidance_start = serializers.FloatField(default=0.0, help_text="The fraction of the steps where it starts.")
    guidance_end = serializers.FloatField(default=1.0, help_text="The fraction of the steps where it stops.")
    control_mode = serializers.JSONField(default=0, help_text="0 Balanced, 1 My prompt is more important, "
                                         "2 ControlNet is more important (or the label).")
    resize_mode = serializers.JSONField(default=1, help_text="0 just resize, 1 crop and resize, 2 resize and fill.")
    processor_res = serializers.IntegerField(default=512, help_text="The preprocessor's resolution (short side).")
    threshold_a = serializers.FloatField(default=-1, help_text="canny: low threshold (-1: 100).")
    threshold_b = serializers.FloatField(default=-1, help_text="canny: high threshold (-1: 200).")

    def validate_image(self, value):
        from generation.untrusted_images import decode_base64

        if len(value) == 16 and all(c in "0123456789abcdef" for c in value):
            image = Image.objects.filter(pk=int(value, 16)).first()
            if image is not None:
                return image
        try:
            return decode_base64(value, field="image")
        except ValueError as error:
            raise serializers.ValidationError(str(error).partition(": ")[2]) from None


class JobCreateSerializer(serializers.Serializer):
    prompt = serializers.CharField(max_length=MAX_PROMPT_CHARS,
                                   help_text="What to draw. A1111 syntax: (word:1.3), [word], BREAK.")
    negative_prompt = serializers.CharField(max_length=MAX_PROMPT_CHARS, required=False, allow_blank=True, default="",
                                            help_text="What to keep out of the image.")
    subseed = serializers.IntegerField(default=-1, help_text="Variation seed: -1 picks one at random.")
    subseed_strength = serializers.FloatField(default=0.0, help_text="How far the starting noise moves toward the "
                                              "variation seed's (0-1); 0 is off.")
    styles = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=20,
                                   help_text="Names of your saved styles, applied in order (as A1111's styles).")
    checkpoint = serializers.CharField(required=False, help_text="A checkpoint name; the default one if left out.")
    team = serializers.CharField(required=False, max_length=100, help_text="The slug of a team of yours whose pool pays "
                                 "and whose gallery keeps the images, or \"own\" for your own credits; left out: "
                                 "the one chosen on the Teams page.")
    width = serializers.IntegerField(required=False, help_text="Pixels; a multiple of 8 (FLUX.1: 16), at least 256. "
                                     "Default: the checkpoint's own size (1024 for SDXL).")
    height = serializers.IntegerField(required=False, help_text="Pixels; a multiple of 8 (FLUX.1, SD 3.5: 16), at least 256. "
                                      "Default: the checkpoint's own size.")
    steps = serializers.IntegerField(required=False, min_value=1, max_value=MAX_STEPS, help_text="Denoising steps. "
                                     "Default: the checkpoint's suggested number (20; FLUX.1: 28, [schnell]: 4; "
                                     "SD 3.5 Large: 28, Medium: 40, Large Turbo: 4).")
    guidance_scale = serializers.FloatField(required=False, min_value=0, max_value=30, help_text="How closely to "
                                            "follow the prompt (CFG scale). Default: the checkpoint family's (7; SD 3.5 "
                                            "Large: 3.5, Medium: 4.5, Large Turbo: 1).")
    distilled_guidance_scale = serializers.FloatField(
        default=3.5, min_value=0, max_value=30, help_text="FLUX.1 [dev] only: its guidance (Forge's Distilled CFG "
        "Scale); FLUX.1 runs no CFG, so guidance_scale is not used for it.")
    scheduler = serializers.ChoiceField(choices=list(SCHEDULERS), default="Euler a", help_text="The sampler.")
    seed = serializers.IntegerField(default=-1, min_value=-1, max_value=MAX_SEED,
                                    help_text="-1 picks a random seed; image k gets seed + k.")
    num_images = serializers.IntegerField(default=1, min_value=1, help_text="Images (variants) in this job.")
    clip_skip = serializers.IntegerField(default=1, min_value=1, max_value=12,
                                         help_text="Stop CLIP this many layers from the end (SD 1.x; A1111's clip skip).")
    refiner = serializers.CharField(required=False, allow_blank=True,
                                    help_text="SDXL only: the name of a refiner checkpoint that finishes the image.")
    refiner_switch_at = serializers.FloatField(default=0.8, min_value=0.01, max_value=0.99,
                                               help_text="The fraction of the steps after which the refiner takes over.")
    vae = serializers.CharField(required=False, allow_blank=True,
                                help_text="A VAE's name (GET /api/v1/vaes/); default: the checkpoint's own or default VAE.")
    init_image = ImageInputField(required=False, help_text="img2img: the starting image (multipart upload or an "
                                 "image id). width/height default to its size.")
    mask = ImageInputField(required=False, help_text="Inpainting: white where the starting image is repainted; "
                           "its size must be the starting image's.")
    denoising_strength = serializers.FloatField(default=0.75, help_text="img2img/inpaint, and hires fix's second "
                                                "pass: how much changes (0-1); steps x strength steps are run.")
    resize_mode = serializers.IntegerField(default=0, help_text="0 just resize, 1 crop and resize, 2 resize and fill.")
    mask_blur = serializers.IntegerField(default=4, help_text="Pixels of blur at the mask's edge.")
    inpainting_fill = serializers.IntegerField(default=1, help_text="Masked content: 0 fill, 1 original, "
                                               "2 latent noise, 3 latent nothing.")
    inpaint_full_res = serializers.BooleanField(default=False, help_text="Only masked: repaint the mask's box at "
                                                "width x height and paste it back.")
    inpaint_full_res_padding = serializers.IntegerField(default=32, help_text="Pixels around the mask's box.")
    inpainting_mask_invert = serializers.BooleanField(default=False, help_text="Repaint what is not masked.")
    enable_hr = serializers.BooleanField(default=False, help_text="Hires fix: a second pass at a larger size.")
    hr_scale = serializers.FloatField(default=2.0, help_text="Hires fix: the factor (1-4).")
    hr_upscaler = serializers.CharField(default="Latent", help_text="Hires fix: Latent (and its variants), Lanczos, "
                                        "Nearest or an upscaler model's name (GET /sdapi/v1/upscalers).")
    hr_second_pass_steps = serializers.IntegerField(default=0, help_text="Hires fix: steps; 0 = as the first pass.")
    hr_resize_x = serializers.IntegerField(default=0, help_text="Hires fix: a width instead of hr_scale.")
    hr_resize_y = serializers.IntegerField(default=0, help_text="Hires fix: a height instead of hr_scale.")
    controlnet = ControlUnitSerializer(many=True, required=False, help_text="ControlNet units (JSON bodies). LoRAs "
                                       "go in the prompt as <lora:name:weight>; an embedding works where its name is "
                                       "a word of a prompt.")
    plot = serializers.JSONField(required=False, help_text="An X/Y/Z plot (A1111's): {\"x\": {\"type\": \"Steps\", "
                                 "\"values\": \"10, 20\"}, \"y\": …, \"z\": …}; one image per cell and a labelled "
                                 "grid (the last image), charged per cell.")

    def validate_num_images(self, value):
        if value > settings.SDWEB["MAX_IMAGES"]:
            raise serializers.ValidationError(f"At most {settings.SDWEB['MAX_IMAGES']} images per job.")
        return value

    def validate_checkpoint(self, name):
        checkpoint = Checkpoint.objects.enabled_named(name)
        if checkpoint is None:
            raise serializers.ValidationError(f"No enabled checkpoint is called {name!r}; GET /api/v1/checkpoints/.")
        return checkpoint


class ImageSummarySerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The image's id (16 hex digits), also its watermark payload.")
    seed = serializers.IntegerField(help_text="The seed that made it.")
    url = serializers.CharField(help_text="The original PNG (GET it with your API key).")
    thumbnail = serializers.CharField(help_text="A small WebP.")
    page = serializers.CharField(help_text="The image's page in the studio.")


class JobSerializer(serializers.ModelSerializer):
    checkpoint = serializers.CharField(source="checkpoint.name", help_text="The checkpoint used.")
    refiner = serializers.CharField(source="refiner.name", default=None, allow_null=True,
                                    help_text="The SDXL refiner used, if any.")
    vae = serializers.CharField(source="vae.name", default=None, allow_null=True,
                                help_text="The VAE file that decoded the images; null: the checkpoint's own.")
    images = serializers.SerializerMethodField(help_text="The stored images, once the job succeeded.")
    queue_position = serializers.SerializerMethodField(help_text="Queued jobs ahead of this one in the fair order, "
                                                       "while queued.")
    queue_eta = serializers.SerializerMethodField(help_text="Seconds until it should start, while queued (null until "
                                                  "jobs have finished to measure by).")
    mode = serializers.CharField(read_only=True, help_text="txt2img, img2img or inpaint.")
    team = serializers.CharField(source="team.slug", default=None, allow_null=True,
                                 help_text="The team whose pool paid and whose gallery keeps the images; null: yours.")
    init_image_id = serializers.SerializerMethodField(help_text="The image of yours it started from, if one did.")
    addons = serializers.SerializerMethodField(help_text="The LoRAs, embeddings and ControlNet units it used: kind, "
                                               "name, sha256 and settings.")
    plot = serializers.SerializerMethodField(help_text="An X/Y/Z plot's axes (axis, type, values); images are its "
                                             "cells, x fastest, then the grid.")

    class Meta:
        model = Job
        fields = ["id", "status", "prompt", "negative_prompt", "checkpoint", "width", "height", "steps",
                  "guidance_scale", "distilled_guidance_scale", "scheduler", "seed", "subseed", "subseed_strength",
                  "num_images", "clip_skip", "refiner", "refiner_switch_at", "vae", "mode", "team", *IMAGE_INPUT_PARAMS,
                  "init_image_sha256", "init_image_id", "mask_sha256", *HIRES_PARAMS, "addons", "plot", "cost",
                  "created_at", "started_at", "finished_at", "attempts", "progress_step", "progress_total",
                  "queue_position", "queue_eta", "error", "timings", "batch_size", "images"]
        extra_kwargs = {
            "id": {"help_text": "The job's id."},
            "prompt": {"help_text": "What was asked for."},
            "negative_prompt": {"help_text": "What was kept out."},
            "width": {"help_text": "Pixels."},
            "height": {"help_text": "Pixels."},
            "steps": {"help_text": "Denoising steps."},
            "guidance_scale": {"help_text": "CFG scale."},
            "distilled_guidance_scale": {"help_text": "FLUX.1 [dev]'s guidance (Distilled CFG Scale)."},
            "scheduler": {"help_text": "The sampler, by its A1111 name."},
            "seed": {"help_text": "The first image's seed; image k has seed + k."},
            "subseed": {"help_text": "The variation seed; image k's is subseed + k (-1: none)."},
            "subseed_strength": {"help_text": "How far the starting noise moved toward the variation seed's."},
            "num_images": {"help_text": "Images in the job."},
            "created_at": {"help_text": "When it was submitted."},
            "started_at": {"help_text": "When a worker last started it."},
            "finished_at": {"help_text": "When it ended."},
            "batch_size": {"help_text": "How many jobs (its own and other users') were denoised with it in one run.",
                           "read_only": True},
            "attempts": {"help_text": "Times a worker started it (a worker that died counts)."},
            "status": {"help_text": "queued, running, succeeded, failed or cancelled."},
            "cost": {"help_text": "Credits charged (refunded if it failed or was cancelled)."},
            "progress_step": {"help_text": "Denoising steps done."},
            "progress_total": {"help_text": "Denoising steps in all."},
            "timings": {"help_text": "Seconds per stage in the engine: load, text_encode, denoise, decode, safety, total."},
            "error": {"help_text": "Why it failed, when it did."},
            "init_image_sha256": {"help_text": "SHA-256 of the starting image as received."},
            "mask_sha256": {"help_text": "SHA-256 of the mask as received."},
            **{f: {"help_text": JobCreateSerializer().fields[f].help_text} for f in (*IMAGE_INPUT_PARAMS, *HIRES_PARAMS)},
        }

    def get_addons(self, job) -> list[dict]:
        return [{k: v for k, v in addon.items() if k != "image"} for addon in job.addons]  # not a storage name

    def get_plot(self, job) -> list[dict]:
        return job.plot.get("axes", [])

    def get_init_image_id(self, job) -> str | None:
        return f"{job.init_image_id:016x}" if job.init_image_id else None

    @extend_schema_field(ImageSummarySerializer(many=True))
    def get_images(self, job):
        return job_images(job, api_request=self.context["request"])

    def get_queue_position(self, job) -> int | None:
        return self._wait(job).get("queued_ahead") if job.status == Job.QUEUED else None

    def get_queue_eta(self, job) -> float | None:
        return self._wait(job).get("eta") if job.status == Job.QUEUED else None

    def _wait(self, job) -> dict:
        """The job's place in the queue, from one look at the whole queue per response (a list's
        jobs share it)."""
        if "queue_waits" not in self.context:
            self.context["queue_waits"] = queue_waits()
        return self.context["queue_waits"].get(job.pk, {"queued_ahead": 0, "eta": 0.0})


class CheckpointSerializer(serializers.ModelSerializer):
    hash = serializers.CharField(source="short_hash", help_text="A1111's short hash: the first 10 digits of sha256.")

    class Meta:
        model = Checkpoint
        fields = ["name", "family", "hash", "sha256", "default_width", "default_height", "default_steps", "is_default",
                  "is_test_model"]
        extra_kwargs = {
            "name": {"help_text": "Use this name as `checkpoint` when submitting."},
            "family": {"help_text": "sd1, sd1-inpaint, sd2, sd2-v, sdxl, sdxl-inpaint or sdxl-refiner."},
            "sha256": {"help_text": "SHA-256 of the checkpoint file (of a diffusers folder: its UNet weights)."},
            "default_width": {"help_text": "The size it was trained at, pixels."},
            "default_height": {"help_text": "The size it was trained at, pixels."},
            "default_steps": {"help_text": "Suggested denoising steps."},
            "is_default": {"help_text": "Used when a request names no checkpoint."},
            "is_test_model": {"help_text": "The built-in random-weight model: its images are noise."},
        }


class AddOnSerializer(serializers.ModelSerializer):
    hash = serializers.CharField(source="short_hash", help_text="A1111's short hash (12 digits; ControlNet: 8).")
    yours = serializers.SerializerMethodField(help_text="Your own upload.")

    class Meta:
        model = AddOn
        fields = ["kind", "name", "family", "hash", "sha256", "trigger_words", "yours"]
        extra_kwargs = {"name": {"help_text": "<lora:name:weight> in a prompt, an embedding's word, or a ControlNet "
                                              "unit's model."},
                        "family": {"help_text": "sd1, sd2 or sdxl: it works with checkpoints of that family."}}

    def get_yours(self, addon) -> bool:
        return addon.owner_id is not None and addon.owner_id == self.context["request"].user.pk


class VaeSerializer(serializers.ModelSerializer):
    hash = serializers.SerializerMethodField(help_text="A1111's short hash: the first 10 digits of sha256.")

    class Meta:
        model = Vae
        fields = ["name", "hash", "sha256"]
        extra_kwargs = {"name": {"help_text": "Use this name as `vae` when submitting."},
                        "sha256": {"help_text": "SHA-256 of the file."}}

    def get_hash(self, vae) -> str:
        return vae.sha256[:10]


class CreditEntrySerializer(serializers.ModelSerializer):
    job = serializers.UUIDField(source="job_id", allow_null=True, help_text="The job it was for, if any.")

    class Meta:
        model = CreditEntry
        fields = ["created_at", "kind", "amount", "reason", "job"]
        extra_kwargs = {
            "created_at": {"help_text": "When the balance changed."},
            "kind": {"help_text": "grant, topup, charge, refund or adjust."},
            "amount": {"help_text": "Credits added (negative: taken)."},
            "reason": {"help_text": "Why."},
        }


class QuoteSerializer(serializers.Serializer):
    width = serializers.IntegerField(min_value=1, max_value=100_000, help_text="Pixels.")
    height = serializers.IntegerField(min_value=1, max_value=100_000, help_text="Pixels.")
    steps = serializers.IntegerField(min_value=1, max_value=MAX_STEPS, help_text="Denoising steps.")
    num_images = serializers.IntegerField(min_value=1, max_value=100, help_text="Images in the job.")
    from_image = serializers.BooleanField(default=False, help_text="img2img or inpaint: steps x strength are run.")
    denoising_strength = serializers.FloatField(default=0.75, min_value=0, max_value=1,
                                                help_text="img2img, inpaint and hires fix's second pass.")
    enable_hr = serializers.BooleanField(default=False, help_text="Hires fix: a second pass at a larger size.")
    hr_scale = serializers.FloatField(default=2.0, min_value=1, max_value=4, help_text="Hires fix: the factor.")
    hr_second_pass_steps = serializers.IntegerField(default=0, min_value=0, max_value=MAX_STEPS,
                                                    help_text="Hires fix: steps; 0 = as the first pass.")
    hr_resize_x = serializers.IntegerField(default=0, min_value=0, help_text="Hires fix: a width instead of hr_scale.")
    hr_resize_y = serializers.IntegerField(default=0, min_value=0, help_text="Hires fix: a height instead of hr_scale.")
    controlnet_units = serializers.IntegerField(default=0, min_value=0, max_value=10,
                                                help_text="ControlNet units: each adds half of every step's work.")
