"""Celery tasks: thin adapters from a message to a service."""

import multiprocessing

from celery import shared_task
from celery.signals import worker_process_init, worker_process_shutdown, worker_shutting_down
from django.conf import settings

from generation.jobs import queue
from generation.monitoring.metrics import serve_worker_metrics

# Set in the worker's main process when it begins a warm shutdown; its pool processes, forked from
# it, see it and take no further run.
STOPPING = multiprocessing.Event()


@shared_task(name=queue.RUN_NEXT_JOB, acks_late=True, bind=True)
def run_next_job(self) -> str | None:
    """A job is waiting: claim the fairest one and run it (and the runs after it, while jobs wait)."""
    from generation.jobs.worker import job_run_next  # the engine and torch: loaded by workers only

    job = job_run_next(worker=self.request.hostname or "", stopping=STOPPING.is_set)
    return str(job.pk) if job else None


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    """Scheduled by Celery beat (SDWEB_REAP_EVERY_SECONDS): recover jobs whose worker died."""
    return queue.jobs_reap()


@worker_shutting_down.connect
def worker_stopping(**kwargs):
    STOPPING.set()


@worker_process_init.connect
def worker_start(**kwargs):
    """SDWEB_WORKER_METRICS_PORT: each worker (one pool process per GPU) serves its own figures;
    its finishing processes start; SDWEB_COMPILE: it compiles the UNet before its first job."""
    if settings.SDWEB["WORKER_METRICS_PORT"]:
        serve_worker_metrics(settings.SDWEB["WORKER_METRICS_PORT"])
    from generation.jobs.engine_setup import engine_warm_up
    from generation.jobs.finish import FINISHER

    FINISHER.start()
    if settings.SDWEB["COMPILE"]:
        engine_warm_up()


@worker_process_shutdown.connect
def worker_stop(**kwargs):
    """The images of the last run are finished before the worker goes."""
    from generation.jobs.finish import FINISHER

    FINISHER.close(timeout=30)
