"""Two attempts of one job against each other: an attempt whose lease ran out after denoising
(its worker stalled) while another worker took the job over never replaces or deletes the files
of the attempt that won, and only the owning attempt publishes its images."""

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from generation.credits.models import CreditEntry
from generation.jobs import finish, worker
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import job_submit
from tests.support import assert_ledger_balanced, params


def stored(folder: str) -> set[str]:
    return set(default_storage.listdir(folder)[1]) if default_storage.exists(folder) else set()


@pytest.mark.parametrize("when", ["before it writes its files", "after it wrote its files"])
def test_a_losing_attempt_never_touches_the_winners_files(db, alice, checkpoint, monkeypatch, when):
    job = job_submit(user=alice, params=params(checkpoint, steps=2, num_images=2))
    first = job_claim(worker="first")
    save, winner, first_saves = finish.image_files_save, {}, []

    def take_over():
        # The first worker's lease runs out; a second worker claims the job and finishes it.
        Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
        worker.job_run(job_claim(worker="second"))
        for image in Job.objects.get(pk=job.pk).images.all():
            winner[image.png.name] = default_storage.open(image.png.name).read()
            winner[image.thumbnail.name] = default_storage.open(image.thumbnail.name).read()

    def stalled_save(**files):
        if files["attempt"] == 1 and when == "before it writes its files" and not winner:
            take_over()
        names = save(**files)
        if files["attempt"] == 1:
            first_saves.append(names)
            if when == "after it wrote its files" and len(first_saves) == 2:
                take_over()
        return names

    monkeypatch.setattr(finish, "image_files_save", stalled_save)
    worker.job_run(first)

    job.refresh_from_db()
    assert (job.status, job.attempts, job.worker) == ("succeeded", 2, "second")
    images = list(job.images.order_by("index"))
    assert len(images) == 2 and len(winner) == 4
    for name, data in winner.items():  # the winner's files, byte for byte
        assert default_storage.open(name).read() == data
    first_files = {name for names in first_saves for name in names.values()}
    assert len(first_files) == 4  # it did write its own
    assert not any(default_storage.exists(name) for name in first_files - set(winner))  # the loser's, removed
    assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1
    assert not CreditEntry.objects.filter(job=job, kind="refund").exists()
    assert_ledger_balanced()
