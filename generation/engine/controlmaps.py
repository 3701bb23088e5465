"""ControlNet preprocessors computed here with OpenCV (no model, no download): the control map a
ControlNet reads, from an ordinary picture. No torch: the web side previews them too."""

import numpy as np
from PIL import Image

# name -> (what it makes, threshold_a's meaning and default, threshold_b's)
MODULES = {
    "none": ("the image is already a control map", None, None),
    "canny": ("white edges on black (Canny)", ("low threshold", 100), ("high threshold", 200)),
    "lineart_standard": ("white lines on black, traced from a picture", None, None),
    "invert": ("a black-on-white drawing turned white-on-black", None, None),
}
MAX_PROCESSOR_RES = 2048
MAX_WORK_SIDE = 2 * MAX_PROCESSOR_RES  # a long, thin picture is worked smaller than processor_res


def control_map(image: Image.Image, module: str, processor_res: int = 512, threshold_a: float = -1,
                threshold_b: float = -1) -> Image.Image:
    """`image` through preprocessor `module`, worked at `processor_res` on its short side (as the
    ControlNet extension does) and at most MAX_WORK_SIDE on its long side, so its memory is bounded
    whatever the aspect ratio; thresholds of -1 take the module's defaults."""
    import cv2  # OpenCV comes with invisible-watermark

    if module not in MODULES:
        raise ValueError(f"module must be one of {', '.join(MODULES)} (got {module!r})")
    if module == "none":
        return image.convert("RGB")
    if processor_res in (None, -1):
        processor_res = 512
    if not isinstance(processor_res, int) or isinstance(processor_res, bool) or not 64 <= processor_res <= MAX_PROCESSOR_RES:
        raise ValueError(f"processor_res must be a whole number from 64 to {MAX_PROCESSOR_RES} (got {processor_res!r})")
    ratio = min(processor_res / min(image.size), MAX_WORK_SIDE / max(image.size))
    picture = image.convert("RGB").resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))),
                                          Image.LANCZOS)
    pixels = np.asarray(picture)
    if module == "canny":
        low = MODULES["canny"][1][1] if threshold_a in (None, -1) else threshold_a
        high = MODULES["canny"][2][1] if threshold_b in (None, -1) else threshold_b
        for name, value in (("threshold_a", low), ("threshold_b", high)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 1 <= value <= 255:
                raise ValueError(f"{name} (a Canny threshold) must be from 1 to 255 (got {value!r})")
        edges = cv2.Canny(pixels, float(low), float(high))
    elif module == "lineart_standard":
        # Lines are where a pixel is darker than its blurred surroundings; scaled by the strong ones.
        values = pixels.astype(np.float32)
        darker = (cv2.GaussianBlur(values, (0, 0), 6.0) - values).max(axis=2).clip(0, None)
        edges = (darker / max(float(np.percentile(darker, 99)), 8.0) * 255).clip(0, 255).astype(np.uint8)
    else:
        edges = 255 - cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    return Image.fromarray(edges).convert("RGB")


def unit_map(unit, width: int, height: int) -> Image.Image:
    """A ControlNet unit's (request.ControlUnit) control map at the run's size."""
    from .images import resize

    mapped = control_map(unit.image, unit.module, unit.processor_res, unit.threshold_a, unit.threshold_b)
    return resize(mapped.convert("RGB"), width, height, unit.resize_mode)
