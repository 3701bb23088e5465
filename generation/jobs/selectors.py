"""Reads of the generation domain that take more than a line."""

import statistics
from datetime import timedelta

from django.conf import settings
from django.db.models import Count, Sum
from django.utils import timezone

from generation.jobs.models import Job


def job_for_viewer(user, *, job_id) -> Job | None:
    """The job if `user` may watch it (its owner, or staff with generation.view_job), else None."""
    if not user.is_authenticated:
        return None
    jobs = Job.objects.select_related("checkpoint")
    if not (user.is_staff and user.has_perm("generation.view_job")):
        jobs = jobs.filter(user=user)
    return jobs.filter(pk=job_id).first()


def studio_jobs(user) -> tuple[list[Job], Job | None, Job | None]:
    """For the studio page: the user's 10 newest jobs, their newest active job and their newest that
    isn't an upscale, the last two found among those 10 where they are (a query each otherwise)."""
    recent = list(user.jobs.select_related("checkpoint")[:10])
    every = len(recent) < 10  # the user has no other job
    active = next((j for j in recent if j.status in Job.ACTIVE), None)
    if active is None and not every:
        active = user.jobs.filter(status__in=Job.ACTIVE).select_related("checkpoint").first()
    made = next((j for j in recent if not j.upscale_by), None)
    if made is None and not every:
        made = user.jobs.filter(upscale_by=0).select_related("checkpoint").first()
    return recent, active, made


def started_lately(jobs) -> dict:
    """How many jobs each of `jobs`' users and teams started in the last SDWEB_FAIR_WINDOW_MINUTES
    ({("u", user id) or ("t", team id): n}): the fair order's first measures."""
    lately = Job.objects.filter(started_at__gte=timezone.now() - timedelta(minutes=settings.SDWEB["FAIR_WINDOW_MINUTES"]))
    users, teams = {j.user_id for j in jobs}, {j.team_id for j in jobs if j.team_id}
    by_user = lately.filter(user__in=users).values_list("user").annotate(n=Count("id")).values_list("user", "n")
    by_team = lately.filter(team__in=teams).values_list("team").annotate(n=Count("id")).values_list("team", "n")
    return {("u", user): n for user, n in by_user} | {("t", team): n for team, n in by_team}


def _shares(job: Job) -> tuple:
    """Whose share a job counts against: its team's (teams are fair to each other as one party each)
    then its user's (members are fair to each other within it); a job of one's own, the user's."""
    return (("t", job.team_id) if job.team_id else ("u", job.user_id)), ("u", job.user_id)


def _fairness(job: Job, recent: dict) -> tuple:
    return tuple(recent.get(share, 0) for share in _shares(job))


def count_started(recent: dict, job: Job) -> None:
    for share in set(_shares(job)):
        recent[share] = recent.get(share, 0) + 1


def fair_order(jobs, *, recent: dict, held: frozenset = frozenset()) -> list[Job]:
    """The claim's order: the team or user with the fewest jobs started lately first, then within a
    team the member with the fewest; among equals a job for a checkpoint in `held` (loaded by the
    worker), then the oldest job."""
    return sorted(jobs, key=lambda j: (_fairness(j, recent), j.checkpoint_id not in held, j.created_at))


def batch_with(pick: Job, candidates: list[Job], *, recent: dict, images: int) -> list[Job]:
    """`pick`, then the fairest jobs that can be denoised with it, up to `images` images."""
    batch, key = [pick], pick.batch_key
    if key is None:
        return batch
    counts = dict(recent)
    count_started(counts, pick)
    others = [j for j in candidates if j.pk != pick.pk and j.batch_key == key]
    while True:
        room = images - sum(j.num_images for j in batch)
        fits = [j for j in others if j not in batch and j.num_images <= room]
        if not fits:
            return batch
        chosen = min(fits, key=lambda j: (_fairness(j, counts), j.created_at))
        batch.append(chosen)
        count_started(counts, chosen)


def queue_plan(*, images: int) -> dict[int, list[int]]:
    """Every queued job's runs before it (their sizes in jobs): the claim's own order and batching,
    played forward once for the whole queue."""
    queued = list(Job.objects.filter(status=Job.QUEUED).select_related("checkpoint", "vae"))
    recent = started_lately(queued)
    plan, sizes = {}, []
    while queued:
        run = batch_with(fair_order(queued, recent=recent)[0], queued, recent=recent, images=images)
        for taken in run:
            plan[taken.pk] = list(sizes)
            count_started(recent, taken)
            queued.remove(taken)
        sizes.append(len(run))
    return plan


def _run_images() -> int:
    """The most images a run takes: the most a run took lately, or SDWEB_BATCH_MAX (1 until one ran)."""
    lately = Job.objects.filter(started_at__gte=timezone.now() - timedelta(minutes=10)).values(
        "worker", "started_at").annotate(images=Sum("num_images")).order_by("-images").values_list("images", flat=True)
    return max(lately.first() or 0, settings.SDWEB["BATCH_MAX"], 1)


def queue_wait(job: Job) -> dict:
    """What a queued job's page shows ({"position", "eta"}: see `queue_waits`)."""
    wait = queue_waits().get(job.pk) or {"position": Job.objects.filter(status=Job.RUNNING).count(), "eta": 0.0}
    return {"position": wait["position"], "eta": wait["eta"]}


def queue_waits() -> dict[int, dict]:
    """What each queued job's page shows, worked out for the whole queue at once: jobs ahead (queued
    and running), the queued ones alone (`queued_ahead`), and an ETA in seconds, from the runs of the
    last 10 minutes. A run is the jobs a worker claimed at once (one start time); it lasts until that
    worker's next claim. A job starts when the first worker is done with the run it has going (how
    long runs of that size took lately, less what has passed) plus the runs the claim would make of
    the queued jobs before it, shared between the workers. While too few runs ended lately: the
    median job time over the running jobs."""
    running = Job.objects.filter(status=Job.RUNNING)
    plan = queue_plan(images=_run_images())
    now, busy_count = timezone.now(), running.count()
    runs = list(Job.objects.filter(started_at__gte=now - timedelta(minutes=10), status__in=(Job.RUNNING, Job.SUCCEEDED))
                .values("worker", "started_at").annotate(size=Count("id")).order_by("worker", "started_at"))
    lasted = {}  # run size -> how long such runs lasted
    for run, after in zip(runs, runs[1:]):
        if run["worker"] == after["worker"]:
            lasted.setdefault(run["size"], []).append((after["started_at"] - run["started_at"]).total_seconds())
    if sum(map(len, lasted.values())) >= 5:
        typical = statistics.median(t for times in lasted.values() for t in times)

        def takes(size):
            return statistics.median(lasted[size]) if len(lasted.get(size, ())) >= 2 else typical

        latest = {run["worker"]: run for run in runs}  # each worker's last claim: the run it has going
        busy = set(running.values_list("worker", flat=True))  # (the run before may still be finishing)
        now_going = min((max(0.0, takes(run["size"]) - (now - run["started_at"]).total_seconds())
                         for worker, run in latest.items() if worker in busy), default=0.0)

        def eta(before):
            return round(now_going + sum(map(takes, before)) / len(latest), 1)
    else:
        durations = [(j.finished_at - j.started_at).total_seconds() for j in Job.objects.filter(
            status=Job.SUCCEEDED, started_at__isnull=False, finished_at__gte=now - timedelta(minutes=10)).order_by(
            "-finished_at")[:20]]

        def eta(before):  # the running jobs hold the workers: the queue drains ~`running` jobs per job time
            ahead = sum(before) + busy_count
            return round(ahead * statistics.median(durations) / max(1, busy_count), 1) if durations else None
    return {pk: {"position": sum(before) + busy_count, "eta": eta(before), "queued_ahead": sum(before)}
            for pk, before in plan.items()}
