from generation.models import Job
from generation.services import queue_position


def job_for_viewer(user, job_id) -> Job | None:
    """The job if `user` may watch it (its owner or staff), else None."""
    if not user.is_authenticated:
        return None
    jobs = Job.objects.select_related("checkpoint")
    if not user.is_staff:
        jobs = jobs.filter(user=user)
    return jobs.filter(pk=job_id).first()


def job_state(job: Job) -> dict:
    """Where a job is now, in the shape of the live events, so a reloaded page resumes."""
    from generation.runner import data_url, image_summary

    state = {"type": "state", "status": job.status, "step": job.progress_step, "total": job.progress_total,
             "error": job.error}
    if job.status == Job.QUEUED:
        state["position"] = queue_position(job)
    if job.status == Job.RUNNING and job.preview:
        state["preview"] = data_url(bytes(job.preview))
    if job.status == Job.SUCCEEDED:
        state["images"] = [image_summary(image) for image in job.images.order_by("index")]
    return state
