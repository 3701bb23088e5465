"""Workers die: a pool process killed mid-denoising, or a whole worker. Every job ends exactly
once (one set of images, one charge), and another worker carries on."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.sdweb.test_up import ROOT

SUBMIT = """
    from django.contrib.auth.models import User
    from generation.services import checkpoint_ensure_test_model, job_submit
    user, _ = User.objects.get_or_create(username="victim")
    job = job_submit(user=user, params={"prompt": "slow", "checkpoint": checkpoint_ensure_test_model(),
                     "width": 256, "height": 256, "steps": 150, "guidance_scale": 7, "scheduler": "Euler a",
                     "seed": 1, "num_images": 1})
    print(json.dumps(str(job.pk)))
"""
STATE = """
    from generation.models import Job
    job = Job.objects.get(pk="{job_id}")
    print(json.dumps({{"status": job.status, "attempts": job.attempts, "images": job.images.count(),
                      "charges": job.credit_entries.filter(kind="charge").count(),
                      "refunds": job.credit_entries.filter(kind="refund").count()}}))
"""


class Workers:
    def __init__(self, production):
        self.production, self.processes = production, []
        self.env = {**production.env, "SDWEB_LEASE_SECONDS": "3"}

    def start(self, name):
        process = subprocess.Popen([sys.executable, "-m", "celery", "-A", "sdweb", "worker", "--pool=prefork",
                                    "--concurrency=1", "--loglevel=WARNING", "-n", f"{name}@%h"],
                                   cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(process)
        return process

    def state(self, job_id):
        return self.production.script(STATE.format(job_id=job_id))

    def wait(self, job_id, condition, timeout=180):
        deadline = time.monotonic() + timeout
        while not condition(state := self.state(job_id)):
            assert time.monotonic() < deadline, state
            time.sleep(0.3)
        return state

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


def pool_child(worker) -> int:
    children = subprocess.run(["pgrep", "-P", str(worker.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the worker has no pool process"
    return int(children[0])


def test_a_pool_process_killed_mid_denoising_is_recovered_once(production, workers):
    worker = workers.start("gpu1")
    job_id = production.script(SUBMIT)
    workers.wait(job_id, lambda s: s["status"] == "running")
    time.sleep(1)  # well into denoising
    os.kill(pool_child(worker), signal.SIGKILL)
    time.sleep(4)  # the lease (3 s) runs out; no one renews it now (beat would run reap_jobs)
    production.script("from generation.services import jobs_reap\nprint(json.dumps(jobs_reap()))")
    final = workers.wait(job_id, lambda s: s["status"] not in ("queued", "running"))
    assert final == {"status": "succeeded", "attempts": 2, "images": 1, "charges": 1, "refunds": 0}


def test_a_whole_worker_killed_mid_job_is_finished_by_another(production, workers):
    first = workers.start("gpu1")
    job_id = production.script(SUBMIT)
    workers.wait(job_id, lambda s: s["status"] == "running")
    child = pool_child(first)
    first.kill()
    os.kill(child, signal.SIGKILL)
    workers.start("gpu2")
    time.sleep(4)
    production.script("from generation.services import jobs_reap\nprint(json.dumps(jobs_reap()))")
    final = workers.wait(job_id, lambda s: s["status"] not in ("queued", "running"))
    assert final == {"status": "succeeded", "attempts": 2, "images": 1, "charges": 1, "refunds": 0}
