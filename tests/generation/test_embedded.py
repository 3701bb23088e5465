"""The embedded default: a Celery worker thread on the in-memory broker, as `manage.py up` runs it."""

import time

import pytest
from django.contrib.auth.models import User

from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import job_submit
from generation.jobs.worker import SHUTTING_DOWN, job_run
from tests.support import assert_ledger_balanced, params, refunds

pytestmark = pytest.mark.django_db(transaction=True)


def wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_submitted_job_is_run_by_the_worker_thread_through_the_memory_broker(checkpoint, worker):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = job_submit(user=alice, params=params(checkpoint))  # on commit: a message to the broker
    wait_for(lambda: Job.objects.get(pk=job.pk).status == "succeeded")
    assert Job.objects.get(pk=job.pk).images.count() == 2
    assert_ledger_balanced()


def test_a_job_running_when_the_server_stops_goes_back_to_the_queue_and_finishes_later(checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job_submit(user=alice, params=params(checkpoint))
    SHUTTING_DOWN.set()
    try:
        job_run(job_claim())
    finally:
        SHUTTING_DOWN.clear()
    job = Job.objects.get()
    assert (job.status, job.attempts, refunds(job)) == ("queued", 1, 0)
    job_run(job_claim())
    job.refresh_from_db()
    assert (job.status, job.attempts, job.images.count()) == ("succeeded", 2, 2)
    assert_ledger_balanced()


def test_a_job_past_its_time_limit_fails_with_one_refund(checkpoint, settings):
    settings.SDWEB = {**settings.SDWEB, "JOB_TIMEOUT_SECONDS": 0}
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job_submit(user=alice, params=params(checkpoint))
    job_run(job_claim())
    job = Job.objects.get()
    assert job.status == "failed" and "time limit" in job.error and refunds(job) == 1
    assert_ledger_balanced()
