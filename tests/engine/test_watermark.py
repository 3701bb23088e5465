import io
import os

import pytest
from PIL import Image

from generation.engine import embed_watermark, read_watermark


def reopen(image, **save_options):
    buffer = io.BytesIO()
    image.save(buffer, **save_options)
    return Image.open(io.BytesIO(buffer.getvalue()))


@pytest.mark.parametrize("size", [256, 512])
def test_the_payload_survives_png_and_jpeg_q90_444_on_generated_images(run, size):
    result = run(width=size, height=size, num_images=3, seed=size)
    for image in result.images:
        payload = os.urandom(8)
        marked = embed_watermark(image, payload)
        assert read_watermark(reopen(marked, format="PNG")) == payload
        assert read_watermark(reopen(marked, format="JPEG", quality=90, subsampling=0)) == payload


def test_an_image_without_our_watermark_reads_as_none(run):
    assert read_watermark(run().images[0]) is None


def test_the_payload_must_be_8_bytes_and_the_image_at_least_256_px():
    with pytest.raises(ValueError, match="8 bytes"):
        embed_watermark(Image.new("RGB", (256, 256)), b"123")
    with pytest.raises(ValueError, match="256x256"):
        embed_watermark(Image.new("RGB", (128, 128)), b"12345678")


def test_a_non_rgb_image_can_be_read():
    marked = embed_watermark(Image.effect_noise((256, 256), 60).convert("RGB"), b"abcdefgh")
    assert read_watermark(marked.convert("RGBA")) == b"abcdefgh"
