"""Starting images and masks through the studio: hostile uploads refused by name and never
charged, what is stored and audited, gallery images as a start, and img2img, inpaint and hires
jobs run to the end."""

import hashlib
import io
import re
import struct
import zlib

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage
from PIL import ImageDraw

from gallery.models import Image
from generation.credits.models import CreditEntry
from generation.engine.metadata import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.worker import job_run
from generation.provenance.models import PromptAudit
from generation.provenance.trace import trace_image
from tests.support import assert_ledger_balanced, form_data


def encoded(image: PILImage.Image, format="PNG", **options) -> bytes:
    out = io.BytesIO()
    image.save(out, format, **options)
    return out.getvalue()


def picture(size=(320, 288), mode="RGB") -> PILImage.Image:
    return PILImage.effect_noise(size, 60).convert(mode)


def mask_for(size=(320, 288)) -> PILImage.Image:
    mask = PILImage.new("L", size, 0)
    ImageDraw.Draw(mask).rectangle((100, 100, 180, 180), fill=255)
    return mask


def bomb_png(side=100_000) -> bytes:
    """A valid PNG header claiming side x side pixels: decoding it would need tens of gigabytes."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1024)) + chunk(b"IEND", b""))


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nnewpath 0 0 moveto 100 100 lineto stroke\n%%EOF\n"


def _named(data, name):
    file = io.BytesIO(data)
    file.name = name
    return file


BODY = {"prompt": "a red door", "steps": 4, "seed": 5, "width": 256, "height": 256}


@pytest.mark.parametrize("field, data, message", [
    ("init_image", b"this is not an image", "upload a PNG, JPEG or WebP image"),
    ("init_image", bomb_png(), "at most 16.7772 megapixels"),
    ("init_image", encoded(PILImage.new("RGB", (1, 1))), "at least 64 pixels on each side"),
    ("init_image", EPS, "upload a PNG, JPEG or WebP image"),
    ("init_image", encoded(picture(), "GIF"), "upload a PNG, JPEG or WebP image"),
    ("init_image", encoded(picture())[:2000], "the file is damaged"),
    ("mask", encoded(mask_for((160, 144))), "it must be the starting image's size, 320x288"),
])
def test_a_bad_upload_is_a_400_naming_the_field_charges_nothing_and_is_audited(api, alice, field, data, message):
    files = {"init_image": _named(encoded(picture()), "start.png")}
    files[field] = _named(data, "upload.bin")
    response = api.post("/api/v1/jobs/", {**BODY, **files}, format="multipart")
    assert response.status_code == 400, response.data
    assert message.lower() in " ".join(response.data[field]).lower()
    assert not Job.objects.exists() and alice.credits.balance == 100
    audit = PromptAudit.objects.get()
    assert audit.decision == "refused" and audit.params[f"{field}_sha256"] == hashlib.sha256(data).hexdigest()
    assert_ledger_balanced()


def test_a_submission_refused_for_its_cost_stores_none_of_its_pictures(api, alice, bob, settings):
    """Bob can't pay; his picture and mask are checked, refused with the job, and never written."""
    from rest_framework.test import APIClient

    from sdweb.shared.api_keys import api_key_create

    bobs = APIClient()
    bobs.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=bob, name='tests')[1]}")
    stored = set(default_storage.listdir("inputs")[1]) if default_storage.exists("inputs") else set()
    files = {"init_image": _named(encoded(picture()), "start.png"), "mask": _named(encoded(mask_for()), "mask.png")}
    refused = bobs.post("/api/v1/jobs/", {**BODY, **files}, format="multipart")
    assert refused.status_code == 402, refused.data
    assert PromptAudit.objects.get().decision == "refused"
    assert not default_storage.exists("inputs") or set(default_storage.listdir("inputs")[1]) == stored
    accepted = api.post("/api/v1/jobs/", {**BODY, "init_image": _named(encoded(picture()), "start.png")},
                        format="multipart")
    assert accepted.status_code == 201, accepted.data
    assert set(default_storage.listdir("inputs")[1]) - stored == {Job.objects.get().init_image.removeprefix("inputs/")}


def test_an_upload_over_the_byte_limit_is_refused_before_it_is_read(api, alice, settings):
    settings.SDWEB = {**settings.SDWEB, "UPLOAD_MAX_BYTES": 2**20}
    big = encoded(picture((1024, 1024)), "PNG", compress_level=0)
    response = api.post("/api/v1/jobs/", {**BODY, "init_image": _named(big, "big.png")}, format="multipart")
    assert response.status_code == 400 and "At most 1 MB" in response.data["init_image"][0]
    assert not Job.objects.exists()


def test_an_accepted_upload_is_stored_upright_without_metadata_and_audited_by_its_hash(api, alice):
    tall = picture((256, 320))
    exif = PILImage.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    exif[0x010F] = "Secret Camera Co"
    jpeg = encoded(tall, "JPEG", exif=exif.tobytes(), quality=95)
    response = api.post("/api/v1/jobs/", {"prompt": "a red door", "steps": 4, "init_image": _named(jpeg, "p.jpg")},
                        format="multipart")
    assert response.status_code == 201, response.data
    job = Job.objects.get()
    assert (job.width, job.height, job.mode) == (320, 256, "img2img")  # turned upright; the job's size is the image's
    with default_storage.open(job.init_image) as file:
        stored = PILImage.open(io.BytesIO(file.read()))
    assert stored.format == "PNG" and stored.size == (320, 256) and not stored.info and not stored.getexif()
    assert job.init_image_sha256 == hashlib.sha256(jpeg).hexdigest()
    assert PromptAudit.objects.get().params["init_image_sha256"] == job.init_image_sha256


def test_a_large_upload_makes_a_job_of_the_largest_size_allowed_with_its_aspect_ratio(api, alice):
    wide = _named(encoded(picture((3000, 1500))), "wide.png")
    response = api.post("/api/v1/jobs/", {"prompt": "a red door", "steps": 4, "init_image": wide}, format="multipart")
    assert response.status_code == 201, response.data
    assert (response.data["width"], response.data["height"]) == (1536, 768)


def test_an_img2img_job_costs_the_steps_it_runs_and_lands_in_the_gallery_with_its_parameters(api, alice, settings):
    settings.SDWEB = {**settings.SDWEB, "COST_UNIT": 256 * 256}
    response = api.post("/api/v1/jobs/", {**BODY, "steps": 8, "denoising_strength": 0.5, "num_images": 2,
                                          "init_image": _named(encoded(picture()), "s.png")}, format="multipart")
    assert response.status_code == 201, response.data
    assert response.data["cost"] == 2 * 4  # two images, 0.5 x 8 steps each, one credit per 256² step
    job_run(job_claim())
    job = Job.objects.get()
    assert job.status == "succeeded", job.error
    assert job.progress_total == 4
    image = job.images.first()
    with default_storage.open(image.png.name) as file:
        params = parse_parameters(PILImage.open(file).info["parameters"])
    assert params["Denoising strength"] == "0.5" and params["steps"] == 8
    assert_ledger_balanced()


def test_an_inpaint_job_keeps_the_unmasked_pixels_apart_from_the_watermark(api, alice):
    start = picture((256, 256))
    response = api.post("/api/v1/jobs/", {**BODY, "mask_blur": 0, "init_image": _named(encoded(start), "s.png"),
                                          "mask": _named(encoded(mask_for((256, 256))), "m.png")}, format="multipart")
    assert response.status_code == 201, response.data
    job_run(job_claim())
    job = Job.objects.get()
    assert job.status == "succeeded" and job.mode == "inpaint"
    with default_storage.open(job.images.get().png.name) as file:
        made = np.asarray(PILImage.open(file).convert("RGB")).astype(int)
    outside = np.asarray(mask_for((256, 256))) == 0
    inside = ~outside
    # The watermark moves pixels everywhere a little (on noise, visibly); the painted area changed far more.
    assert np.abs(made - np.asarray(start).astype(int))[outside].mean() * 3 < np.abs(
        made - np.asarray(start).astype(int))[inside].mean()


def test_a_gallery_image_starts_a_job_and_its_trace_names_that_start(api, alice, carol, make_job, admin):
    own = make_job(alice, num_images=1).images.get()
    response = api.post("/api/v1/jobs/", {**BODY, "init_image": own.hex_id}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["init_image_id"] == own.hex_id
    job_run(job_claim())
    made = Job.objects.get(pk=response.data["id"]).images.get()
    with default_storage.open(made.png.name) as file:
        traced = trace_image(_named(file.read(), "x.png"), staff=admin)
    assert traced["found"] and traced["params"]["init_image_id"] == own.hex_id
    with default_storage.open(own.png.name) as file:
        assert traced["params"]["init_image_sha256"] == hashlib.sha256(file.read()).hexdigest()

    private = make_job(carol, num_images=1).images.get()
    refused = api.post("/api/v1/jobs/", {**BODY, "init_image": private.hex_id}, format="json")
    assert refused.status_code == 400
    missing = api.post("/api/v1/jobs/", {**BODY, "init_image": "00000000000000ff"}, format="json")
    assert refused.data["init_image"][0].rstrip(".") == missing.data["init_image"][0].rstrip(".")  # alike: no oracle


def test_a_hires_job_makes_the_larger_image_in_one_job_and_one_charge(api, alice, settings):
    settings.SDWEB = {**settings.SDWEB, "COST_UNIT": 256 * 256}
    response = api.post("/api/v1/jobs/", {**BODY, "enable_hr": True, "hr_scale": 1.5, "denoising_strength": 0.5},
                        format="json")
    assert response.status_code == 201, response.data
    assert response.data["cost"] == 9  # 4 steps at 256², then 0.5 x 4 steps at 384² (2.25 x 256² each): 8.5
    job_run(job_claim())
    image = Image.objects.get()
    assert (image.width, image.height) == (384, 384)
    assert CreditEntry.objects.filter(kind="charge").count() == 1


def test_the_page_takes_an_upload_and_a_painted_mask(client, alice, checkpoint):
    client.force_login(alice)
    data = {**form_data(checkpoint), "init_image": _named(encoded(picture((256, 256))), "s.png"),
            "mask": _named(encoded(mask_for((256, 256))), "mask.png"), "denoising_strength": "0.5",
            "inpainting_fill": "2", "inpaint_full_res": "on"}
    response = client.post("/generate/", data)
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get()
    assert (job.mode, job.inpainting_fill, job.inpaint_full_res, job.denoising_strength) == ("inpaint", 2, True, 0.5)


def test_use_as_starting_image_fills_the_form_with_the_gallery_image_and_its_prompt(client, alice, make_job):
    image = make_job(alice, prompt="a red barn in snow", num_images=1).images.get()
    make_job(alice, prompt="a later idea", num_images=1)
    client.force_login(alice)
    page = client.get(f"/generate/?init={image.hex_id}").content.decode()
    assert f'value="{image.hex_id}"' in page and f"/images/{image.hex_id}.png" in page
    assert re.search(r'name="prompt"[^>]*>\s*a red barn in snow</textarea>', page)


def test_hires_fix_from_the_page_runs_at_its_own_denoising_strength(client, alice, checkpoint):
    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, num_images=1, enable_hr="on", hr_scale="1.5",
                                                   hr_denoising_strength="0.35"))
    assert response.status_code == 302, response.context["form"].errors
    job = Job.objects.get()
    assert (job.enable_hr, job.hr_scale, job.denoising_strength) == (True, 1.5, 0.35)
    page = client.get(f"/generate/?job={job.pk}").content.decode()
    assert 'name="hr_denoising_strength" value="0.35"' in page


def test_upscaling_an_image_is_its_own_charged_job_beside_the_original(client, alice, make_job, admin, settings):
    settings.SDWEB = {**settings.SDWEB, "COST_UNIT": 256 * 256}
    original = make_job(alice, num_images=1).images.get()
    client.force_login(alice)
    page = client.get(f"/images/{original.hex_id}/").content.decode()
    assert "×2: 512×512, 4 credits" in page
    balance = alice.credits.balance
    response = client.post(f"/images/{original.hex_id}/upscale/", {"upscale_by": "2", "upscaler": "Lanczos"})
    job = Job.objects.get(upscale_by=2)
    assert response.status_code == 302 and (job.mode, job.cost, job.width) == ("upscale", 4, 512)
    job_run(job_claim())
    job.refresh_from_db()
    larger = job.images.get()
    assert job.status == "succeeded" and (larger.width, larger.height) == (512, 512)
    alice.credits.refresh_from_db()
    assert alice.credits.balance == balance - 4
    with default_storage.open(larger.png.name) as file:
        data = file.read()
    text = PILImage.open(io.BytesIO(data)).info["parameters"]
    assert "Size: 256x256" in text and text.endswith("Postprocess upscale by: 2, Postprocess upscaler: Lanczos")
    traced = trace_image(_named(data, "x.png"), staff=admin)
    assert traced["found"] and traced["params"]["init_image_id"] == original.hex_id
    assert f"/images/{larger.hex_id}/" in client.get(f"/images/{original.hex_id}/").content.decode()
    assert "Upscaled" in client.get(f"/images/{larger.hex_id}/").content.decode()
    assert_ledger_balanced()


@pytest.mark.parametrize("scale, message", [("9", "upscale_by must be a number above 1 and at most 4"),
                                            ("x", "upscale_by must be a number")])
def test_a_bad_upscale_is_refused_and_costs_nothing(client, alice, make_job, scale, message):
    original = make_job(alice, num_images=1).images.get()
    client.force_login(alice)
    balance = alice.credits.balance
    response = client.post(f"/images/{original.hex_id}/upscale/", {"upscale_by": scale}, follow=True)
    assert message.lower() in response.content.decode().lower()
    assert not Job.objects.filter(upscale_by__gt=0).exists()
    alice.credits.refresh_from_db()
    assert alice.credits.balance == balance


def test_more_variants_of_an_inpaint_job_start_from_the_same_image_and_mask(client, alice, api):
    response = api.post("/api/v1/jobs/", {**BODY, "init_image": _named(encoded(picture((256, 256))), "s.png"),
                                          "mask": _named(encoded(mask_for((256, 256))), "m.png")}, format="multipart")
    job_run(job_claim())
    first = Job.objects.get(pk=response.data["id"])
    client.force_login(alice)
    client.post(f"/images/{first.images.get().hex_id}/variants/")
    again = Job.objects.exclude(pk=first.pk).get()
    assert (again.mode, again.init_image, again.mask, again.init_image_sha256) == (
        "inpaint", first.init_image, first.mask, first.init_image_sha256)
