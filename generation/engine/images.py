"""Pixel work around img2img and inpainting, as A1111 does it: resize modes, masks (invert,
blur, "only masked" crops), masked-content fill, and pasting the result back so that pixels
outside the blurred mask stay exactly as they were."""

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter, ImageOps


def resize(image: Image.Image, width: int, height: int, mode: int) -> Image.Image:
    """A1111's resize modes: 0 stretch to the size, 1 crop to its aspect ratio then resize,
    2 resize inside it and fill the bars by stretching the edge pixels."""
    if image.size == (width, height):
        return image
    if mode == 0:
        return image.resize((width, height), Image.LANCZOS)
    if mode == 1:
        return ImageOps.fit(image, (width, height), Image.LANCZOS)
    ratio = min(width / image.width, height / image.height)
    inner = image.resize((max(1, round(image.width * ratio)), max(1, round(image.height * ratio))), Image.LANCZOS)
    out = Image.new(image.mode, (width, height))
    left, top = (width - inner.width) // 2, (height - inner.height) // 2
    out.paste(inner.resize((width, height), Image.LANCZOS))  # the bars: the picture stretched behind it
    out.paste(inner, (left, top))
    return out


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Masked content "fill": the masked pixels become the colours around them, blurred in, coarse
    to fine: at each scale of a pyramid, blur(image x keep) / blur(keep), blended in where enough
    known pixels are near, so the fill has no seams."""
    import cv2  # OpenCV comes with invisible-watermark

    keep = 1 - np.asarray(mask, dtype=np.float32) / 255
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    height, width = keep.shape
    known = keep > 0.5
    filled = np.empty_like(pixels)
    filled[:] = pixels[known].mean(axis=0) if known.any() else 127.5
    for scale in (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, 1):
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        num, den = (cv2.GaussianBlur(cv2.resize(a, size, interpolation=cv2.INTER_AREA), (0, 0), 1.5)
                    for a in (pixels * keep[..., None], keep))
        num, den = (cv2.resize(a, (width, height), interpolation=cv2.INTER_LINEAR) for a in (num, den))
        weight = np.clip(den / 0.3, 0, 1)[..., None]
        filled = weight * num / np.maximum(den, 1e-6)[..., None] + (1 - weight) * filled
    out = pixels * keep[..., None] + filled * (1 - keep[..., None])
    return Image.fromarray(out.round().clip(0, 255).astype(np.uint8))


@dataclass(frozen=True)
class Crop:
    """Where an "only masked" run's picture goes back: the box in the original image."""

    box: tuple[int, int, int, int]

    @property
    def size(self) -> tuple[int, int]:
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


def mask_crop(mask: Image.Image, padding: int, width: int, height: int) -> Crop | None:
    """The mask's bounding box plus `padding`, grown to the width:height aspect ratio and kept
    inside the image; None when the mask is empty."""
    found = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if found is None:
        return None
    x1, y1, x2, y2 = found
    x1, y1, x2, y2 = max(x1 - padding, 0), max(y1 - padding, 0), min(x2 + padding, mask.width), min(y2 + padding, mask.height)
    # Grow the short side so the box has the run's aspect ratio (no stretching), within the image.
    box_w, box_h = x2 - x1, y2 - y1
    if box_w / box_h < width / height:
        box_w = min(mask.width, round(box_h * width / height))
    else:
        box_h = min(mask.height, round(box_w * height / width))
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left = int(min(max(cx - box_w / 2, 0), mask.width - box_w))
    top = int(min(max(cy - box_h / 2, 0), mask.height - box_h))
    return Crop((left, top, left + box_w, top + box_h))


def paste_back(original: Image.Image, made: Image.Image, blurred_mask: Image.Image, crop: Crop | None) -> Image.Image:
    """The made picture over the original through the blurred mask: where the mask is 0 the
    original's pixels are kept exactly."""
    if crop is not None:
        placed = original.copy()
        placed.paste(made.resize(crop.size, Image.LANCZOS), crop.box[:2])
        made = placed
    return Image.composite(made.convert("RGB"), original.convert("RGB"), blurred_mask)


def prepared_mask(mask: Image.Image, invert: bool, blur: int) -> tuple[Image.Image, Image.Image]:
    """(the hard mask, the blurred one) with "inpaint not masked" applied."""
    hard = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    if invert:
        hard = ImageOps.invert(hard)
    return hard, hard.filter(ImageFilter.GaussianBlur(blur)) if blur else hard
