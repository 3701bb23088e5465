"""The second outside review's findings, replayed with the tester's files rebuilt: uploads that
can't exhaust a process, a trace that can't be forged, takedowns that hold, inputs that can't be
swapped, add-on files and names that can't cost or confuse, engine errors said plainly. The quota
race and a request served beside the attacks are in tests/production/test_hostile.py (PostgreSQL)."""

import base64
import io
import json
import struct

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery.models import Image
from gallery.services import image_hide
from generation.engine.controlmaps import MAX_WORK_SIDE, control_map
from generation.engine.watermark import embed_watermark
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run
from generation.library.checkpoints import checkpoint_register
from generation.library.models import AddOn
from generation.untrusted_images import read_image
from sdweb.accounts import account_delete
from sdweb.shared.api_keys import api_key_create
from tests.support import params, photo, scan_bomb

pytestmark = pytest.mark.django_db


def png(image: PILImage.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def peak_rss_growth_mb(fn):
    """fn()'s result and how far this process's peak resident memory rose while it ran (Linux)."""
    def peak():
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024

    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")  # the peak starts again from what the process holds now
    before = peak()
    return fn(), peak() - before


def a1111(name: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{name}:{name}-password-1".encode()).decode())
    return client


# 1. A long, thin picture ------------------------------------------------------------------------

def test_a_long_thin_picture_is_refused_by_every_image_input(client, alice, checkpoint):
    thin = png(PILImage.new("RGB", (64, 262144), "white"))  # 16.8 Mpx: within the pixel cap; 9 KB
    client.force_login(alice)
    answer = client.post("/generate/control-map/", {"cn_module": "canny", "cn_image": SimpleUploadedFile("t.png", thin)})
    assert answer.status_code == 400 and "at most 16 times the other (this one is 64x262144)" in answer.json()["error"]
    detect = a1111("alice").post("/controlnet/detect", {
        "controlnet_module": "canny", "controlnet_processor_res": 2048,
        "controlnet_input_images": [base64.b64encode(png(PILImage.new("RGB", (64, 4096)))).decode()]}, format="json")
    assert detect.status_code == 422 and "controlnet_input_images" in detect.json()["detail"]
    with pytest.raises(Refused, match="at most 16 times the other") as refusal:
        job_submit(user=alice, params=params(checkpoint, init_image=thin))
    assert refusal.value.field == "init_image" and not Job.objects.exists()


def test_a_control_map_of_the_longest_picture_allowed_stays_small():
    picture = PILImage.fromarray(np.tile(np.arange(256, dtype=np.uint8), (4096, 1))).convert("RGB")  # 256x4096
    made, grown = peak_rss_growth_mb(lambda: control_map(picture, "lineart_standard", processor_res=2048))
    # At processor_res on the short side this map would be 2048x32768: its float work alone is 1.6 GB.
    assert made.size == (256, 4096) and max(made.size) <= MAX_WORK_SIDE
    assert grown < 200, f"peak memory grew {grown:.0f} MB"


# 2. A progressive JPEG of many scans ------------------------------------------------------------

def test_a_progressive_jpeg_of_fifty_thousand_scans_is_refused_before_decoding(client, alice, checkpoint):
    bomb = scan_bomb(50_000)  # 0.9 MB that took 25 s of CPU to decode here (the tester's 570 000: 1 959 s)
    client.force_login(alice)
    answer = client.post("/generate/png-info/", {"image": SimpleUploadedFile("b.jpg", bomb)})
    assert answer.status_code == 400 and answer.json()["error"].startswith("the JPEG has 50010 scans; at most 100")
    with pytest.raises(Refused, match="scans") as refusal:
        job_submit(user=alice, params=params(checkpoint, init_image=bomb))
    assert refusal.value.field == "init_image"
    out = io.BytesIO()
    photo(1, 256).save(out, "JPEG", progressive=True)  # an ordinary progressive JPEG: 10 scans
    assert read_image(out.getvalue(), field="image").image.size == (256, 256)


# 3. A forged watermark -----------------------------------------------------------------------------

def test_a_watermark_copied_into_another_picture_names_no_one(client, admin, alice, make_job):
    image = make_job(alice, num_images=1).images.first()
    forged = png(embed_watermark(photo(3, 256), image.watermark_payload))
    client.force_login(admin)
    result = client.post("/api/v1/trace", {"image": SimpleUploadedFile("f.png", forged)}).json()
    assert not result["found"] and "owner" not in result, result
    assert result["message"].startswith(f"The watermark of image {image.hex_id} was read, but the picture doesn't "
                                        "match it (distance ")
    with image.png.open("rb") as file:
        genuine = client.post("/api/v1/trace", {"image": SimpleUploadedFile("g.png", file.read())}).json()
    assert (genuine["found"], genuine["method"], genuine["owner"]) == (True, "watermark", "alice")


# 4. Takedowns ----------------------------------------------------------------------------------------

def test_a_hidden_image_makes_nothing_new_and_all_made_from_it_is_hidden(client, alice, admin, checkpoint, make_job):
    image = make_job(alice, num_images=1).images.first()
    made_before = make_job(alice, num_images=1, init_image=image, denoising_strength=0.5).images.first()
    queued = job_submit(user=alice, params=params(checkpoint, num_images=1, steps=2, init_image=image,
                                                  denoising_strength=0.5))
    image_hide(image=image, staff=admin)
    image.refresh_from_db()
    made_before.refresh_from_db()
    assert made_before.hidden
    job_run(job_claim())  # submitted before the takedown, finished after it
    queued.refresh_from_db()
    assert queued.status == "succeeded" and queued.images.get().hidden

    jobs = Job.objects.count()
    client.force_login(alice)
    client.post(f"/images/{image.hex_id}/upscale/", {"upscale_by": "2"})
    client.post(f"/images/{image.hex_id}/variants/")
    with pytest.raises(Refused, match="hidden by staff and can't be used") as refusal:
        job_submit(user=alice, params=params(checkpoint, init_image=image))
    assert refusal.value.field == "init_image" and Job.objects.count() == jobs
    client.post(f"/images/{made_before.hex_id}/visibility/", {"public": "1"})
    assert not Image.objects.filter(is_public=True).exists()


# 6. Stored inputs -------------------------------------------------------------------------------------

def test_a_mask_made_of_someone_elses_picture_never_replaces_that_picture(alice, carol, checkpoint, make_job):
    public = make_job(alice, num_images=1).images.first()
    with public.png.open("rb") as file:
        picture = file.read()
    job_submit(user=carol, params=params(checkpoint, init_image=png(photo(5, 256)), mask=picture))  # stored first
    again = job_submit(user=alice, params=params(checkpoint, init_image=public))
    with default_storage.open(again.init_image) as stored:
        assert np.array_equal(np.asarray(PILImage.open(stored)), np.asarray(read_image(picture, field="x").image))


def test_deleting_an_account_keeps_the_inputs_anothers_jobs_use(client, alice, carol, checkpoint, library, make_job):
    picture = png(photo(6, 256))
    make_job(alice, num_images=1, init_image=picture, denoising_strength=0.5)
    unit = {"image": picture, "model": "tiny-canny", "module": "canny"}
    image = make_job(carol, num_images=1, controlnet=[unit]).images.get()
    account_delete(user=alice)
    assert default_storage.exists(image.job.addons[0]["image"])
    client.force_login(carol)
    answer = client.post(f"/images/{image.hex_id}/variants/")
    assert answer.status_code == 302 and Job.objects.filter(user=carol).count() == 2


@pytest.mark.django_db(transaction=True)
def test_an_openai_edit_without_a_mask_keeps_every_opaque_pixel(alice, checkpoint, worker):
    start = PILImage.new("RGBA", (256, 256), (250, 240, 230, 255))
    start.paste((0, 0, 0, 0), (0, 0, 96, 256))  # transparent: to be repainted
    out = io.BytesIO()
    start.save(out, "PNG")
    out.seek(0)
    out.name = "start.png"
    key = api_key_create(user=alice, name="openai")[1]
    answer = APIClient().post("/v1/images/edits", {"prompt": "a window", "image": out, "size": "256x256"},
                              HTTP_AUTHORIZATION=f"Bearer {key}")
    assert answer.status_code == 200, answer.content
    made = np.asarray(PILImage.open(io.BytesIO(base64.b64decode(answer.json()["data"][0]["b64_json"]))).convert("RGB"))
    kept = made[:, 160:].reshape(-1, 3).astype(int)  # far from the blurred edge; the watermark moves a few levels
    assert np.abs(kept - (250, 240, 230)).mean() < 4, kept.mean(axis=0)


# 7. Add-on files and names ---------------------------------------------------------------------------

def safetensors_with(tensors: int, metadata_bytes: int = 0) -> bytes:
    header = {f"t{k}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * k, 4 * k + 4]} for k in range(tensors)}
    if metadata_bytes:
        header["__metadata__"] = {"pad": "x" * metadata_bytes}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + bytes(4 * tensors)


@pytest.mark.parametrize("tensors, metadata, message", [
    (30_000, 0, "has 30000 tensors; at most 20000 are accepted"),
    (1, 17 * 2**20, "header is 17 MB; at most 16 MB is accepted"),
])
def test_an_add_on_with_an_oversized_header_is_refused(client, alice, tensors, metadata, message):
    client.force_login(alice)
    file = SimpleUploadedFile("big.safetensors", safetensors_with(tensors, metadata))
    answer = client.post("/addons/", {"kind": "lora", "name": "big", "file": file})
    assert message in answer.content.decode() and not AddOn.objects.exists()


@pytest.mark.parametrize("name", ["style\u202egnp.exe", "zero\u200bwidth", "soft\u00adhyphen"])
def test_names_with_control_or_format_characters_are_refused(client, alice, addon_files, test_model_folder, name):
    client.force_login(alice)
    file = SimpleUploadedFile("x.safetensors", addon_files["lora"].read_bytes())
    answer = client.post("/addons/", {"kind": "lora", "name": name, "file": file})
    assert "can&#x27;t name a LoRA: use up to 100 visible characters" in answer.content.decode()
    assert not AddOn.objects.exists()
    with pytest.raises(ValueError, match="use visible characters"):
        checkpoint_register(name=name, source=str(test_model_folder))


# 8. Engine errors ------------------------------------------------------------------------------------

def test_a_job_that_fails_in_the_engine_tells_its_owner_one_plain_sentence(client, alice, admin, tiny_families):
    # A newcomer's file: a tiny SD 1.x checkpoint registered without its own config, so the
    # family's usual config expects other shapes and the library's loader says so at length.
    broken = checkpoint_register(name="broken", source=str(tiny_families["sd1"]["file"]))
    job = job_submit(user=alice, params=params(broken, num_images=1))
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == "failed" and job.error == (
        "Generation failed: model 'broken' could not be loaded: its weights don't fit its family's layout (staff "
        "see the details)")
    assert "expected shape" in job.error_detail
    client.force_login(alice)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key_create(user=alice, name='k')[1]}")
    shown = client.get(f"/jobs/{job.pk}/").content.decode() + json.dumps(api.get(f"/api/v1/jobs/{job.pk}/").json())
    assert "could not be loaded" in shown and "expected shape" not in shown and "/tmp" not in shown
    client.force_login(admin)
    assert "expected shape" in client.get(f"/admin/generation/job/{job.pk}/change/").content.decode()
