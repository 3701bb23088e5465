"""Workers die: a pool process killed mid-denoising, or a whole worker. Every job ends exactly
once (one set of images, one charge), and another worker carries on."""

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from tests.support import ROOT

SUBMIT = """
    from django.contrib.auth.models import User
    from generation.library.checkpoints import checkpoint_ensure_test_model
    from generation.jobs.submit import job_submit
    user, _ = User.objects.get_or_create(username="victim")
    job = job_submit(user=user, params={"prompt": "slow", "checkpoint": checkpoint_ensure_test_model(),
                     "width": 256, "height": 256, "steps": 150, "guidance_scale": 7, "scheduler": "Euler a",
                     "seed": 1, "num_images": 1})
    print(json.dumps(str(job.pk)))
"""
STATE = """
    SELECT j.status, j.attempts, (SELECT count(*) FROM gallery_image i WHERE i.job_id = j.id),
           (SELECT count(*) FROM generation_creditentry c WHERE c.job_id = j.id AND c.kind = 'charge'),
           (SELECT count(*) FROM generation_creditentry c WHERE c.job_id = j.id AND c.kind = 'refund'),
           j.progress_step, j.lease_until < now()
    FROM generation_job j WHERE j.id = %s
"""
COUNTS = ("status", "attempts", "images", "charges", "refunds")


class Workers:
    def __init__(self, production):
        self.production, self.processes = production, []
        self.env = {**production.env, "SDWEB_LEASE_SECONDS": "3"}

    def start(self, name):
        process = self.production.worker(name, env=self.env)
        self.processes.append(process)
        return process

    def beat(self):
        """Celery beat sending the reap sweep every second (SDWEB_REAP_EVERY_SECONDS)."""
        schedule = self.production.env["SDWEB_VAR_DIR"] + "/beat-schedule"
        self.processes.append(subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "sdweb", "beat", "-s", schedule, "--loglevel=WARNING"],
            cwd=ROOT, env={**self.env, "SDWEB_REAP_EVERY_SECONDS": "1"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))

    def state(self, job_id):
        (row,) = self.production.query(STATE, job_id)
        return dict(zip((*COUNTS, "step", "lease_over"), row))

    def wait(self, job_id, condition, timeout=180):
        """The job's counts once `condition` holds for its state (polled in the database)."""
        deadline = time.monotonic() + timeout
        while not condition(state := self.state(job_id)):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        return {k: state[k] for k in COUNTS}

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)


@pytest.fixture
def workers(production):
    workers = Workers(production)
    yield workers
    workers.stop()


@pytest.fixture
def stack(any_broker):
    """The deployment and its workers on each supported broker."""
    workers = Workers(any_broker)
    yield any_broker, workers
    workers.stop()


def pool_child(worker) -> int:
    children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the worker has no pool process"
    return int(children[0])


def test_a_pool_process_killed_mid_denoising_is_recovered_once(stack):
    production, workers = stack
    worker = workers.start("gpu1")
    job_id = production.script(SUBMIT)
    workers.wait(job_id, lambda s: s["status"] == "running" and (s["step"] or 0) >= 2)  # into denoising
    child = pool_child(worker)
    finishing = [psutil.Process(int(pid)) for pid in subprocess.run(
        ["pgrep", "-P", str(child)], capture_output=True, text=True).stdout.split()]
    assert finishing, "the pool process has no finishing process"
    os.kill(child, signal.SIGKILL)
    gone, left = psutil.wait_procs(finishing, timeout=15)
    assert not left, "the killed pool process's finishing processes live on"
    workers.wait(job_id, lambda s: s["lease_over"])  # no one renews it now (beat would run reap_jobs)
    production.script("from generation.jobs.queue import jobs_reap\nprint(json.dumps(jobs_reap()))")
    final = workers.wait(job_id, lambda s: s["status"] not in ("queued", "running"))
    assert final == {"status": "succeeded", "attempts": 2, "images": 1, "charges": 1, "refunds": 0}


def test_a_whole_worker_killed_mid_job_is_finished_by_another(stack):
    production, workers = stack
    first = workers.start("gpu1")
    job_id = production.script(SUBMIT)
    workers.wait(job_id, lambda s: s["status"] == "running")
    child = pool_child(first)
    first.kill()
    os.kill(child, signal.SIGKILL)
    workers.start("gpu2")
    workers.beat()  # nobody calls the sweep by hand: beat's schedule finds the job once its lease runs out
    final = workers.wait(job_id, lambda s: s["status"] not in ("queued", "running"))
    assert final == {"status": "succeeded", "attempts": 2, "images": 1, "charges": 1, "refunds": 0}


def test_a_job_past_its_deadline_fails_refunded_and_the_worker_takes_the_next(production, workers):
    workers.env["SDWEB_JOB_TIMEOUT_SECONDS"] = "2"
    workers.start("gpu1")
    slow = production.script(SUBMIT)
    quick = production.script(SUBMIT.replace('"steps": 150', '"steps": 2'))
    late = workers.wait(slow, lambda s: s["status"] not in ("queued", "running"))
    assert late == {"status": "failed", "attempts": 1, "images": 0, "charges": 1, "refunds": 1}
    assert "time limit" in production.script(f'from generation.models import Job\n'
                                             f'print(json.dumps(Job.objects.get(pk="{slow}").error))')
    assert workers.wait(quick, lambda s: s["status"] == "succeeded")["images"] == 1


FAIRNESS = """
    from collections import Counter
    from django.contrib.auth.models import User
    from generation.jobs.models import Job
    from generation.library.checkpoints import checkpoint_ensure_test_model
    from generation.jobs.submit import job_submit
    checkpoint = checkpoint_ensure_test_model()
    users = [User.objects.get_or_create(username=f"fair{u}")[0] for u in range(4)]
    for user in users:  # each user fills the queue in turn: the oldest-first order would be unfair
        for _ in range(10):
            job_submit(user=user, params={"prompt": "fair", "checkpoint": checkpoint, "width": 256, "height": 256,
                       "steps": 2, "guidance_scale": 7, "scheduler": "Euler a", "seed": 1, "num_images": 1})
    print(json.dumps([u.pk for u in users]))
"""
STARTS = """
    SELECT j.status, u.username, j.worker FROM generation_job j JOIN auth_user u ON u.id = j.user_id
    WHERE u.username LIKE 'fair%%' ORDER BY j.started_at
"""


def test_two_workers_run_40_jobs_of_4_users_in_fair_order_both_busy(production, workers):
    workers.start("gpu1")
    workers.start("gpu2")
    production.script(FAIRNESS)
    deadline = time.monotonic() + 240
    starts = production.query(STARTS)
    while any(status != "succeeded" for status, _, _ in starts):
        assert time.monotonic() < deadline, starts
        time.sleep(1)
        starts = production.query(STARTS)
    users = [user for _, user, _ in starts]
    for n in range(4, 41, 4):  # in every prefix of the start order, each user got a fair share
        counts = [users[:n].count(f"fair{u}") for u in range(4)]
        assert max(counts) - min(counts) <= 2, (n, counts)
    by_worker = {worker for _, _, worker in starts}
    assert len(by_worker) == 2 and min(sum(w == worker for *_, w in starts) for worker in by_worker) >= 10
