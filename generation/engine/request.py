"""What a caller asks for, and the checks that turn bad input into a message a user can act on."""

import random
from dataclasses import dataclass

from .prompts import check_prompt_syntax
from .schedulers import scheduler_spec

MAX_SEED = 2**32 - 1
MAX_PROMPT_CHARS = 4000
MAX_STEPS = 150  # no deployment may allow more
MIN_SIDE = 256  # the watermark needs at least this


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


def model_ref(model) -> ModelRef:
    return model if isinstance(model, ModelRef) else ModelRef(str(model))


@dataclass(frozen=True)
class GenerationRequest:
    prompt: str
    model: str | ModelRef
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 20
    guidance_scale: float = 7.0
    scheduler: str = "Euler a"
    seed: int = -1
    num_images: int = 1
    clip_skip: int = 1  # 1-12, as A1111's CLIP_stop_at_last_layers
    refiner: str | ModelRef | None = None  # an SDXL refiner takes over at refiner_switch_at
    vae: str | ModelRef | None = None  # a VAE file that decodes instead of the checkpoint's own
    refiner_switch_at: float = 0.8

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
        if not isinstance(self.guidance_scale, (int, float)) or not 0 <= self.guidance_scale <= 30:
            raise ValueError(f"guidance_scale must be a number from 0 to 30 (got {self.guidance_scale!r})")
        if not _is_int(self.num_images) or not 1 <= self.num_images <= limits.max_images:
            raise ValueError(f"num_images must be from 1 to {limits.max_images} (got {self.num_images!r})")
        if not _is_int(self.seed) or not -1 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be -1 (random) or a whole number from 0 to {MAX_SEED} (got {self.seed!r})")
        if not _is_int(self.clip_skip) or not 1 <= self.clip_skip <= 12:
            raise ValueError(f"clip_skip must be a whole number from 1 to 12 (got {self.clip_skip!r})")
        if (not isinstance(self.refiner_switch_at, (int, float)) or isinstance(self.refiner_switch_at, bool)
                or not 0 < self.refiner_switch_at < 1):
            raise ValueError(f"refiner_switch_at must be a number between 0 and 1 (got {self.refiner_switch_at!r})")
        scheduler_spec(self.scheduler)

    def seeds(self) -> list[int]:
        """Seeds s, s+1, ... for the batch; seed -1 picks s at random."""
        first = random.SystemRandom().randint(0, MAX_SEED) if self.seed == -1 else self.seed
        return [first + k for k in range(self.num_images)]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
