import pytest

from generation.runner import job_run
from generation.services import job_claim, job_submit


@pytest.fixture
def make_job(checkpoint):
    """A finished job with its images, made through the real submit and run."""

    def make_job(user, prompt="a lighthouse at dusk", num_images=2, **fields):
        job = job_submit(user=user, params={"prompt": prompt, "negative_prompt": "", "checkpoint": checkpoint,
                                            "width": 256, "height": 256, "steps": 2, "guidance_scale": 7,
                                            "scheduler": "Euler a", "seed": 7, "num_images": num_images, **fields})
        job_run(job_claim())
        job.refresh_from_db()
        assert job.status == "succeeded", job.error
        return job

    return make_job
