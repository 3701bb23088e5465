"""SD 3.5 checkpoints in the studio: registered from the files people have, their jobs submitted
through the form's checks and the REST API with their family's defaults, and made by the real
worker, alone and batched with another user's."""

import io

import pytest
from PIL import Image as PILImage

from generation.credits.models import CreditEntry
from generation.engine import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run


@pytest.fixture
def sd3(db, tiny_sd3, settings):
    """Stability's SD 3.5 Large file (the MMDiT and its VAE) and a Medium transformer file alone,
    their text encoders found in the text-encoder folder and the Medium's VAE beside them."""
    from generation.library.checkpoints import checkpoint_register

    texts = tiny_sd3["sd35-large"]["text_encoders"]
    settings.SDWEB = {**settings.SDWEB, "TEXT_ENCODERS_DIR": texts, "MODELS_DIR": texts.parent}
    return {"large": checkpoint_register(name="sd3.5_large", source=str(tiny_sd3["sd35-large"]["checkpoint"]),
                                         config=str(tiny_sd3["sd35-large"]["config"])),
            "medium": checkpoint_register(name="sd3.5_medium", source=str(tiny_sd3["sd35-medium"]["transformer"]),
                                          config=str(tiny_sd3["sd35-medium"]["config"]))}


def run(job):
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    with job.images.first().png.open("rb") as file:
        return parse_parameters(PILImage.open(io.BytesIO(file.read())).info["parameters"])


def test_sd3_files_register_with_their_familys_size_steps_and_cfg_and_find_their_parts(sd3, tiny_sd3):
    large, medium = sd3["large"], sd3["medium"]
    assert (large.family, large.default_width, large.default_steps, large.guidance) == ("sd35-large", 1024, 28, 3.5)
    assert (medium.family, medium.default_steps, medium.guidance) == ("sd35-medium", 40, 4.5)
    found = dict(medium.model_ref().parts)
    assert [found[p].rsplit("/", 1)[-1] for p in ("text_encoder", "text_encoder_2", "text_encoder_3", "vae")] == [
        "clip_l.safetensors", "clip_g.safetensors", "t5xxl_fp16.safetensors", "sd3.5_vae.safetensors"]
    assert found["tokenizer_3"].endswith("t5_tokenizer")


def test_the_rest_api_gives_an_sd3_job_its_familys_cfg_and_steps_and_runs_its_negative_prompt(api, sd3):
    response = api.post("/api/v1/jobs/", {"prompt": "a blue sky", "negative_prompt": "clouds", "checkpoint": "sd3.5_large",
                                          "width": 256, "height": 256, "scheduler": "Euler"}, format="json")
    assert response.status_code == 201, response.data
    assert (response.data["steps"], response.data["guidance_scale"]) == (28, 3.5)
    job = Job.objects.get()
    Job.objects.filter(pk=job.pk).update(steps=2)  # the family's 28 steps, made in 2 here
    parameters = run(job)
    assert (parameters["cfg_scale"], parameters["negative_prompt"], parameters["model"]) == (3.5, "clouds", "sd3.5_large")


@pytest.mark.parametrize("params, field", [
    ({"width": 264}, "width"),
    ({"scheduler": "DPM++ 2M Karras"}, "scheduler"),
    ({"clip_skip": 2, "prompt": "[a cat:a dog:0.5]"}, "prompt"),
])
def test_what_sd3_does_not_take_is_refused_at_submit_naming_the_field_and_charging_nothing(alice, sd3, params, field):
    before = CreditEntry.objects.count()
    with pytest.raises(Refused) as refused:
        job_submit(user=alice, params={"prompt": "a red house", "checkpoint": sd3["medium"], "width": 256, "height": 256,
                                       "steps": 2, "guidance_scale": 4.5, "scheduler": "Euler", "seed": 3,
                                       "num_images": 1, **params})
    assert refused.value.field == field and "SD 3.5" in str(refused.value)
    assert not Job.objects.exists() and CreditEntry.objects.count() == before


def test_two_users_sd3_jobs_with_their_own_cfg_and_negative_prompts_share_one_run(alice, carol, sd3):
    from generation.jobs import worker
    from generation.jobs.queue import jobs_claim

    def submit(user, **fields):
        return job_submit(user=user, params={"prompt": "a red house", "checkpoint": sd3["medium"], "width": 256,
                                             "height": 256, "steps": 2, "guidance_scale": 4.5, "scheduler": "Euler",
                                             "seed": 3, "num_images": 1, **fields})

    jobs = [submit(alice), submit(carol, prompt="a blue sky", negative_prompt="clouds", guidance_scale=7)]
    batch = jobs_claim(worker="w", images=8)
    assert {job.pk for job in batch} == {job.pk for job in jobs}
    worker.jobs_run(batch)
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.batch_size) == ("succeeded", 2), job.error
    with jobs[1].images.first().png.open("rb") as file:
        assert "CFG scale: 7, " in PILImage.open(io.BytesIO(file.read())).info["parameters"]


def test_an_sd3_lora_from_the_library_goes_into_the_job_and_an_sd_lora_is_refused(alice, sd3, tiny_sd3, tmp_path,
                                                                                  addon_files):
    from diffusers import SD3Transformer2DModel

    from generation.engine.testsd3 import make_tiny_sd3_loras
    from generation.library.addons import addon_register

    transformer = SD3Transformer2DModel.from_pretrained(tiny_sd3["sd35-medium"]["folder"], subfolder="transformer")
    lora = addon_register(kind="lora", name="ink", source=str(make_tiny_sd3_loras(transformer, tmp_path)["kohya"]))
    addon_register(kind="lora", name="sd-style", source=str(addon_files["lora"]))
    assert lora.get_family_display() == "SD 3.5"
    params = {"checkpoint": sd3["medium"], "width": 256, "height": 256, "steps": 2, "guidance_scale": 4.5,
              "scheduler": "Euler", "seed": 3, "num_images": 1}
    parameters = run(job_submit(user=alice, params={"prompt": "a red house <lora:ink:0.8>", **params}))
    assert parameters["Lora hashes"] == f"ink: {lora.sha256[:12]}"
    with pytest.raises(Refused, match="is for SD 1.x") as refused:
        job_submit(user=alice, params={"prompt": "a red house <lora:sd-style>", **params})
    assert refused.value.field == "prompt"
