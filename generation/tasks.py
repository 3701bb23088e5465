from celery import shared_task

from generation import services


@shared_task(name="generation.run_next_job", acks_late=True, bind=True)
def run_next_job(self) -> str | None:
    """A job is waiting: claim the fairest one and run it."""
    job = services.job_run_next(worker=self.request.hostname or "")
    return str(job.pk) if job else None


@shared_task(name="generation.reap_jobs")
def reap_jobs() -> dict:
    """Scheduled by Celery beat (SDWEB_REAP_EVERY_SECONDS): recover jobs whose worker died."""
    return services.jobs_reap()
