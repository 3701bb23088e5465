"""The image checker, wired from settings: blurred previews until the images are cleared, and a
flagged image never stored, shown or kept in the gallery; its share of the cost comes back."""

import io

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery.models import Image
from generation.credits.models import CreditEntry
from generation.engine.safety import DiffusersSafetyChecker
from generation.jobs import engine_setup, worker
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import job_submit
from tests.support import assert_ledger_balanced, params, tiny_safety_checker


class FlagSecond:  # a stand-in checker with a fixed verdict, to test the share of the refund
    def check(self, images):
        return [k == 1 for k in range(len(images))]


@pytest.fixture
def checker(monkeypatch, settings, tmp_path):
    """use("strict" | "lenient" | an object): the checker that SDWEB_SAFETY_CHECKER gives."""

    def use(kind):
        if isinstance(kind, str):  # diffusers' real checker, tiny and random, from a folder as in production
            folder = tiny_safety_checker(tmp_path / kind, threshold=-100.0 if kind == "strict" else 100.0)
            settings.SDWEB = {**settings.SDWEB, "SAFETY_CHECKER": folder}
        else:
            monkeypatch.setattr(engine_setup, "image_checker", lambda setting: kind)

    return use


@pytest.fixture
def events(monkeypatch):
    sent = []
    monkeypatch.setattr(worker, "job_event_soon", lambda job_id, event: sent.append(event))
    return sent


def run_job(user, checkpoint, **overrides) -> Job:
    job = job_submit(user=user, params=params(checkpoint, **{"steps": 4, "num_images": 2, **overrides}))
    worker.job_run(job_claim())
    job.refresh_from_db()
    return job


def sharpness(preview: bytes) -> float:
    pixels = PILImage.open(io.BytesIO(preview)).convert("L")
    return float(np.abs(np.diff(np.asarray(pixels, dtype=float), axis=1)).mean())


def stored_files() -> int:
    return sum(len(default_storage.listdir(folder)[1]) for folder in ("images", "thumbnails")
               if default_storage.exists(folder))


def test_flagged_images_never_reach_storage_or_the_gallery_and_are_refunded(db, alice, checkpoint, checker, events):
    checker("strict")
    before = stored_files()
    job = run_job(alice, checkpoint)
    assert job.status == "succeeded" and "2 image(s) withheld by the safety checker" in job.error
    assert not Image.objects.exists() and stored_files() == before
    refunds = CreditEntry.objects.filter(job=job, kind="refund")
    assert [r.amount for r in refunds] == [job.cost]
    assert_ledger_balanced()


def test_previews_stay_blurred_while_a_checker_is_on(db, alice, checkpoint, checker, events):
    run_job(alice, checkpoint)
    sharp = [sharpness(e["preview"]) for e in events if e["type"] == "progress"]
    events.clear()
    checker("lenient")
    job = run_job(alice, checkpoint, seed=43)
    blurred = [sharpness(e["preview"]) for e in events if e["type"] == "progress"]
    assert job.images.count() == 2  # cleared: the images themselves are sharp and kept
    assert len(blurred) == 4 and max(blurred) < 3 < min(sharp), (blurred, sharp)


def test_only_the_flagged_share_is_refunded(db, alice, checkpoint, checker, events):
    checker(FlagSecond())
    before = stored_files()
    job = run_job(alice, checkpoint, num_images=2, width=512, height=512, steps=30)
    assert job.cost == 2 and [i.index for i in job.images.all()] == [0]
    assert list(CreditEntry.objects.filter(job=job, kind="refund").values_list("amount", flat=True)) == [1]
    assert stored_files() == before + 2  # one PNG and its thumbnail


def test_a_checker_error_fails_the_job_and_refunds_it(db, alice, checkpoint, checker, events):
    class Broken:
        def check(self, images):
            raise OSError("weights missing")

    checker(Broken())
    before = stored_files()
    job = run_job(alice, checkpoint)
    assert job.status == "failed" and "safety checker failed" in job.error
    assert stored_files() == before and CreditEntry.objects.filter(job=job, kind="refund").count() == 1


def test_the_checker_is_off_unless_settings_name_one(settings, tmp_path):
    assert settings.SDWEB["SAFETY_CHECKER"] == "off" and engine_setup.engine_configure()["checker"] is None
    settings.SDWEB = {**settings.SDWEB, "SAFETY_CHECKER": tiny_safety_checker(tmp_path, threshold=100.0)}
    assert isinstance(engine_setup.engine_configure()["checker"], DiffusersSafetyChecker)
