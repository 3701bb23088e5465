"""Images people send in (starting images, masks, images to trace or upscale) are hostile input:
only PNG, JPEG and WebP decoders ever see them, the pixel count is checked from the header before
anything is decoded, EXIF orientation is applied and every byte of metadata is dropped. Decoding
costs at most time in proportion to the pixels: a progressive JPEG's scan count (each scan is one
more pass over every pixel) and the aspect ratio (preprocessors scale the short side) are bounded
before the decoder runs."""

import base64
import binascii
import hashlib
import io
from dataclasses import dataclass

from django.conf import settings
from PIL import Image, ImageOps, UnidentifiedImageError

FORMATS = ("PNG", "JPEG", "WEBP")  # no other decoder (EPS runs Ghostscript) ever sees an upload
MIN_SIDE = 64
MAX_ASPECT = 16  # a side at most 16 times the other: sizes made here reach 6:1
MAX_JPEG_SCANS = 100  # libjpeg writes 10 for a progressive file, mozjpeg about 20; each costs a pass


@dataclass(frozen=True)
class Upload:
    image: Image.Image  # RGB, or RGBA where the file had transparency; no metadata
    sha256: str  # of the bytes received, as the audit records them


def open_image(data: bytes, *, field: str) -> Image.Image:
    """Decode `data` as a PNG, JPEG or WebP of at most SDWEB_UPLOAD_MAX_PIXELS, metadata kept;
    ValueError names `field` and what is allowed."""
    max_bytes, max_pixels = settings.SDWEB["UPLOAD_MAX_BYTES"], settings.SDWEB["UPLOAD_MAX_PIXELS"]
    if not data:
        raise ValueError(f"{field}: upload a PNG, JPEG or WebP image")
    if len(data) > max_bytes:
        raise ValueError(f"{field}: at most {max_bytes // 2**20} MB (this file has {len(data) / 2**20:.1f} MB)")
    try:
        picture = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
    except Image.DecompressionBombError:
        raise ValueError(f"{field}: at most {max_pixels / 1e6:g} megapixels")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ValueError(f"{field}: upload a PNG, JPEG or WebP image")
    if picture.width * picture.height > max_pixels:
        raise ValueError(f"{field}: at most {max_pixels / 1e6:g} megapixels "
                         f"(this one is {picture.width}x{picture.height})")
    if min(picture.size) < MIN_SIDE:
        raise ValueError(f"{field}: at least {MIN_SIDE} pixels on each side (this one is {picture.width}x{picture.height})")
    if max(picture.size) > MAX_ASPECT * min(picture.size):
        raise ValueError(f"{field}: one side may be at most {MAX_ASPECT} times the other "
                         f"(this one is {picture.width}x{picture.height})")
    scans = data.count(b"\xff\xda") if picture.format == "JPEG" else 0  # 0xFF is escaped in coded data:
    if scans > MAX_JPEG_SCANS:  # start-of-scan markers count the scans (and any in an EXIF thumbnail)
        raise ValueError(f"{field}: the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are "
                         "accepted (save it again as an ordinary JPEG or PNG)")
    try:
        picture.load()  # an animated file gives its first frame
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        raise ValueError(f"{field}: the file is damaged ({error.__class__.__name__})")
    return picture


def read_image(data: bytes, *, field: str) -> Upload:
    """An upload as a clean RGB or RGBA image, upright, with nothing of the file but its pixels."""
    picture = open_image(data, field=field)
    try:
        picture = ImageOps.exif_transpose(picture)
    except (OSError, ValueError, SyntaxError):
        pass  # a broken EXIF block: keep the pixels as stored
    alpha = picture.mode in ("RGBA", "LA", "PA") or "transparency" in picture.info
    mode = "RGBA" if alpha else "RGB"
    clean = Image.frombytes(mode, picture.size, picture.convert(mode).tobytes())
    return Upload(image=clean, sha256=hashlib.sha256(data).hexdigest())


def decode_base64(value, *, field: str) -> bytes:
    """A1111 sends images as base64, with or without a data: URL prefix."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{field}: a base64-encoded PNG, JPEG or WebP image is required")
    if value.startswith("data:"):
        value = value.partition(",")[2]
    if len(value) > settings.SDWEB["UPLOAD_MAX_BYTES"] * 4 // 3 + 4:
        raise ValueError(f"{field}: at most {settings.SDWEB['UPLOAD_MAX_BYTES'] // 2**20} MB")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{field}: not valid base64")


def flattened(image: Image.Image) -> Image.Image:
    """RGB; transparent pixels become white, as A1111 flattens a starting image."""
    if image.mode != "RGBA":
        return image.convert("RGB")
    background = Image.new("RGB", image.size, "white")
    background.paste(image, mask=image.getchannel("A"))
    return background


def mask_from(image: Image.Image, *, transparent_repaints: bool = False) -> Image.Image:
    """A mask as the engine takes it: L, 255 where the image is repainted. A1111's rule: an RGBA
    mask with transparency is read by its alpha (opaque = repaint), any other by its brightness
    (white = repaint); OpenAI's: transparent pixels are the ones to repaint."""
    if image.mode == "RGBA" and (transparent_repaints or image.getchannel("A").getextrema() != (255, 255)):
        alpha = image.getchannel("A")
        return alpha.point(lambda a: 255 if a < 128 else 0) if transparent_repaints else alpha.point(
            lambda a: 255 if a > 128 else 0)
    return image.convert("L")


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()
