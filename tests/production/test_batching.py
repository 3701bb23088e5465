"""Cross-user batching on real PostgreSQL and Redis with two GPU-host workers (each in its own
process, batching up to 4 images): every job ends once, charged once, with its own pictures and
previews, equal to the same job made alone."""

import subprocess

from tests.support import wait_until

SUBMIT = """
    from django.contrib.auth.models import User
    from django.db import transaction
    from generation.library.checkpoints import checkpoint_ensure_test_model
    from generation.jobs.submit import job_submit

    checkpoint = checkpoint_ensure_test_model()
    users = [User.objects.create_user(f"batcher{i}") for i in range(4)]
    jobs = []
    with transaction.atomic():  # all queued at once: the first claim sees them all
        for k in range(8):
            jobs.append(job_submit(user=users[k % 4], params={
                "prompt": f"job {k}: " + ["a fox", "a teapot", "a lighthouse", "a red barn"][k % 4] * (1 + 40 * (k == 3)),
                "negative_prompt": "blurry" * (k % 2), "checkpoint": checkpoint, "width": 256, "height": 256,
                "steps": 4, "guidance_scale": 3 + k, "scheduler": "DPM++ 2M Karras", "seed": 100 + k,
                "num_images": 1 + (k == 5)}))
    print(json.dumps([str(j.pk) for j in jobs]))
"""

CHECK = """
    import io
    import numpy as np
    from PIL import Image
    from generation.engine import GenerationRequest, PreviewSettings, generate
    from generation.credits.models import CreditEntry
    from generation.jobs.models import Job

    def pixels(data):
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)

    out = {}
    for job in Job.objects.filter(pk__in=IDS).order_by("created_at"):
        previews = []
        alone = generate(GenerationRequest(model=job.checkpoint.model_ref(), **job.params()),
                         watermark_payloads=[i.to_bytes(8, "big") for i in job.image_ids],
                         preview=PreviewSettings(min_interval=0), on_preview=lambda *a: previews.append(a[2]))
        stored = [image.png.open("rb").read() for image in job.images.order_by("index")]
        out[str(job.pk)] = {
            "user": job.user_id, "status": job.status, "batch": job.batch_size, "worker": job.worker.split("@")[0],
            "owners": sorted({image.owner_id == job.user_id for image in job.images.all()}),
            "images": len(stored), "charges": CreditEntry.objects.filter(job=job, kind="charge").count(),
            "refunds": CreditEntry.objects.filter(job=job, kind="refund").count(),
            "balance": job.user.credits.balance, "cost": job.cost,
            "worst": max(int(np.abs(pixels(s) - np.asarray(a, dtype=np.int16)).max())
                         for s, a in zip(stored, alone.images)),
            "preview": float(np.abs(pixels(bytes(job.preview)) - pixels(previews[-1])).mean()),
        }
    print(json.dumps(out))
"""


def test_two_workers_batch_users_jobs_without_mixing_or_double_charging(production):
    log = open(production.env["SDWEB_VAR_DIR"] + "/batching.log", "a")
    env = {**production.env, "SDWEB_BATCH_MAX": "4", "SDWEB_BATCH_WAIT_MS": "300", "SDWEB_TORCH_THREADS": "1"}
    workers = [production.worker(name, log, env=env) for name in ("gpu1", "gpu2")]
    try:
        ids = production.script(SUBMIT)
        wait_until(lambda: production.query("SELECT count(*) FROM generation_job WHERE id = ANY(%s::uuid[]) "
                                            "AND status = 'succeeded'", ids)[0][0] == len(ids), timeout=240)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                worker.kill()
        log.close()

    jobs = production.script(CHECK.replace("IDS", repr(ids)))
    assert all(j["status"] == "succeeded" and j["owners"] == [True] for j in jobs.values()), jobs
    assert [j["images"] for j in jobs.values()] == [1, 1, 1, 1, 1, 2, 1, 1]
    assert all((j["charges"], j["refunds"]) == (1, 0) for j in jobs.values())
    # Four users, two jobs each, started with the same credits: each paid exactly for its two jobs.
    spent = {}
    for j in jobs.values():
        spent[j["user"]] = (j["balance"], spent.get(j["user"], (0, 0))[1] + j["cost"])
    assert len({balance + cost for balance, cost in spent.values()}) == 1, jobs
    assert max(j["batch"] for j in jobs.values()) > 1  # it did batch
    assert all(j["worst"] <= 2 for j in jobs.values()), jobs  # each picture as the job makes it alone
    assert all(j["preview"] < 2 for j in jobs.values()), jobs  # each preview its own job's
