"""Celery tasks: thin adapters from a message to a service."""

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings

from generation.metrics import serve_worker_metrics
from generation.services import queue


@shared_task(name=queue.RUN_NEXT_JOB, acks_late=True, bind=True)
def run_next_job(self) -> str | None:
    """A job is waiting: claim the fairest one and run it."""
    from generation.services.run import job_run_next  # the engine and torch: loaded by workers only

    job = job_run_next(worker=self.request.hostname or "")
    return str(job.pk) if job else None


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    """Scheduled by Celery beat (SDWEB_REAP_EVERY_SECONDS): recover jobs whose worker died."""
    return queue.jobs_reap()


@worker_process_init.connect
def worker_start(**kwargs):
    """SDWEB_WORKER_METRICS_PORT: each worker (one pool process per GPU) serves its own figures;
    SDWEB_COMPILE: it compiles the UNet before its first job."""
    if settings.SDWEB["WORKER_METRICS_PORT"]:
        serve_worker_metrics(settings.SDWEB["WORKER_METRICS_PORT"])
    if settings.SDWEB["COMPILE"]:
        from generation.services.run import engine_warm_up

        engine_warm_up()
