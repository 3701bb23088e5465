"""Reads of the generation domain that take more than a line."""

import statistics

from django.db.models import Case, IntegerField, Q, Value, When

from generation.models import AddOn, Checkpoint, Job, UserSettings, is_model_name


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


def queue_outlook() -> tuple[int, float | None]:
    """(jobs running now, seconds a job has taken lately: the median of the last 20 finished), to
    tell a waiting job how many are ahead of it (running ones too) and about when it starts."""
    running = Job.objects.filter(status=Job.RUNNING).count()
    recent = Job.objects.filter(status=Job.SUCCEEDED, started_at__isnull=False, finished_at__isnull=False).order_by(
        "-finished_at").values_list("started_at", "finished_at")[:20]
    durations = [(finished - started).total_seconds() for started, finished in recent]
    return running, statistics.median(durations) if durations else None


def queue_wait(queued_before: int, outlook: tuple[int, float | None]) -> dict:
    """What a queued job's page shows: jobs ahead (queued and running) and an ETA in seconds."""
    running, typical = outlook
    ahead = queued_before + running
    # The running jobs hold the workers: the queue drains about `running` jobs per typical job time.
    eta = round(ahead * typical / max(1, running), 1) if typical is not None else None
    return {"position": ahead, "eta": eta}


def default_checkpoint() -> Checkpoint | None:
    """The checkpoint a request that names none gets."""
    return Checkpoint.objects.filter(enabled=True).order_by("-is_default", "name").first()


def user_checkpoint(user) -> Checkpoint | None:
    """The user's own default (A1111 clients set it through /sdapi/v1/options), else the site's."""
    chosen = UserSettings.objects.filter(user=user).values_list("default_checkpoint", flat=True).first()
    return Checkpoint.objects.filter(enabled=True, pk=chosen).first() or default_checkpoint()


def addons_for(user, kind: str | None = None):
    """The add-ons `user` may use: the library, published uploads and their own; their own first
    where names clash, then the library's."""
    shown = Q(owner=None) | Q(published=True)
    if user is not None and user.is_authenticated:
        shown |= Q(owner=user)
    found = AddOn.objects.filter(shown, enabled=True).select_related("owner")
    if kind:
        found = found.filter(kind=kind)
    rank = Case(When(owner=user.pk if user is not None and user.is_authenticated else None, then=Value(0)),
                When(owner=None, then=Value(1)), default=Value(2), output_field=IntegerField())
    return found.annotate(rank=rank).order_by("kind", "name", "rank")


def addon_named(user, kind: str, name) -> AddOn | None:
    """The add-on `user` means by `name` (theirs first); None for any name that can't be one."""
    return addons_for(user, kind).filter(name=name).first() if is_model_name(name) else None
