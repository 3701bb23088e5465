"""Reads of the generation domain that take more than a line."""

from generation.models import Checkpoint, Job, UserSettings


def job_for_viewer(user, job_id) -> Job | None:
    """The job if `user` may watch it (its owner, or staff with generation.view_job), else None."""
    if not user.is_authenticated:
        return None
    jobs = Job.objects.select_related("checkpoint")
    if not (user.is_staff and user.has_perm("generation.view_job")):
        jobs = jobs.filter(user=user)
    return jobs.filter(pk=job_id).first()


def queue_position(job: Job) -> int:
    """Queued jobs submitted before this one (the fair order can move it ahead)."""
    return Job.objects.filter(status=Job.QUEUED, created_at__lt=job.created_at).count()


def queued_ahead(limit: int) -> list[tuple]:
    """(job id, queued jobs ahead of it) for the first `limit` queued jobs."""
    waiting = Job.objects.filter(status=Job.QUEUED).order_by("created_at").values_list("pk", flat=True)[:limit]
    return [(job_id, position) for position, job_id in enumerate(waiting)]


def default_checkpoint() -> Checkpoint | None:
    """The checkpoint a request that names none gets."""
    return Checkpoint.objects.filter(enabled=True).order_by("-is_default", "name").first()


def user_checkpoint(user) -> Checkpoint | None:
    """The user's own default (A1111 clients set it through /sdapi/v1/options), else the site's."""
    chosen = UserSettings.objects.filter(user=user).values_list("default_checkpoint", flat=True).first()
    return Checkpoint.objects.filter(enabled=True, pk=chosen).first() or default_checkpoint()
