"""Every original says it is AI-generated: XMP marking, and a signed C2PA manifest that breaks
when the file is changed. The watermark and parameters survive the signing."""

import io

from PIL import Image as PILImage

from generation.engine import read_png_marking, read_watermark
from generation.provenance.c2pa import read_credentials


def original(image) -> bytes:
    with image.png.open("rb") as f:
        return f.read()


def test_an_original_carries_signed_c2pa_credentials_and_its_other_marks(alice, make_job):
    image = make_job(alice, num_images=1).images.get()
    data = original(image)
    credentials = read_credentials(data, "image/png")
    assert credentials["present"] and credentials["ai_generated"] and credentials["problems"] == []
    assert not credentials["trusted"]  # the default local certificate is on no trust list
    picture = PILImage.open(io.BytesIO(data))
    assert read_png_marking(picture) == {"ai_generated": True, "image_id": image.hex_id}
    assert "Steps: 2" in picture.info["parameters"]
    assert read_watermark(picture.convert("RGB")) == image.watermark_payload


def test_a_changed_byte_breaks_the_c2pa_manifest(alice, make_job):
    data = bytearray(original(make_job(alice, num_images=1).images.get()))
    data[-100] ^= 1  # in the pixel data
    assert "assertion.dataHash.mismatch" in read_credentials(bytes(data), "image/png")["problems"]
    assert read_credentials(b"not an image", "image/png") == {"present": False}


def test_signing_can_be_turned_off(alice, make_job, settings):
    from generation.provenance import c2pa

    settings.SDWEB = {**settings.SDWEB, "C2PA": "off"}
    c2pa._signing.cache_clear()
    try:
        data = original(make_job(alice, num_images=1).images.get())
        assert read_credentials(data, "image/png") == {"present": False}
    finally:
        c2pa._signing.cache_clear()


def test_every_way_an_image_leaves_the_studio_carries_its_mark(alice, make_job, client):
    """The original, its thumbnail, the OpenAI dialect's JPEG and WebP copies, an X/Y/Z plot's grid
    and an upscaled copy: each reads back to its own image id (issue 33, part 4)."""
    from generation.dialects.openai import encoded
    from generation.jobs.queue import job_claim
    from generation.jobs.submit import job_submit
    from generation.jobs.worker import job_run

    image = make_job(alice, num_images=1, width=512, height=512).images.get()
    ways = {"original PNG": image.png, "thumbnail": image.thumbnail}
    read = {name: read_watermark(PILImage.open(file.open("rb"))) for name, file in ways.items()}
    for output_format in ("jpeg", "webp"):
        read[f"OpenAI {output_format}"] = read_watermark(PILImage.open(io.BytesIO(encoded(image, output_format))))
    assert set(read.values()) == {image.watermark_payload}, read
    plot = make_job(alice, num_images=1, plot={"x": {"type": "Steps", "values": "2, 3"}}).images.order_by("index")
    grid = list(plot)[-1]  # the labelled grid: an image of its own, with its own id
    assert read_watermark(PILImage.open(grid.png.open("rb"))) == grid.watermark_payload
    upscale = job_submit(user=alice, params={"init_image": image, "upscale_by": 2.0, "upscaler": "Lanczos"})
    job_run(job_claim())
    larger = upscale.images.get()
    assert larger.width == 1024 and read_watermark(PILImage.open(larger.png.open("rb"))) == larger.watermark_payload
