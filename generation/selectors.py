"""Reads of the generation domain that take more than a line."""

import statistics
from datetime import timedelta

from django.conf import settings
from django.db.models import Case, Count, IntegerField, Max, Min, Q, Value, When
from django.utils import timezone

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
    """Queued jobs the fair order puts before this one (queue.jobs_claim's order: the user with the
    fewest jobs started in the fair window first, then the oldest job). Each user's jobs ahead are
    counted as the claim would take them: while they have started fewer than this user will have
    (with its own earlier jobs), or as many and theirs is older."""
    window_start = timezone.now() - timedelta(minutes=settings.SDWEB["FAIR_WINDOW_MINUTES"])
    waiting = Job.objects.filter(status=Job.QUEUED)
    mine_before = waiting.filter(user=job.user_id, created_at__lt=job.created_at).count()
    others = list(waiting.exclude(user=job.user_id).values("user").annotate(n=Count("id"), oldest=Min("created_at")))
    started = dict(Job.objects.filter(user__in=[row["user"] for row in others] + [job.user_id],
                                      started_at__gte=window_start).values_list("user").annotate(n=Count("id")))
    mine = started.get(job.user_id, 0) + mine_before
    return mine_before + sum(max(0, min(row["n"], mine - started.get(row["user"], 0) + (row["oldest"] < job.created_at)))
                             for row in others)


def queue_wait(job: Job) -> dict:
    """What a queued job's page shows: jobs ahead (queued and running) and an ETA in seconds. From
    the last 20 jobs: the time between job ends (the studio's throughput, whatever its workers) and
    how many jobs shared a run. A run starts every `each x shared` seconds and takes `shared` of the
    queued jobs ahead, so this one starts when the run now going is done (measured from when it
    started) and the runs that take the jobs ahead of it are done too. While too few jobs ended
    lately: the median job time over the running jobs."""
    running = Job.objects.filter(status=Job.RUNNING)
    queued_before = queue_position(job)
    ahead = queued_before + running.count()
    recent = list(Job.objects.filter(status=Job.SUCCEEDED, started_at__isnull=False, finished_at__gte=timezone.now()
                                     - timedelta(minutes=10)).order_by("-finished_at").values_list(
        "started_at", "finished_at", "batch_size")[:20])
    if len(recent) >= 5 and recent[0][1] > recent[-1][1]:
        each = (recent[0][1] - recent[-1][1]).total_seconds() / (len(recent) - 1)
        shared = len(recent) / sum(1 / size for _, _, size in recent)  # jobs per run
        run = each * shared
        # Each worker's run now going is its latest claim (the jobs of its run before may still be
        # finishing beside it); the first worker to be done takes the next run.
        now = timezone.now()
        now_going = min((max(0.0, run - (now - started).total_seconds()) for started in running.values(
            "worker").annotate(latest=Max("started_at")).values_list("latest", flat=True)), default=0.0)
        return {"position": ahead, "eta": round(now_going + queued_before // shared * run, 1)}
    durations = [(finished - started).total_seconds() for started, finished, _ in recent]
    # The running jobs hold the workers: the queue drains about `running` jobs per typical job time.
    eta = round(ahead * statistics.median(durations) / max(1, ahead - queued_before), 1) if durations else None
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


def upscaler_models(user) -> list[str]:
    """The names of the upscaler models `user` may choose (hires fix and Upscale list them after
    the built-in ones)."""
    return list(addons_for(user, AddOn.UPSCALER).values_list("name", flat=True).distinct())
