"""Upscaler models (ESRGAN family) as operators have them: files in models/ESRGAN scanned like the
other add-ons, listed by hires fix, the image page's Upscale and A1111's /sdapi/v1/upscalers,
and run by the worker for hires fix and Upscale jobs."""

import base64
import io
import json

import pytest
from PIL import Image as PILImage
from rest_framework.test import APIClient

from generation.engine.metadata import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run
from generation.library.addons import addons_scan
from generation.library.models import AddOn
from tests.support import params, stored_picture

pytestmark = pytest.mark.django_db


def run(job) -> Job:
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    return job


def test_the_scan_registers_esrgan_files_and_every_list_offers_them(esrgan_folder, alice, client):
    found, skipped = addons_scan()
    assert sorted((a.kind, a.name, a.scale, a.family) for a in found) == [
        ("upscaler", "2x-TinyReal", 2, "any"), ("upscaler", "4x-Tiny", 4, "any")]
    assert "not an ESRGAN" in skipped["ESRGAN/stray.safetensors"]
    listed = APIClient()
    listed.force_authenticate(alice)
    names = {u["name"]: u["scale"] for u in listed.get("/sdapi/v1/upscalers").json()}
    assert names["4x-Tiny"] == 4 and names["2x-TinyReal"] == 2 and "Lanczos" in names
    client.force_login(alice)
    page = client.get("/generate/").content.decode()
    assert '<option value="4x-Tiny">4x-Tiny</option>' in page.split('name="hr_upscaler"')[1].split("</select>")[0]


def test_hires_fix_and_upscale_run_the_model_and_say_so(esrgan_folder, alice, checkpoint, client):
    addons_scan()
    job = run(job_submit(user=alice, params=params(checkpoint, num_images=1, steps=2, enable_hr=True, hr_scale=1.5,
                                                  hr_upscaler="4x-Tiny", hr_second_pass_steps=2)))
    image = job.images.get()
    assert (image.width, image.height) == (384, 384)
    assert parse_parameters(stored_picture(image).info["parameters"])["Hires upscaler"] == "4x-Tiny"
    assert [(a["kind"], a["name"]) for a in job.addons] == [("upscaler", "4x-Tiny")]  # the trace names its file
    client.force_login(alice)
    page = client.get(f"/images/{image.hex_id}/").content.decode()
    assert "<option>2x-TinyReal</option>" in page
    client.post(f"/images/{image.hex_id}/upscale/", {"upscale_by": "2", "upscaler": "2x-TinyReal"})
    larger = run(Job.objects.get(upscale_by=2)).images.get()
    assert (larger.width, larger.height) == (768, 768)
    assert "Postprocess upscaler: 2x-TinyReal" in stored_picture(larger).info["parameters"]


def test_an_unknown_or_gone_upscaler_is_refused_by_name_and_the_sync_extras_send_models_to_jobs(
        esrgan_folder, alice, checkpoint):
    addons_scan()
    with pytest.raises(Refused, match="No Upscaler called 'R-ESRGAN 4x[+]'") as refused:
        job_submit(user=alice, params=params(checkpoint, enable_hr=True, hr_upscaler="R-ESRGAN 4x+"))
    assert refused.value.field == "hr_upscaler"
    job = job_submit(user=alice, params=params(checkpoint, num_images=1, steps=2, enable_hr=True,
                                               hr_upscaler="4x-Tiny"))
    (esrgan_folder / "4x-Tiny.pth").unlink()
    AddOn.objects.filter(name="4x-Tiny").delete()  # removed from the library while the job waited
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == "failed" and job.error.endswith("Upscaler '4x-Tiny' is no longer in the library")
    a1111 = APIClient()
    a1111.force_authenticate(alice)
    out = io.BytesIO()
    PILImage.new("RGB", (64, 64)).save(out, "PNG")
    response = a1111.post("/sdapi/v1/extra-single-image", {"image": base64.b64encode(out.getvalue()).decode(),
                                                           "upscaling_resize": 2, "upscaler_1": "2x-TinyReal"},
                          format="json")
    assert response.status_code == 400 and "as hires fix's upscaler or the image page's Upscale" in json.loads(
        response.content)["detail"]
