"""What a caller asks for, and the checks that turn bad input into a message a user can act on."""

import random
import re
from dataclasses import dataclass

from .prompts import LORA_TAG, check_prompt_syntax, has_schedule, lora_tags
from .schedulers import scheduler_spec


class JobError(ValueError):
    """A job's own failure said for its owner in one plain sentence: no library's text, no server
    path. What caused it is chained to it, for the log and staff."""


MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 4000
MAX_PROMPT_CHUNKS = 20  # BREAK-separated parts of one prompt; A1111's regional prompts use a handful
MAX_STEPS = 150  # no deployment may allow more
MIN_SIDE = 256  # the watermark needs at least this
RESIZE_MODES = ("Just resize", "Crop and resize", "Resize and fill")  # A1111's resize_mode 0, 1, 2
MASKED_CONTENT = ("fill", "original", "latent noise", "latent nothing")  # A1111's inpainting_fill 0-3
IMAGE_INPUT_PARAMS = ("denoising_strength", "resize_mode", "mask_blur", "inpainting_fill", "inpaint_full_res",
                      "inpaint_full_res_padding", "inpainting_mask_invert")
HIRES_PARAMS = ("enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y")
# What a submission asks for, by the names every dialect uses (GenerationRequest's fields, less the models,
# the add-ons and the pictures; the image input settings as A1111 names them)
SETTINGS = ("prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "distilled_guidance_scale",
            "scheduler", "seed", "subseed", "subseed_strength", "num_images", "clip_skip", "refiner_switch_at",
            *IMAGE_INPUT_PARAMS, *HIRES_PARAMS)
LATENT_UPSCALERS = {  # A1111's hires upscaler names -> torch interpolate (mode, antialias)
    "Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True), "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True), "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
PIXEL_UPSCALERS = {"Lanczos": 1, "Nearest": 0}  # PIL resampling filters: LANCZOS, NEAREST


@dataclass(frozen=True)
class Limits:
    """Upper bounds a deployment chooses (the studio reads them from its settings)."""

    max_side: int = 1024
    max_images: int = 4
    max_steps: int = MAX_STEPS

    def __post_init__(self):
        if not 1 <= self.max_steps <= MAX_STEPS:
            raise ValueError(f"max_steps must be from 1 to {MAX_STEPS} (got {self.max_steps})")


@dataclass(frozen=True)
class ModelRef:
    """A model to load: a diffusers folder, a Hugging Face id, or one .safetensors file."""

    source: str
    family: str = ""  # a single file's family (families.FAMILIES); "" = told from its tensor names
    config: str = ""  # a single file's diffusers config folder; "" = the one shipped for its family
    name: str = ""  # as PNG parameters name it; "" = from the source
    hash: str = ""  # A1111's short hash; "" = computed when loaded
    parts: tuple = ()  # ((part, path), ...): the files of what a FLUX file lacks (flux.load_flux)


@dataclass(frozen=True)
class LoraUse:
    """One `<lora:name:unet:te>` of a prompt: the file, and its weights on the UNet and text encoders."""

    ref: ModelRef
    unet: float = 1.0
    te: float = 1.0


CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")


@dataclass(frozen=True)
class ControlUnit:
    """One ControlNet unit, as the sd-webui-controlnet extension's API shapes one."""

    model: ModelRef
    image: object  # PIL.Image.Image: the picture `module` turns into the control map
    module: str = "none"
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: int = 0  # CONTROL_MODES
    resize_mode: int = 1  # RESIZE_MODES, the extension's default: crop and resize
    processor_res: int = 512
    threshold_a: float = -1  # -1: the module's default
    threshold_b: float = -1


def model_ref(model) -> ModelRef:
    return model if isinstance(model, ModelRef) else ModelRef(str(model))


def batch_key(request: "GenerationRequest") -> tuple | None:
    """What requests must share to be denoised in one run, or None for one that runs alone: only a
    plain txt2img with guidance on batches (hires fix, a refiner and ControlNet run passes of their
    own). Files are compared by content (their hash), never by the name a user gave them: two
    users' copies of one LoRA are one file. Prompts, negative prompts, seeds, CFG scale,
    embeddings and the image count may differ. The claim (Job.batch_key) and the engine both ask
    this one function."""
    family = model_ref(request.model).family
    flux, zimage = family.startswith("flux"), family.startswith("zimage")
    if (request.mode != "txt2img" or request.enable_hr or request.refiner or request.controlnets
            or (request.guidance_scale <= 1 and not (flux or zimage)) or request.subseed_strength or request.scheduled):
        return None
    # FLUX.1 runs no CFG, one distilled guidance for the run; Z-Image's pipeline takes one CFG scale
    shared = request.distilled_guidance_scale if flux else request.guidance_scale if zimage else request.clip_skip
    return (_file(request.model), request.vae and _file(request.vae), request.width, request.height, request.steps,
            scheduler_spec(request.scheduler).name, shared, tuple((_file(use.ref), use.unet, use.te) for use in request.loras))


def _counted(seed: int, count: int) -> list[int]:
    first = random.SystemRandom().randint(0, MAX_SEED) if seed == -1 else seed
    return [first + k for k in range(count)]


def _file(ref) -> str:
    ref = model_ref(ref)
    return ref.hash or ref.source


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str | ModelRef
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance_scale: float = 7.0
    distilled_guidance_scale: float = 3.5  # FLUX.1 [dev]'s guidance, learnt into the model (it runs no CFG)
    scheduler: str = "Euler a"
    seed: int = -1
    subseed: int = -1  # A1111's variation seed: the starting noise moved toward this seed's...
    subseed_strength: float = 0.0  # ...this far (0: not at all, 1: all the way)
    num_images: int = 1
    clip_skip: int = 1  # 1-12, as A1111's CLIP_stop_at_last_layers
    refiner: str | ModelRef | None = None  # an SDXL refiner takes over at refiner_switch_at
    vae: str | ModelRef | None = None  # a VAE file that decodes instead of the checkpoint's own
    refiner_switch_at: float = 0.8
    # img2img starts from init_image (RGB, any size: resized to width x height by resize_mode);
    # inpainting repaints where mask (L, same size as init_image) is white.
    init_image: object = None  # PIL.Image.Image
    mask: object = None  # PIL.Image.Image
    denoising_strength: float = 0.75  # img2img and inpaint; with hires fix, its second pass
    resize_mode: int = 0
    mask_blur: int = 4
    inpainting_fill: int = 1
    inpaint_full_res: bool = False  # "only masked": work on the mask's box at width x height, paste back
    inpaint_full_res_padding: int = 32
    inpainting_mask_invert: bool = False
    # Hires fix (txt2img): a second img2img pass at hr_scale (or hr_resize_x/y) with hr_upscaler.
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_upscaler: str = "Latent"  # or upscaler_model's name
    upscaler_model: ModelRef | None = None  # an ESRGAN-family file (esrgan.py)
    hr_second_pass_steps: int = 0  # 0: as many as the first pass
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    # Add-ons for this run only. An embedding is used where its name is a word of either prompt.
    loras: tuple[LoraUse, ...] = ()
    embeddings: tuple[ModelRef, ...] = ()
    controlnets: tuple[ControlUnit, ...] = ()

    @property
    def scheduled(self) -> bool:
        """Whether a prompt uses prompt editing or alternation."""
        return has_schedule(self.prompt) or has_schedule(self.negative_prompt)

    @property
    def mode(self) -> str:
        return "inpaint" if self.mask is not None else "img2img" if self.init_image is not None else "txt2img"

    def hires_size(self) -> tuple[int, int]:
        """The second pass's size, as A1111 works it out: resize_x/y if given (one of them keeps
        the aspect ratio), else the first pass's size times hr_scale; multiples of 8."""
        x, y = self.hr_resize_x, self.hr_resize_y
        if not x and not y:
            x, y = self.width * self.hr_scale, self.height * self.hr_scale
        elif not y:
            y = x * self.height / self.width
        elif not x:
            x = y * self.width / self.height
        return int(x) // 8 * 8, int(y) // 8 * 8

    def passes(self, from_image: bool | None = None) -> list[tuple[int, int, int]]:
        """(width, height, steps actually run) of each denoising pass: what a job costs.
        `from_image` quotes img2img before there is an image."""
        if self.mode != "txt2img" if from_image is None else from_image:
            return [(self.width, self.height, int(self.steps * self.denoising_strength))]
        if not self.enable_hr:
            return [(self.width, self.height, self.steps)]
        second = self.hr_second_pass_steps or self.steps
        return [(self.width, self.height, self.steps), (*self.hires_size(), int(second * self.denoising_strength))]

    def validate(self, limits: Limits | None = None) -> None:
        """Raise ValueError naming the field and what is allowed; return None when all is well."""
        limits = limits or Limits()
        for field in ("prompt", "negative_prompt"):
            text = getattr(self, field)
            if not isinstance(text, str):
                raise ValueError(f"{field} must be text")
            if "\x00" in text:
                raise ValueError(f"{field} must not contain the NUL character")
            if surrogate := next((c for c in text if "\ud800" <= c <= "\udfff"), None):
                raise ValueError(f"{field} is not valid Unicode: it holds a lone surrogate U+{ord(surrogate):04X}")
            if len(text) > MAX_PROMPT_CHARS:
                raise ValueError(f"{field} is {len(text)} characters long; at most {MAX_PROMPT_CHARS} are allowed")
            # Each part is encoded and attended to on its own: hundreds of them made a 1-credit job
            # cost three times the time of a short one.
            if (parts := len(re.findall(r"\bBREAK\b", text)) + 1) > MAX_PROMPT_CHUNKS:
                raise ValueError(f"{field} has {parts} parts separated by BREAK; at most {MAX_PROMPT_CHUNKS} are allowed")
            check_prompt_syntax(text, field=field)
        if not self.prompt.strip():
            raise ValueError("prompt is empty: describe the image you want")
        if not self.model:
            raise ValueError("model is required: a diffusers folder, a .safetensors file or a Hugging Face model id")
        for field in ("width", "height"):
            value = getattr(self, field)
            if not _is_int(value):
                raise ValueError(f"{field} must be a whole number of pixels")
            if value % 8:
                raise ValueError(f"{field} must be a multiple of 8 (got {value})")
            if not MIN_SIDE <= value <= limits.max_side:
                raise ValueError(f"{field} must be between {MIN_SIDE} and {limits.max_side} pixels (got {value})")
        if not _is_int(self.steps) or not 1 <= self.steps <= limits.max_steps:
            raise ValueError(f"steps must be a whole number from 1 to {limits.max_steps} (got {self.steps!r})")
        for field in ("guidance_scale", "distilled_guidance_scale"):
            value = getattr(self, field)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 30:
                raise ValueError(f"{field} must be a number from 0 to 30 (got {value!r})")
        if not _is_int(self.num_images) or not 1 <= self.num_images <= limits.max_images:
            raise ValueError(f"num_images must be from 1 to {limits.max_images} (got {self.num_images!r})")
        if not _is_int(self.seed) or not -1 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be -1 (random) or a whole number from 0 to {MAX_SEED} (got {self.seed!r})")
        if not _is_int(self.subseed) or not -1 <= self.subseed <= MAX_SEED:
            raise ValueError(f"subseed must be -1 (random) or a whole number from 0 to {MAX_SEED} (got {self.subseed!r})")
        if not isinstance(self.subseed_strength, (int, float)) or isinstance(self.subseed_strength, bool) or not (
                0 <= self.subseed_strength <= 1):
            raise ValueError(f"subseed_strength must be a number from 0 to 1 (got {self.subseed_strength!r})")
        if self.scheduled and (self.controlnets or self.refiner):
            raise ValueError("prompt editing [from:to:when] and alternation [a|b] work without ControlNet or a "
                             "refiner, for now")
        if self.subseed_strength and (self.mode != "txt2img" or self.controlnets):
            raise ValueError("subseed_strength works on images made from text without ControlNet, for now")
        if not _is_int(self.clip_skip) or not 1 <= self.clip_skip <= 12:
            raise ValueError(f"clip_skip must be a whole number from 1 to 12 (got {self.clip_skip!r})")
        if (not isinstance(self.refiner_switch_at, (int, float)) or isinstance(self.refiner_switch_at, bool)
                or not 0 < self.refiner_switch_at < 1):
            raise ValueError(f"refiner_switch_at must be a number between 0 and 1 (got {self.refiner_switch_at!r})")
        scheduler_spec(self.scheduler)
        self._validate_kept(limits)
        if self.mode != "txt2img" or self.enable_hr:
            self._validate_second_pass(limits)
        if self.mode != "txt2img":
            self._validate_image_input()
        if self.enable_hr:
            self._validate_hires(limits)
        self._validate_addons()

    def _validate_kept(self, limits: Limits) -> None:
        """The choices and sizes of the image input and hires settings, even where this run doesn't
        use them: the job keeps them, and shows them."""
        for field, allowed in (("resize_mode", RESIZE_MODES), ("inpainting_fill", MASKED_CONTENT)):
            value = getattr(self, field)
            if not _is_int(value) or not 0 <= value < len(allowed):
                raise ValueError(f"{field} must be one of " + ", ".join(f"{k} ({name})" for k, name in enumerate(allowed))
                                 + f" (got {value!r})")
        for field, top in (("mask_blur", 64), ("inpaint_full_res_padding", 256)):
            value = getattr(self, field)
            if not _is_int(value) or not 0 <= value <= top:
                raise ValueError(f"{field} must be a whole number of pixels from 0 to {top} (got {value!r})")
        for field in ("hr_resize_x", "hr_resize_y"):
            value = getattr(self, field)
            if not _is_int(value) or not 0 <= value <= limits.max_side:
                raise ValueError(f"{field} must be 0 (use hr_scale) or a whole number of pixels up to {limits.max_side} "
                                 f"(got {value!r})")
        if not _is_int(self.hr_second_pass_steps) or not 0 <= self.hr_second_pass_steps <= limits.max_steps:
            raise ValueError(f"hr_second_pass_steps must be 0 (as many as the first pass) or a whole number up to "
                             f"{limits.max_steps} (got {self.hr_second_pass_steps!r})")

    def _validate_second_pass(self, limits: Limits) -> None:
        strength = self.denoising_strength
        if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 < strength <= 1:
            raise ValueError(f"denoising_strength must be a number above 0 and at most 1 (got {strength!r})")
        steps = self.hr_second_pass_steps if self.enable_hr and self.hr_second_pass_steps else self.steps
        if int(steps * strength) < 1:
            raise ValueError(f"denoising_strength {strength} of {steps} steps runs no step: raise one of them")

    def _validate_image_input(self) -> None:
        from PIL import Image

        if not isinstance(self.init_image, Image.Image):
            raise ValueError("init_image must be an image")
        if self.mask is not None and (not isinstance(self.mask, Image.Image) or self.mask.size != self.init_image.size):
            raise ValueError(f"mask must be an image of the same size as init_image ({self.init_image.width}x"
                             f"{self.init_image.height})")
        if self.enable_hr:
            raise ValueError("enable_hr is for images made from text; img2img upscales with width and height")
        for field in ("inpaint_full_res", "inpainting_mask_invert"):
            if not isinstance(getattr(self, field), bool):
                raise ValueError(f"{field} must be true or false")

    def _validate_hires(self, limits: Limits) -> None:
        if self.refiner:
            raise ValueError("enable_hr can't be combined with a refiner yet: choose one")
        model = self.upscaler_model.name if self.upscaler_model else None
        if self.hr_upscaler not in (*LATENT_UPSCALERS, *PIXEL_UPSCALERS, model):
            raise ValueError("hr_upscaler must be one of " + ", ".join([*LATENT_UPSCALERS, *PIXEL_UPSCALERS])
                             + f" or an upscaler model's name (got {self.hr_upscaler!r})")
        if not isinstance(self.hr_scale, (int, float)) or isinstance(self.hr_scale, bool) or not 1 <= self.hr_scale <= 4:
            raise ValueError(f"hr_scale must be a number from 1 to 4 (got {self.hr_scale!r})")
        width, height = self.hires_size()
        if not (max(self.width, MIN_SIDE) <= width <= limits.max_side and max(self.height, MIN_SIDE) <= height
                <= limits.max_side):
            raise ValueError(f"hr_scale makes {width}x{height}: the hires size must be at least the first pass's "
                             f"and at most {limits.max_side} pixels a side")

    def _validate_addons(self) -> None:
        if LORA_TAG.search(self.negative_prompt):
            raise ValueError("negative_prompt can't hold a LoRA tag: LoRAs are applied from the prompt")
        given = {use.ref.name for use in self.loras}
        if missing := [name for name, _, _ in lora_tags(self.prompt) if name not in given]:
            raise ValueError(f"prompt names <lora:{missing[0]}>, but no file was given for it (loras)")
        for use in self.loras:
            for part, value in (("unet", use.unet), ("te", use.te)):
                if not isinstance(value, (int, float)) or isinstance(value, bool) or not -4 <= value <= 4:
                    raise ValueError(f"prompt <lora:{use.ref.name}:...>: its {part} weight must be a number from -4 to 4 "
                                     f"(got {value!r})")
        if self.controlnets and (self.mask is not None or self.enable_hr or self.refiner):
            raise ValueError("controlnet units work with txt2img and img2img; not yet with inpainting, hires fix or "
                             "a refiner")
        for k, unit in enumerate(self.controlnets):
            from PIL import Image

            from .controlmaps import MAX_PROCESSOR_RES, MODULES

            name = f"controlnet unit {k}"
            if unit.module not in MODULES:
                raise ValueError(f"{name}: module must be one of {', '.join(MODULES)} (got {unit.module!r})")
            res = unit.processor_res
            if not (_is_int(res) and (res == -1 or 64 <= res <= MAX_PROCESSOR_RES)):
                raise ValueError(f"{name}: processor_res must be -1 (512) or a whole number from 64 to "
                                 f"{MAX_PROCESSOR_RES} (got {res!r})")
            for field in ("threshold_a", "threshold_b"):
                value = getattr(unit, field)
                if not isinstance(value, (int, float)) or isinstance(value, bool) or unit.module == "canny" and not (
                        value == -1 or 1 <= value <= 255):
                    raise ValueError(f"{name}: {field} must be a number" + (
                        " from 1 to 255 (a Canny threshold) or -1" if unit.module == "canny" else "") + f" (got {value!r})")
            if not isinstance(unit.image, Image.Image):
                raise ValueError(f"{name}: an image is required")
            if not isinstance(unit.weight, (int, float)) or isinstance(unit.weight, bool) or not 0 <= unit.weight <= 2:
                raise ValueError(f"{name}: weight must be a number from 0 to 2 (got {unit.weight!r})")
            start, end = unit.guidance_start, unit.guidance_end
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (start, end)) or not (
                    0 <= start < end <= 1):
                raise ValueError(f"{name}: guidance_start and guidance_end must be numbers with 0 <= start < end <= 1 "
                                 f"(got {start!r}, {end!r})")
            for field, allowed in (("control_mode", CONTROL_MODES), ("resize_mode", RESIZE_MODES)):
                value = getattr(unit, field)
                if not _is_int(value) or not 0 <= value < len(allowed):
                    raise ValueError(f"{name}: {field} must be one of " + ", ".join(
                        f"{i} ({label})" for i, label in enumerate(allowed)) + f" (got {value!r})")

    def seeds(self) -> list[int]:
        """Seeds s, s+1, ... for the batch; seed -1 picks s at random."""
        return _counted(self.seed, self.num_images)

    def subseeds(self) -> list[int]:
        return _counted(self.subseed, self.num_images)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
