"""Z-Image Turbo checkpoints in the studio: a transformer file registered with its text encoder,
tokenizer and VAE found beside it, a job through the REST API with its family's defaults, made by
the real worker."""

import io

import pytest
from PIL import Image as PILImage

from generation.engine import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run


@pytest.fixture
def zimage(db, tiny_zimage, settings):
    from generation.library.checkpoints import checkpoint_register

    texts = tiny_zimage["text_encoders"]
    settings.SDWEB = {**settings.SDWEB, "TEXT_ENCODERS_DIR": texts, "MODELS_DIR": texts.parent}
    return checkpoint_register(name="z_image_turbo", source=str(tiny_zimage["transformer"]),
                               config=str(tiny_zimage["config"]))


def test_a_z_image_job_through_the_rest_api_takes_its_familys_steps_and_cfg(api, zimage):
    found = dict(zimage.model_ref().parts)
    assert [found[p].rsplit("/", 1)[-1] for p in ("text_encoder", "tokenizer", "vae")] == [
        "qwen_3_4b.safetensors", "qwen3_tokenizer", "ae.safetensors"]
    response = api.post("/api/v1/jobs/", {"prompt": "a red house", "checkpoint": "z_image_turbo", "width": 256,
                                          "height": 256, "scheduler": "Euler"}, format="json")
    assert response.status_code == 201, response.data
    assert (response.data["steps"], response.data["guidance_scale"]) == (8, 1.0)
    job = Job.objects.get()
    Job.objects.filter(pk=job.pk).update(steps=2)
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED and job.batch_size == 1, job.error
    with job.images.first().png.open("rb") as file:
        parameters = parse_parameters(PILImage.open(io.BytesIO(file.read())).info["parameters"])
    assert (parameters["cfg_scale"], parameters["steps"], parameters["model"]) == (1.0, 2, "z_image_turbo")


def test_what_z_image_does_not_take_is_refused_at_submit_naming_the_field(alice, zimage):
    with pytest.raises(Refused) as refused:
        job_submit(user=alice, params={"prompt": "a red house", "checkpoint": zimage, "width": 256, "height": 256,
                                       "steps": 2, "guidance_scale": 1, "scheduler": "DPM++ 2M", "seed": 3,
                                       "num_images": 1})
    assert refused.value.field == "scheduler" and "Z-Image" in str(refused.value)
    assert not Job.objects.exists()
