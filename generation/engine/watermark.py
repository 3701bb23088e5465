"""Invisible watermark: an 8-byte payload per image (its identifier), so any image can be traced.

invisible-watermark's dwtDctSvd method on uint8 BGR arrays survives PNG and JPEG quality 90 saved
with 4:4:4 chroma. A CRC-16 travels with the payload so that an image without our mark reads as
None instead of as eight random bytes.
"""

import binascii
import functools
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

PAYLOAD_BYTES = 8
_BITS = (PAYLOAD_BYTES + 2) * 8
CRC_INIT = 0xFFFF  # not 0: a flat image reads as all-zero bits, which a zero-start CRC would pass


@functools.cache
def _dwt_dct_svd():
    """invisible-watermark's dwtDctSvd method, loaded from its own file: the package's __init__
    imports its RivaGAN method, which imports torch, and a web process tracing an image must not."""
    package = importlib.util.find_spec("imwatermark")  # finds the package without running it
    spec = importlib.util.spec_from_file_location(
        "sdweb_imwatermark_dwtdctsvd", Path(package.submodule_search_locations[0]) / "dwtDctSvd.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EmbedDwtDctSvd


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def embed_watermark(image: Image.Image, payload: bytes) -> Image.Image:
    if not isinstance(payload, bytes) or len(payload) != PAYLOAD_BYTES:
        raise ValueError(f"a watermark payload is exactly {PAYLOAD_BYTES} bytes")
    if min(image.size) < 256:
        raise ValueError("images under 256x256 can't carry the watermark")
    data = payload + binascii.crc_hqx(payload, CRC_INIT).to_bytes(2, "big")
    bits = list(np.unpackbits(np.frombuffer(data, dtype=np.uint8)))
    marked = _dwt_dct_svd()(bits, wmLen=_BITS).encode(_bgr(image))
    return Image.fromarray(np.ascontiguousarray(marked[:, :, ::-1]))


def read_watermark(image: Image.Image) -> bytes | None:
    """The payload, or None when the image carries no readable sdweb watermark."""
    if min(image.size) < 256:
        return None
    data = np.packbits(_dwt_dct_svd()(watermarks=[], wmLen=_BITS).decode(_bgr(image))).tobytes()
    payload, check = data[:PAYLOAD_BYTES], data[PAYLOAD_BYTES:]
    return payload if binascii.crc_hqx(payload, CRC_INIT).to_bytes(2, "big") == check else None
