"""Cross-user batching in the studio: the claim takes compatible jobs fairly, and each job of a
batch is charged, stored, previewed and cancelled as if it ran alone."""

import numpy as np
import pytest
from django.contrib.auth.models import User
from django.db.models import F
from PIL import Image as PILImage

from generation.credits.models import CreditEntry
from generation.jobs import engine_setup, queue, worker
from generation.jobs.models import Job
from generation.jobs.queue import job_cancel, jobs_claim
from generation.jobs.submit import job_submit
from tests.support import assert_ledger_balanced, params, refunds


@pytest.fixture
def bob(db):
    """Here a user with the starting credits."""
    return User.objects.create_user("bob", "bob@example.com", "bob-password-1")


def test_a_claim_takes_the_fairest_compatible_jobs_up_to_the_image_limit(alice, bob, carol, checkpoint, settings):
    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 10}
    alices = [job_submit(user=alice, params=params(checkpoint, num_images=1, seed=s)) for s in range(3)]
    other_size = job_submit(user=bob, params=params(checkpoint, num_images=1, width=320))
    bobs = job_submit(user=bob, params=params(checkpoint, num_images=2, guidance_scale=4))
    carols = job_submit(user=carol, params=params(checkpoint, num_images=1, prompt="a fox"))

    batch = jobs_claim(worker="w", images=4)
    # Alice's oldest first; then one job each for Bob and Carol before Alice's second: her jobs in
    # the batch count against her share. Bob's 320 px job can't share the worker.
    assert [j.pk for j in batch] == [alices[0].pk, bobs.pk, carols.pk]
    assert all((j.status, j.attempts, j.worker) == ("running", 1, "w") for j in batch)
    assert Job.objects.filter(status="queued").count() == 3 and other_size.pk in {
        j.pk for j in Job.objects.filter(status="queued")}


def test_jobs_that_cannot_share_a_run_are_claimed_alone(alice, bob, checkpoint):
    job_submit(user=alice, params=params(checkpoint, enable_hr=True, hr_scale=1.5))
    job_submit(user=bob, params=params(checkpoint))
    assert len(jobs_claim(images=8)) == 1
    assert len(jobs_claim(images=8)) == 1


def test_each_job_of_a_batch_ends_as_if_it_ran_alone(alice, bob, carol, checkpoint, monkeypatch):
    jobs = [job_submit(user=alice, params=params(checkpoint, num_images=2, seed=1, guidance_scale=5)),
            job_submit(user=bob, params=params(checkpoint, num_images=1, seed=2, prompt="a fox in snow")),
            job_submit(user=carol, params=params(checkpoint, num_images=1, seed=3, prompt="a teapot"))]
    # Each image carries its own id in its watermark; compared here are the pictures under it.
    monkeypatch.setattr("generation.jobs.finish.embed_watermark", lambda image, payload, **_: image)
    previews = []
    monkeypatch.setattr(worker, "job_event_soon", lambda job_id, event: previews.append((job_id, event["type"])))
    worker.jobs_run(jobs_claim(images=8))

    batched = {}
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.batch_size, job.error) == ("succeeded", 3, "")
        assert [i.owner_id for i in job.images.all()] == [job.user_id] * job.num_images
        assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1 and refunds(job) == 0
        assert (job.pk, "progress") in previews and job.previews_sent > 0
        batched[job.pk] = [np.asarray(PILImage.open(i.png), dtype=np.int16) for i in job.images.order_by("index")]
    # The same jobs again, one at a time: the same pictures.
    for job in jobs:
        again = job_submit(user=job.user, params={**{f: getattr(job, f) for f in Job.PARAMS}, "checkpoint": checkpoint})
        worker.jobs_run(jobs_claim(images=1))
        again.refresh_from_db()
        assert again.batch_size == 1
        for ours, alone in zip(batched[job.pk], again.images.order_by("index")):
            assert np.abs(ours - np.asarray(PILImage.open(alone.png), dtype=np.int16)).max() <= 2
    assert_ledger_balanced()


def test_a_cancel_ends_one_job_at_once_and_the_batch_goes_on(alice, bob, checkpoint, monkeypatch):
    alices = job_submit(user=alice, params=params(checkpoint, steps=4))
    bobs = job_submit(user=bob, params=params(checkpoint, steps=4, seed=9))
    cancelled_at = []

    def preview(self, k, step, total, image):
        if self.jobs[k].pk == alices.pk and step == 1:
            job_cancel(user=alice, job_id=alices.pk)
        if self.jobs[k].pk == bobs.pk and step == 3:
            cancelled_at.append(Job.objects.get(pk=alices.pk).status)  # ended before the batch did

    monkeypatch.setattr(worker.RunTracker, "preview", preview)
    monkeypatch.setattr(worker.settings, "SDWEB", {**worker.settings.SDWEB, "PREVIEW_INTERVAL": 0})
    worker.jobs_run(jobs_claim(images=8))
    alices.refresh_from_db(), bobs.refresh_from_db()
    assert cancelled_at == ["cancelled"]
    assert (alices.status, alices.images.count(), refunds(alices)) == ("cancelled", 0, 1)
    assert (bobs.status, bobs.images.count(), refunds(bobs)) == ("succeeded", 2, 0)
    assert_ledger_balanced()


def test_a_job_whose_input_is_gone_fails_alone(alice, bob, checkpoint, library):
    needs_it = job_submit(user=alice, params=params(checkpoint, negative_prompt="tinyneg"))
    plain = job_submit(user=bob, params=params(checkpoint, seed=4))
    library["embedding"].delete()  # gone from the library between submit and run
    worker.jobs_run(jobs_claim(images=8))
    needs_it.refresh_from_db(), plain.refresh_from_db()
    assert needs_it.status == "failed" and "no longer in the library" in needs_it.error and refunds(needs_it) == 1
    assert (plain.status, plain.images.count(), refunds(plain)) == ("succeeded", 2, 0)
    assert_ledger_balanced()


def test_a_short_batch_waits_for_company_first(alice, bob, checkpoint, monkeypatch):
    first = job_submit(user=alice, params=params(checkpoint))
    arrived = []

    def meanwhile(seconds):  # instead of sleeping: Bob's compatible job arrives during the wait
        assert 0 < seconds <= 0.5
        arrived.append(job_submit(user=bob, params=params(checkpoint, seed=3)))

    monkeypatch.setattr(queue.time, "sleep", meanwhile)
    assert [j.pk for j in jobs_claim(images=8, wait_ms=500)] == [first.pk, arrived[0].pk]
    assert jobs_claim(images=8, wait_ms=0) == []


def test_a_batch_member_taken_over_by_another_worker_is_left_to_it(alice, bob, checkpoint, monkeypatch):
    alices = job_submit(user=alice, params=params(checkpoint, steps=3))
    bobs = job_submit(user=bob, params=params(checkpoint, steps=3, seed=9))

    def preview(self, k, step, total, image):
        if self.jobs[k].pk == alices.pk and step == 1:  # its lease ran out and another worker claimed it
            Job.objects.filter(pk=alices.pk).update(attempts=F("attempts") + 1, worker="other")

    monkeypatch.setattr(worker.RunTracker, "preview", preview)
    monkeypatch.setattr(worker.settings, "SDWEB", {**worker.settings.SDWEB, "PREVIEW_INTERVAL": 0})
    worker.jobs_run(jobs_claim(worker="this", images=8))
    alices.refresh_from_db(), bobs.refresh_from_db()
    assert (alices.status, alices.worker, alices.images.count(), refunds(alices)) == ("running", "other", 0, 0)
    assert (bobs.status, bobs.images.count()) == ("succeeded", 2)


def test_sdweb_compile_warms_up_each_size_at_batch_1_and_the_limit(checkpoint, monkeypatch, settings):
    """torch.compile itself is too slow for the CPU suite (tens of seconds a shape): recorded here,
    measured by bench/engine_gpu.py."""
    settings.SDWEB = {**settings.SDWEB, "COMPILE": True, "COMPILE_SIZES": [(256, 256), (320, 256)], "BATCH_MAX": 3}
    compiled, runs = [], []
    monkeypatch.setattr(engine_setup, "compile_unet", lambda model: compiled.append(model.name))
    monkeypatch.setattr(engine_setup, "generate_batch", lambda requests, **_: runs.append(
        [(r.width, r.height, r.model.name) for r in requests]))
    engine_setup.engine_warm_up()
    assert compiled == [checkpoint.name]
    assert [(len(r), r[0][:2]) for r in runs] == [(1, (256, 256)), (3, (256, 256)), (1, (320, 256)), (3, (320, 256))]
    assert {name for r in runs for _, _, name in r} == {checkpoint.name}


def test_one_jobs_storage_error_fails_that_job_alone(alice, bob, carol, checkpoint, monkeypatch):
    from generation.jobs import finish

    jobs = [job_submit(user=user, params=params(checkpoint, seed=s)) for s, user in enumerate((alice, bob, carol))]
    save, written = finish.image_files_save, []

    def full_disk_for_bob(**files):
        if files["image_id"] in jobs[1].image_ids[1:]:  # his first image was written, then the disk was full
            raise OSError("No space left on device")
        written.append(save(**files))
        return written[-1]

    monkeypatch.setattr(finish, "image_files_save", full_disk_for_bob)
    worker.jobs_run(jobs_claim(images=8))
    for job in jobs:
        job.refresh_from_db()
    assert [(j.status, j.images.count(), refunds(j)) for j in jobs] == [
        ("succeeded", 2, 0), ("failed", 0, 1), ("succeeded", 2, 0)]
    assert "could not be stored" in jobs[1].error and "space" not in jobs[1].error  # nothing of the server shown
    from django.core.files.storage import default_storage

    bobs = [names for names in written if any(f"{i:016x}" in str(names) for i in jobs[1].image_ids)]
    assert bobs and not any(default_storage.exists(name) for names in bobs for name in names.values())
    assert_ledger_balanced()


def test_a_newcomer_is_considered_however_deep_the_queue(alice, checkpoint, settings):
    """20 users with 10 jobs each, all of whom have had jobs started lately; a newcomer's job is
    the fairest, though 200 older jobs wait (the claim once looked at the 200 oldest only)."""
    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 100}
    regulars = User.objects.bulk_create([User(username=f"regular{n}") for n in range(20)])
    template = job_submit(user=alice, params=params(checkpoint, num_images=1))
    fields = {f: getattr(template, f) for f in Job.PARAMS} | {"checkpoint": checkpoint, "cost": 1}
    from django.utils import timezone

    Job.objects.bulk_create([Job(user=u, status="succeeded", started_at=timezone.now(), image_ids=[0], **fields)
                             for u in regulars] + [Job(user=u, image_ids=[n], **fields)
                                                   for u in regulars for n in range(10)])
    Job.objects.filter(pk=template.pk).update(created_at=timezone.now())  # alice's: the newest job of all
    assert [j.pk for j in jobs_claim(images=1)] == [template.pk]


def test_small_users_start_within_one_batch_of_a_big_one(alice, bob, carol, checkpoint, settings):
    """SwarmUI users' case (#1551): A queues 32, B 2, C 3, all in one role."""
    from django.contrib.auth.models import Group

    from generation.accounts.models import Role

    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 40}
    role = Role.objects.create(group=Group.objects.create(name="everyone"), active_jobs=40)
    role.group.user_set.add(alice, bob, carol)
    big = [job_submit(user=alice, params=params(checkpoint, num_images=1, seed=s)) for s in range(32)]
    small = [job_submit(user=u, params=params(checkpoint, num_images=1, seed=s)) for u, n in ((bob, 2), (carol, 3))
             for s in range(n)]
    first = jobs_claim(images=4)
    second = jobs_claim(images=4)
    assert first[0].pk == big[0].pk and {j.user_id for j in first} == {alice.pk, bob.pk, carol.pk}
    started = {j.pk for j in first + second}
    assert sum(j.pk in started for j in small) == 5 and sum(j.pk in started for j in big) == 3


def test_per_step_work_is_one_query_for_the_whole_batch(alice, bob, carol, checkpoint, monkeypatch, settings):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.SDWEB = {**settings.SDWEB, "PROGRESS_SAVE_SECONDS": 3600}  # saved once, when the run ends
    jobs = [job_submit(user=user, params=params(checkpoint, steps=6, seed=s)) for s, user in enumerate((alice, bob, carol))]
    calls, queries = [], []
    for name in ("stopped", "preview"):
        def counted(self, *args, real=getattr(worker.RunTracker, name), name=name):
            with CaptureQueriesContext(connection) as made:
                result = real(self, *args)
            calls.append(name)
            queries.extend(made.captured_queries)
            return result
        monkeypatch.setattr(worker.RunTracker, name, counted)
    worker.jobs_run(jobs_claim(images=8))
    assert calls.count("preview") == 3 * 6  # every job's every step previewed (tests send every step)...
    assert len(queries) == calls.count("stopped") <= 6 + 1  # ...and per step one query for the batch
    for job in jobs:
        job.refresh_from_db()
        assert (job.status, job.progress_step, job.previews_sent) == ("succeeded", 6, 6)  # all saved at the end


def test_the_queue_and_the_engine_ask_one_batch_rule_for_every_setting(alice, checkpoint, library, settings):
    """For every setting a submission takes (and the models and add-ons it names), two jobs share a
    run in the queue's eyes (Job.batch_key) exactly when the engine would denoise the requests the
    worker makes of them together (engine.request.batch_key)."""
    from generation.engine.request import SETTINGS, batch_key
    from generation.library.checkpoints import checkpoint_register

    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 100}
    copy = checkpoint_register(name="same-file-other-name", source=checkpoint.source)
    changes = {"prompt": "a fox", "negative_prompt": "fog", "width": 320, "height": 320, "steps": 5, "guidance_scale": 4,
               "scheduler": "DPM++ 2M Karras", "seed": 9, "subseed": 3, "subseed_strength": 0.5, "num_images": 1,
               "clip_skip": 2, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos", "hr_second_pass_steps": 2,
               "denoising_strength": 0.5, "hr_resize_x": 320, "hr_resize_y": 320, "checkpoint": copy,
               "prompt ": "a lighthouse at dusk <lora:tiny-style:0.6>", "negative_prompt ": "tinyneg",
               "scheduler ": "Euler", "guidance_scale ": 1, "distilled_guidance_scale": 2}
    unchecked = set(SETTINGS) - {f.strip() for f in changes} - {"resize_mode", "mask_blur", "inpainting_fill",
                                                                  "inpaint_full_res", "inpaint_full_res_padding",
                                                                  "inpainting_mask_invert", "refiner_switch_at"}
    assert not unchecked, f"settings this test doesn't vary: {unchecked}"  # the image inputs' need a starting image
    base = job_submit(user=alice, params=params(checkpoint))
    assert base.batch_key is not None
    shared = {}
    for field, value in changes.items():
        changed = {field.strip(): value}
        other = job_submit(user=alice, params=params(changed.pop("checkpoint", checkpoint), **changed))
        queue_says = Job.objects.get(pk=base.pk).batch_key == Job.objects.get(pk=other.pk).batch_key
        engine_says = batch_key(worker._request(base)) == batch_key(worker._request(other))
        assert queue_says == engine_says, (field, value, queue_says, engine_says)
        shared[field] = queue_says
    # Both answers happen: prompts, seeds and a copy of the same file share a run; a size or a LoRA don't.
    assert shared["prompt"] and shared["seed"] and shared["checkpoint"] and shared["negative_prompt "]
    assert shared["distilled_guidance_scale"]  # FLUX.1's alone: an SD run doesn't use it
    assert not (shared["width"] or shared["steps"] or shared["prompt "] or shared["enable_hr"])
