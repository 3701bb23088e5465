"""The model registry: checkpoints, VAEs and add-ons (LoRA, embeddings, ControlNet)."""

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q

from generation.engine.families import FAMILIES
from generation.engine.request import ModelRef


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
    latent_channels = models.PositiveSmallIntegerField(default=4, help_text="4: SD 1.x, 2.x and SDXL; "
                                                                            "16: FLUX.1, SD 3.5, Z-Image")
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


def transformer_parts(checkpoint: "Checkpoint") -> tuple:
    """What a FLUX.1, SD 3.5 or Z-Image transformer file may lack ((part, path), ...; parts.load_parts):
    CLIP-L, CLIP-G (SD 3.5) and T5-XXL, or Qwen3 4B (Z-Image), the files chosen for the checkpoint in
    the admin or else the first clip_l*, clip_g*, t5xxl* (fp16 before fp8) or qwen_3_4b* of the
    text-encoder folder, and the tokenizer there (t5_tokenizer/, qwen3_tokenizer/); the VAE chosen
    as the checkpoint's default, else the first ae.safetensors (FLUX.1, Z-Image) or
    sd3*vae*.safetensors (SD 3.5) in the models folder, its VAE folder or the text-encoder folder."""
    texts, models_dir = Path(settings.SDWEB["TEXT_ENCODERS_DIR"]), Path(settings.SDWEB["MODELS_DIR"])
    vae, spec = checkpoint.default_vae, FAMILIES[checkpoint.family]

    def chosen(name: str, pattern: str):
        return texts / Path(name).name if name else next(iter(sorted(texts.glob(pattern))), None)

    vae_files = (sorted(folder.glob("sd3*vae*.safetensors" if spec.sd3 else "ae.safetensors"))
                 for folder in (models_dir, models_dir / "VAE", models_dir / "vae", texts))
    if spec.zimage:  # Qwen3 4B instead of CLIP and T5
        parts = {"text_encoder": chosen(checkpoint.t5_file, "qwen_3_4b*.safetensors"), "tokenizer": texts / "qwen3_tokenizer"}
    else:
        t5, tokenizer = ("text_encoder_3", "tokenizer_3") if spec.sd3 else ("text_encoder_2", "tokenizer_2")
        parts = {"text_encoder": chosen(checkpoint.clip_file, "clip_l*.safetensors"),
                 t5: chosen(checkpoint.t5_file, "t5xxl*.safetensors"), tokenizer: texts / "t5_tokenizer"}
    if spec.sd3:
        parts["text_encoder_2"] = chosen(checkpoint.clip_g_file, "clip_g*.safetensors")
    parts["vae"] = Path(vae.source) if vae else next((files[0] for files in vae_files if files), None)
    return tuple((part, str(path)) for part, path in parts.items() if path)


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
    clip_file = models.CharField(max_length=200, blank=True, help_text="FLUX.1 and SD 3.5 transformer files: the "
                                 "CLIP-L file in the text-encoder folder; blank: its first clip_l*.safetensors")
    clip_g_file = models.CharField(max_length=200, blank=True, help_text="SD 3.5 transformer files: the CLIP-G file in "
                                   "the text-encoder folder; blank: its first clip_g*.safetensors")
    t5_file = models.CharField(max_length=200, blank=True, help_text="FLUX.1 and SD 3.5 transformer files: the T5-XXL "
                               "file in the text-encoder folder; blank: its first t5xxl*.safetensors (fp16 before fp8). "
                               "Z-Image: its Qwen3 file; blank: the first qwen_3_4b*.safetensors")
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

    @property
    def guidance(self) -> float:
        """The CFG scale its family is made for (SD 3.5 Large Turbo: 1, no CFG)."""
        return FAMILIES[self.family].guidance if self.family in FAMILIES else 7.0

    def form_facts(self) -> dict:
        """What the generate form's script (static/generate.js) knows of it: its sizes, steps and CFG,
        and what its family takes."""
        spec = FAMILIES[self.family]
        return {"xl": self.xl or spec.transformer, "width": self.default_width, "height": self.default_height,
                "steps": self.default_steps, "family": self.family.split("-")[0], "guidance": self.guidance,
                "flux": self.family if spec.flux else "", "flow": spec.transformer}

    def model_ref(self, with_parts: bool = True) -> ModelRef:
        """What the engine loads; `with_parts=False` leaves out the files a FLUX.1 or SD 3.5 transformer
        lacks (found on disk), for questions that don't need them (the batch rule)."""
        single = self.source.lower().endswith((".safetensors", ".gguf"))
        transformer = self.family in FAMILIES and FAMILIES[self.family].transformer
        return ModelRef(self.source, family=self.family if single or transformer else "", config=self.config,
                        name=self.name, hash=self.short_hash,
                        parts=transformer_parts(self) if single and transformer and with_parts else ())


class AddOn(models.Model):
    """A LoRA, textual-inversion embedding, ControlNet or upscaler: the operator's library (files in
    the add-on folders, owner empty) or a user's own upload (private unless staff publish it)."""

    LORA, EMBEDDING, CONTROLNET, UPSCALER = "lora", "embedding", "controlnet", "upscaler"
    KINDS = [(LORA, "LoRA"), (EMBEDDING, "Embedding"), (CONTROLNET, "ControlNet"), (UPSCALER, "Upscaler")]
    BASE_FAMILIES = [("sd1", "SD 1.x"), ("sd2", "SD 2.x"), ("sdxl", "SDXL"), ("flux", "FLUX.1"), ("sd35", "SD 3.5"),
                     ("zimage", "Z-Image"), ("any", "any checkpoint")]

    kind = models.CharField(max_length=12, choices=KINDS)
    name = models.CharField(max_length=100, help_text="As prompts name it: <lora:name:1>, or the embedding's word")
    family = models.CharField(max_length=8, choices=BASE_FAMILIES, help_text="Told from the file's tensors")
    source = models.CharField(max_length=500, help_text="The .safetensors file (an upscaler: or .pth; an upload: its "
                                                        "storage name)")
    stored = models.BooleanField(default=False, help_text="An upload kept in the site's storage, not a worker's file")
    config = models.CharField(max_length=500, blank=True, help_text="A ControlNet's diffusers config folder; "
                                                                    "blank: the one shipped for its family")
    sha256 = models.CharField(max_length=64)
    file_size = models.BigIntegerField()
    file_mtime = models.FloatField(null=True, blank=True)
    trigger_words = models.CharField(max_length=500, blank=True, help_text="From the file's training tags")
    scale = models.PositiveSmallIntegerField(default=0, help_text="An upscaler's factor (read from its layers)")
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
