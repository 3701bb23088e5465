"""Jobs on single-file checkpoints of every kind, through the real submit and run."""

import io

import pytest
from PIL import Image as PILImage

from generation.engine import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run


@pytest.fixture
def sdxl(db, tiny_families):
    from generation.library.checkpoints import checkpoint_register

    def register(family, name):
        files = tiny_families[family]
        return checkpoint_register(name=name, source=str(files["file"]), config=str(files["config"]))

    return {"base": register("sdxl", "xl-base"), "refiner": register("sdxl-refiner", "xl-refiner"),
            "inpaint": register("sdxl-inpaint", "xl-inpaint"), "sd1": register("sd1", "sd15")}


def run(user, **params):
    job = job_submit(user=user, params={"prompt": "a lighthouse", "width": 256, "height": 256, "steps": 3,
                                        "guidance_scale": 7, "scheduler": "Euler a", "seed": 5, "num_images": 1,
                                        **params})
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    with job.images.get().png.open("rb") as file:
        return job, parse_parameters(PILImage.open(io.BytesIO(file.read())).info["parameters"])


def test_an_sdxl_job_with_its_refiner_is_one_job_charged_once_and_says_what_made_it(alice, sdxl):
    job, parameters = run(alice, checkpoint=sdxl["base"], refiner="xl-refiner", refiner_switch_at=0.7)
    assert job.credit_entries.filter(kind="charge").count() == 1 and job.refiner == sdxl["refiner"]
    assert (parameters["model"], parameters["model_hash"]) == ("xl-base", sdxl["base"].short_hash)
    assert parameters["Refiner"] == sdxl["refiner"].title and parameters["Refiner switch at"] == "0.7"


def test_an_inpainting_checkpoint_repaints_under_a_mask(alice, sdxl):
    start, mask = io.BytesIO(), io.BytesIO()
    PILImage.effect_noise((256, 256), 50).convert("RGB").save(start, "PNG")
    white = PILImage.new("L", (256, 256), 0)
    white.paste(255, (64, 64, 192, 192))
    white.save(mask, "PNG")
    job, parameters = run(alice, checkpoint=sdxl["inpaint"], init_image=start.getvalue(), mask=mask.getvalue())
    assert job.mode == "inpaint" and parameters["model"] == "xl-inpaint" and parameters["Mask blur"] == "4"


def test_clip_skip_goes_from_the_job_into_the_image(alice, sdxl):
    assert run(alice, checkpoint=sdxl["sd1"], clip_skip=2)[1]["clip_skip"] == 2


@pytest.mark.parametrize("params, field, message", [
    ({"checkpoint": "xl-refiner"}, "checkpoint", "SDXL refiner: it can't make an image from text alone"),
    ({"checkpoint": "xl-inpaint"}, "checkpoint", "SDXL inpainting: it can't make an image without a mask"),
    ({"checkpoint": "sd15", "refiner": "xl-refiner"}, "refiner", "can't refine sd15"),
    ({"checkpoint": "xl-base", "refiner": "nope"}, "refiner", "No enabled checkpoint has that name"),
    ({"checkpoint": "xl-base", "clip_skip": 13}, "clip_skip", "from 1 to 12"),
    ({"checkpoint": "xl-base", "refiner_switch_at": 1.0}, "refiner_switch_at", "between 0 and 1"),
])
def test_what_a_checkpoint_cannot_do_is_refused_naming_the_field_and_charging_nothing(alice, sdxl, params, field,
                                                                                        message):
    balance = alice.credits.balance
    with pytest.raises(Refused, match=message) as refusal:
        job_submit(user=alice, params={"prompt": "a lighthouse", "width": 256, "height": 256, **params})
    assert refusal.value.field == field
    alice.credits.refresh_from_db()
    assert alice.credits.balance == balance and not Job.objects.exists()


def test_the_rest_api_lists_hashes_and_sizes_an_sdxl_job_at_its_own_size(alice, sdxl):
    from rest_framework.test import APIClient

    client = APIClient()
    client.force_authenticate(alice)
    listed = {c["name"]: c for c in client.get("/api/v1/checkpoints/").data}
    assert listed["xl-base"]["hash"] == sdxl["base"].short_hash and listed["xl-base"]["family"] == "sdxl"
    assert listed["xl-base"]["sha256"] == sdxl["base"].sha256 and "source" not in listed["xl-base"]
    job = client.post("/api/v1/jobs/", {"prompt": "a lighthouse", "checkpoint": "xl-base", "refiner": "xl-refiner",
                                        "clip_skip": 2}, format="json").data
    assert (job["width"], job["height"], job["refiner"], job["clip_skip"]) == (1024, 1024, "xl-refiner", 2)


@pytest.fixture
def vae(db, tmp_path):
    from generation.engine.testmodel import make_tiny_vae
    from generation.library.checkpoints import vae_register

    return vae_register(name="vae-ft-mse.safetensors", source=str(make_tiny_vae("sd1", tmp_path / "vae.safetensors")))


def test_a_checkpoints_default_vae_decodes_its_jobs_unless_a_job_says_none(alice, sdxl, vae):
    sdxl["sd1"].default_vae = vae
    sdxl["sd1"].save()
    job, parameters = run(alice, checkpoint=sdxl["sd1"])
    assert job.vae == vae and parameters["VAE"] == "vae-ft-mse.safetensors"
    assert parameters["VAE hash"] == vae.sha256[:10]
    job, parameters = run(alice, checkpoint=sdxl["sd1"], vae="None")
    assert job.vae is None and "VAE" not in parameters


def test_an_unknown_vae_is_refused_naming_the_field(alice, sdxl):
    with pytest.raises(Refused, match="No enabled VAE") as refusal:
        job_submit(user=alice, params={"prompt": "a lighthouse", "checkpoint": "sd15", "vae": "nope.safetensors"})
    assert refusal.value.field == "vae"


def test_vaes_are_listed_for_rest_and_a1111_clients_and_taken_from_override_settings(alice, sdxl, vae):
    from rest_framework.test import APIClient

    from generation.dialects.a1111 import translate

    client = APIClient()
    client.force_authenticate(alice)
    assert client.get("/api/v1/vaes/").data == [{"name": vae.name, "hash": vae.sha256[:10], "sha256": vae.sha256}]
    assert client.get("/sdapi/v1/sd-vae").data == [{"model_name": vae.name, "filename": vae.name}]
    params, _ = translate({"prompt": "x", "override_settings": {"sd_vae": vae.name}}, alice)
    assert params["vae"] == vae
    assert "vae" not in translate({"prompt": "x", "override_settings": {"sd_vae": "Automatic"}}, alice)[0]
    with pytest.raises(ValueError, match="override_settings.sd_vae: no VAE called 'other.pt'"):
        translate({"prompt": "x", "override_settings": {"sd_vae": "other.pt"}}, alice)
