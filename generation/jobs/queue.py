"""The queue: the Job table is the queue of record and a Celery message only says "a job is
waiting". Claims, leases, cancels, ends and the sweep for jobs whose worker died."""

import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from generation.credits.ledger import credits_refund
from generation.jobs.live import job_event
from generation.jobs.models import Job
from generation.jobs.selectors import batch_with, fair_order, started_lately
from sdweb.celery import app

RUN_NEXT_JOB = "generation.run_next_job"  # the task in generation.tasks, sent by name
CANCELLED_NOTE = "Cancelled; the credits are back."  # a cancelled job's error, shown on its page


def enqueue_job() -> None:
    """Tell a worker a job is waiting. The message carries no job: the worker claims the fairest."""
    app.send_task(RUN_NEXT_JOB)


def job_cancel(*, user, job_id) -> Job:
    """The owner cancels a queued job at once (refunded) or asks a running one to stop."""
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id, user=user)
        if job.status == Job.QUEUED:
            job.status, job.finished_at, job.error = Job.CANCELLED, timezone.now(), CANCELLED_NOTE
            job.save(update_fields=["status", "finished_at", "error"])
            credits_refund(job=job, reason="cancelled before it started")
            transaction.on_commit(lambda: job_event(job.pk, {"type": "cancelled"}))
        elif job.status == Job.RUNNING and not job.cancel_requested:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


def _claimable(now) -> Q:
    return Q(status=Job.QUEUED) | Q(status=Job.RUNNING, lease_until__lt=now)


def job_claim(*, worker: str = "", held: frozenset = frozenset()) -> Job | None:
    """The fairest claimable job, claimed alone (see jobs_claim)."""
    jobs = jobs_claim(worker=worker, held=held)
    return jobs[0] if jobs else None


def jobs_claim(*, worker: str = "", held: frozenset = frozenset(), images: int = 1, wait_ms: int = 0) -> list[Job]:
    """Claim the fairest claimable job: the team or user with the fewest jobs started in the last
    SDWEB_FAIR_WINDOW_MINUTES first (within a team, the member with the fewest); among equals, a job
    for a checkpoint in `held` (ids of those the worker has loaded: no load time), then the oldest job.
    With it, in the same conditional update, the fairest compatible jobs (Job.batch_key) while the
    batch holds at most `images` images; each job taken counts against its team's and user's share.
    When the batch is short and the first job is younger than `wait_ms`, wait that long for more
    first. A job whose worker died (its lease ran out) is claimable again until SDWEB_ATTEMPT_LIMIT
    attempts."""
    now = timezone.now()
    fail_exhausted(now)
    # Each user's oldest jobs, however deep the queue: a newcomer's job is always considered.
    per_user = Window(RowNumber(), partition_by=[F("user_id")], order_by=F("created_at").asc())
    candidates = list(Job.objects.filter(_claimable(now)).annotate(place=per_user).filter(
        place__lte=max(images, 8)).select_related("checkpoint", "vae").order_by("created_at"))
    recent = started_lately(candidates)
    for pick in fair_order(candidates, recent=recent, held=held):
        batch = batch_with(pick, candidates, recent=recent, images=images)
        young = timedelta(milliseconds=wait_ms) - (now - pick.created_at)
        if sum(j.num_images for j in batch) < images and pick.batch_key is not None and young > timedelta(0):
            time.sleep(young.total_seconds())
            return jobs_claim(worker=worker, held=held, images=images)
        # A conditional update, nothing locked beforehand: when two workers reach for the same job,
        # PostgreSQL makes the second re-check the condition, it finds nothing and takes the next
        # fairest job instead of sitting idle. A duplicate message claims nothing.
        ids = [j.pk for j in batch]
        claimed = Job.objects.filter(_claimable(now), pk__in=ids).update(
            status=Job.RUNNING, started_at=now, attempts=F("attempts") + 1, progress_step=0, progress_total=0,
            preview=None, worker=worker[:100], lease_until=now + timedelta(seconds=settings.SDWEB["LEASE_SECONDS"]))
        if claimed:
            ours = Job.objects.in_bulk(ids)  # those another worker took meanwhile have its start time
            return [ours[pk] for pk in ids if pk in ours and ours[pk].started_at == now and ours[pk].status == Job.RUNNING]
    return []


def fail_exhausted(now) -> int:
    """Jobs whose worker died SDWEB_ATTEMPT_LIMIT times fail, with one refund each."""
    exhausted = Job.objects.filter(status=Job.RUNNING, lease_until__lt=now, attempts__gte=settings.SDWEB["ATTEMPT_LIMIT"])
    return sum(job_end_refunded(job=job, attempt=job.attempts, error=f"The worker stopped {job.attempts} times; giving up.")
               for job in exhausted)


def jobs_reap() -> dict:
    """The sweep for when no worker is free to notice: fail exhausted jobs, and send one message
    per job whose worker died so that the next free worker claims it."""
    now = timezone.now()
    failed = fail_exhausted(now)
    orphans = Job.objects.filter(status=Job.RUNNING, lease_until__lt=now).count()
    for _ in range(orphans):
        enqueue_job()
    return {"failed": failed, "requeued": orphans}


@transaction.atomic
def job_end_refunded(*, job: Job, attempt: int, error: str, status: str = Job.FAILED, detail: str = "") -> bool:
    """End a job as failed or cancelled and refund it once, if this attempt still owns it; `error`
    is for its owner, `detail` for staff only."""
    ended = Job.objects.filter(pk=job.pk, attempts=attempt, status__in=Job.ACTIVE).update(
        status=status, error=error, error_detail=detail, finished_at=timezone.now(), lease_until=None)
    if ended:
        credits_refund(job=job, reason="cancelled" if status == Job.CANCELLED else "failed")
        event = {"type": "cancelled"} if status == Job.CANCELLED else {"type": "failed", "reason": error}
        transaction.on_commit(lambda: job_event(job.pk, event))
    return bool(ended)


def job_requeue(*, job: Job, attempt: int) -> None:
    """Put a running job back in the queue (the process is stopping); it starts over later."""
    Job.objects.filter(pk=job.pk, attempts=attempt, status=Job.RUNNING).update(
        status=Job.QUEUED, lease_until=None, progress_step=0, progress_total=0, preview=None)


def jobs_recover_orphans() -> int:
    """At the start of the embedded server no other worker exists: every running job was left
    by a stopped process. Make them claimable now and return how many jobs are waiting."""
    Job.objects.filter(status=Job.RUNNING).update(lease_until=timezone.now() - timedelta(seconds=1))
    return Job.objects.filter(status__in=Job.ACTIVE).count()
