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
