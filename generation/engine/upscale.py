"""upscale(): a finished picture made larger, as its own job (A1111's "extras"): resized in
pixel space, then watermarked like every image the studio hands out."""

import time
from dataclasses import dataclass, field

from PIL import Image

from .metadata import save_png
from .request import PIXEL_UPSCALERS, ModelRef
from .watermark import embed_watermark

UPSCALERS = ("None", *PIXEL_UPSCALERS)  # A1111's names; "None" resizes with Lanczos as A1111 does
MAX_UPSCALE = 4


def upscaled_size(width: int, height: int, scale: float) -> tuple[int, int]:
    return round(width * scale), round(height * scale)


def check_upscale(scale, upscaler: str, width: int, height: int, max_side: int, models=()) -> None:
    """ValueError naming the field, or None; `models`: the upscaler models' names."""
    if not isinstance(scale, (int, float)) or isinstance(scale, bool) or not 1 < scale <= MAX_UPSCALE:
        raise ValueError(f"upscale_by must be a number above 1 and at most {MAX_UPSCALE} (got {scale!r})")
    if upscaler not in (*UPSCALERS, *models):
        raise ValueError(f"upscaler must be one of {', '.join(UPSCALERS)} or an upscaler model's name (got {upscaler!r})")
    if max(upscaled_size(width, height, scale)) > max_side:
        raise ValueError(f"upscale_by {scale} makes {'x'.join(map(str, upscaled_size(width, height, scale)))}: at most "
                         f"{max_side} pixels a side")


def resize_by(image: Image.Image, scale: float, upscaler: str) -> Image.Image:
    return image.resize(upscaled_size(*image.size, scale), Image.NEAREST if upscaler == "Nearest" else Image.LANCZOS)


@dataclass
class UpscaleResult:
    """Shaped like GenerationResult where the studio stores images: one image, never flagged."""

    images: list[Image.Image]
    seeds: list[int]
    text: str  # the PNG's parameters: the source's, with A1111's postprocessing keys
    indexes: list[int] = field(default_factory=lambda: [0])
    flagged: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def save_png(self, k: int, fp, image_id: str = "") -> None:
        save_png(self.images[k], fp, self.text, image_id)


def upscale(image: Image.Image, *, scale: float, upscaler: str, parameters: str, seed: int,
            watermark_payload: bytes | None = None, model: ModelRef | None = None, device=None) -> UpscaleResult:
    """`image` made `scale` times larger, by `model` (an ESRGAN-family file named `upscaler`) or
    in pixels; `parameters` is the source's infotext, to which the postprocessing keys are added
    as A1111 writes them."""
    started = time.perf_counter()
    check_upscale(scale, upscaler, *image.size, max_side=2**31, models=[model.name] if model else [])
    if model is not None:
        from .esrgan import esrgan_upscale  # torch: the worker's, never a web process's
        from .loading import PIPELINES, pick_device, pick_dtype

        device = pick_device(device)
        net = PIPELINES.get_addon("upscaler", model, device, pick_dtype(device)).value
        made = esrgan_upscale(net, image, upscaled_size(*image.size, scale))
    else:
        made = resize_by(image.convert("RGB"), scale, upscaler)
    if watermark_payload is not None:
        made = embed_watermark(made, watermark_payload)
    text = f"{parameters}, Postprocess upscale by: {scale:g}, Postprocess upscaler: {upscaler}"
    return UpscaleResult(images=[made], seeds=[seed], text=text, timings={"total": time.perf_counter() - started})
