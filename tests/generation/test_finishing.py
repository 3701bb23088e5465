"""The finishing processes: a run's images are watermarked, stored and published in a pool of
processes beside the denoiser (real processes, started as a worker starts them), each job on its own."""

import os

import pytest
from PIL import Image as PILImage

from generation.credits.models import CreditEntry
from generation.engine import read_watermark
from generation.jobs import finish, live, worker
from generation.jobs.queue import jobs_claim
from generation.jobs.submit import job_submit
from tests.support import assert_ledger_balanced, params, refunds


@pytest.fixture
def finisher(transactional_db, settings, monkeypatch):
    """A worker's finishing pool with one process; the events it has the parent send, in order."""
    settings.SDWEB = {**settings.SDWEB, "FINISH_PROCESSES": 1}
    pool, sent = finish.Finisher(), []
    monkeypatch.setattr(worker, "FINISHER", pool)
    monkeypatch.setattr(live, "job_event", lambda job_id, event: sent.append((job_id, event["type"])))
    pool.start()
    yield sent
    pool.close()


def test_a_batch_is_finished_in_another_process_and_each_job_is_told(finisher, alice, carol, checkpoint):
    jobs = [job_submit(user=user, params=params(checkpoint, seed=s)) for s, user in enumerate((alice, carol))]
    worker.jobs_run(jobs_claim(images=8))
    worker.FINISHER.drain()
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.batch_size, job.images.count(), refunds(job)) == ("succeeded", 2, 2, 0)
        # its last step and preview, kept for reloaded pages with its publishing (not saved before)
        assert (job.progress_step, job.progress_total) == (job.steps, job.steps) and job.preview
        assert job.previews_sent >= 1
        for image in job.images.all():
            assert read_watermark(PILImage.open(image.png)) == image.id.to_bytes(8, "big")
            assert image.owner_id == job.user_id
        assert (job.pk, "finished") in finisher
    assert_ledger_balanced()


class DiesWhenUnpacked:
    """A picture that kills the finishing process that receives it, as a crash would."""

    def __reduce__(self):
        return os._exit, (3,)


def test_a_finishing_process_that_dies_sends_its_job_back_to_the_queue_charged_once(finisher, alice, checkpoint):
    job = job_submit(user=alice, params=params(checkpoint))
    claimed = jobs_claim(images=1)
    worker.FINISHER.submit(claimed[0], finish.Finishing(job_id=job.pk, attempt=1, images=[DiesWhenUnpacked()],
                                                     indexes=[0], seeds=[job.seed], texts=[""]))
    worker.FINISHER.drain()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.images.count()) == ("queued", 1, 0)
    worker.jobs_run(jobs_claim(images=1))  # a new pool process finishes it the second time
    worker.FINISHER.drain()
    job.refresh_from_db()
    assert (job.status, job.attempts, job.images.count()) == ("succeeded", 2, 2)
    assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1 and refunds(job) == 0
    assert_ledger_balanced()
