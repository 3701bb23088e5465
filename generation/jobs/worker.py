"""jobs_run: claimed jobs through the engine, with no transaction or row lock held while the model
works. The denoising thread only denoises: per step it asks one query for the whole batch (cancels,
lost jobs) and hands previews to a sender; leases and progress are written for the batch at once,
now and then. Finished pictures go to the finishing pool (jobs.finish), which stores and
publishes each job on its own while the next run starts."""

import functools
import logging
import operator
import threading
import time
import traceback
from datetime import timedelta

import torch
from django.conf import settings
from django.db import connection
from django.db.models import BinaryField, Case, F, PositiveIntegerField, Q, QuerySet, Value, When
from django.utils import timezone

from generation.engine.batch import generate_batch
from generation.engine.loading import PIPELINES
from generation.engine.metadata import format_parameters
from generation.engine.plot import PlotResult, plot_result
from generation.engine.request import GenerationRequest, JobError
from generation.engine.run import GenerationCancelled, generate
from generation.engine.upscale import UpscaleResult, upscale
from generation.jobs.engine_setup import batch_image_limit, engine_configure
from generation.jobs.finish import FINISHER, Finishing
from generation.jobs.inputs import job_inputs
from generation.jobs.live import flush, job_event_soon
from generation.jobs.models import Job
from generation.jobs.queue import CANCELLED_NOTE, job_end_refunded, job_requeue, jobs_claim, jobs_reap
from generation.library.addons import engine_addons
from generation.library.models import Checkpoint, Vae

log = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()  # set when the embedded server stops: running jobs go back to the queue
RUN_ON_SECONDS = 30  # one task's runs: Celery's time limits count per task


def job_run_next(*, worker: str = "", stopping=lambda: False) -> Job | None:
    """Claim the fairest job, with the jobs that can share its run, and run them to an end; then, for
    up to RUN_ON_SECONDS while jobs wait and the worker isn't `stopping()`, the next run straight
    away (back in Celery, the next message's round trip would leave the GPU idle), claimed while
    the GPU finishes the run before. Returns the first job, or None if none was waiting."""
    until = time.monotonic() + RUN_ON_SECONDS

    def stopped() -> bool:
        return stopping() or SHUTTING_DOWN.is_set()

    first, jobs, prepared = None, _claim(worker), {}
    while jobs:
        first = first or jobs[0]
        ahead = NextClaim(worker, lambda: not stopped() and time.monotonic() < until) \
            if connection.vendor == "postgresql" and settings.SDWEB["FINISH_PROCESSES"] else None
        try:
            jobs_run(jobs, on_last_step=ahead and ahead.start, prepared=prepared)
        except BaseException:
            if ahead:
                ahead.give_back()
            raise
        claimed = ahead.result() if ahead else None
        if stopped():
            if ahead:
                ahead.give_back()
            break
        if claimed is None and time.monotonic() > until:
            break
        jobs, prepared = (claimed, ahead.requests) if claimed is not None else (_claim(worker), {})
    if first:
        jobs_reap()  # this worker is free again: a job whose worker died meanwhile is claimed next
    return first


class NextClaim:
    """The next run's claim and its jobs' engine requests, made on a thread of its own once this
    run's last step is under way: the host only waits while the GPU works through the last steps
    and the decode, so the next run starts without their queries (and input images) in between.
    PostgreSQL only (SQLite has one writer at a time), with finishing processes (else the next run
    would wait for this one's finishing anyway, its jobs shown as started meanwhile)."""

    def __init__(self, worker: str, going_on):
        self.worker, self.going_on, self.lock = worker, going_on, threading.Lock()
        self.thread, self.jobs, self.requests, self.closed = None, None, {}, False

    def start(self) -> None:
        with self.lock:
            if self.thread is None and not self.closed and self.going_on():
                self.thread = threading.Thread(target=self._claim, name="next-claim", daemon=True)
                self.thread.start()

    def _claim(self) -> None:
        try:
            self.jobs = _claim(self.worker)
            self.requests = {job.pk: _request_or_error(job) for job in self.jobs}
        except Exception:  # the worker claims again itself
            log.exception("claiming the next run failed")
        finally:
            connection.close()  # this thread's own

    def result(self) -> list[Job] | None:
        """The jobs claimed, or None when no claim was made (or it failed)."""
        with self.lock:
            self.closed = True
        if self.thread is not None:
            self.thread.join()
        return self.jobs

    def give_back(self) -> None:
        for job in self.result() or []:
            job_requeue(job=job, attempt=job.attempts)


def _claim(worker: str) -> list[Job]:
    resident = PIPELINES.resident_sources()
    held = frozenset(Checkpoint.objects.filter(source__in=resident).values_list("pk", flat=True)) if resident else frozenset()
    return jobs_claim(worker=worker, held=held, images=batch_image_limit(), wait_ms=settings.SDWEB["BATCH_WAIT_MS"])


def job_run(job: Job) -> None:
    jobs_run([job])


class RunTracker:
    """The claimed jobs of one run, as this attempt owns them: each step asks, in one query, which
    were cancelled or taken over, and ends a stopped job at once (a batch runs on for the others).
    Leases, progress and the latest previews are written for the whole batch in one query, every
    SDWEB_PROGRESS_SAVE_SECONDS; previews reach the pages at once, through the channel layer."""

    def __init__(self, jobs: list[Job], on_last_step=None):
        self.jobs, self.reasons, self.on_last_step = jobs, {}, on_last_step  # reasons: index -> why that job stopped
        self.deadline = time.monotonic() + settings.SDWEB["JOB_TIMEOUT_SECONDS"]
        self.lease = timedelta(seconds=settings.SDWEB["LEASE_SECONDS"])
        self.renewed = self.saved = time.monotonic()
        self.first_step = {}  # index -> (when, step) of its first preview: the rate is measured from there
        self.latest = {}  # index -> (step, total, preview, previews since the last save)

    def live(self) -> list[int]:
        return [k for k in range(len(self.jobs)) if k not in self.reasons]

    def owned(self, indexes: list[int]) -> QuerySet:
        """These jobs' rows, if this attempt still owns them."""
        condition = functools.reduce(operator.or_, [Q(pk=self.jobs[k].pk, attempts=self.jobs[k].attempts)
                                                    for k in indexes])
        return Job.objects.filter(condition, status=Job.RUNNING)

    def stopped(self) -> set[int]:
        live = self.live()
        if live and SHUTTING_DOWN.is_set():
            self.stop(live, "shutdown")
        elif live and time.monotonic() > self.deadline:
            self.stop(live, "timeout")
        elif live:
            rows = dict(self.owned(live).values_list("pk", "cancel_requested"))
            for k in live:
                if self.jobs[k].pk not in rows or rows[self.jobs[k].pk]:
                    self.stop([k], "cancel" if self.jobs[k].pk in rows else "lost")
            now = time.monotonic()
            if (now - self.saved >= settings.SDWEB["PROGRESS_SAVE_SECONDS"]
                    or now - self.renewed > self.lease.total_seconds() / 4):
                self.save()
        return set(self.reasons)

    def save(self) -> None:
        """One query for the batch: each live job's step and latest preview (reloaded pages and
        A1111's progress read them), and the leases when a quarter of one has passed."""
        self.saved = time.monotonic()
        shown = [k for k in self.live() if k in self.latest]
        renew = self.live() if self.saved - self.renewed > self.lease.total_seconds() / 4 else []
        if not shown and not renew:
            return
        changes = {}
        if shown:
            def each(position, default, field):
                return Case(*[When(pk=self.jobs[k].pk, then=Value(self.latest[k][position])) for k in shown],
                            default=default, output_field=field)

            changes = dict(progress_step=each(0, F("progress_step"), PositiveIntegerField()),
                           progress_total=each(1, F("progress_total"), PositiveIntegerField()),
                           preview=each(2, F("preview"), BinaryField()),
                           previews_sent=F("previews_sent") + each(3, Value(0), PositiveIntegerField()))
        if renew:
            self.renewed = self.saved
            changes["lease_until"] = timezone.now() + self.lease
        self.owned(sorted(set(shown) | set(renew))).update(**changes)
        for k in shown:
            self.latest[k] = (*self.latest[k][:3], 0)

    def stop(self, indexes: list[int], reason: str) -> None:
        for k in indexes:
            self.reasons[k] = reason
            job = self.jobs[k]
            if reason == "shutdown":
                job_requeue(job=job, attempt=job.attempts)
            elif reason in ("cancel", "timeout"):
                job_end_refunded(job=job, attempt=job.attempts,
                                 error=CANCELLED_NOTE if reason == "cancel" else "Stopped: the job ran past its time limit.",
                                 status=Job.CANCELLED if reason == "cancel" else Job.FAILED)
            # "lost": another worker owns the job now

    def preview(self, k: int, step: int, total: int, image: bytes) -> None:
        """A preview of job k: to its pages now, to its row at the next save."""
        sent = self.latest.get(k, (0, 0, b"", 0))[3]
        self.latest[k] = (step, total, image, sent + 1)
        # From the first step on, not from the start: loading and text encoding would make an
        # early estimate jump (49 s, then 95 s) as the steady step time shows through.
        since, from_step = self.first_step.setdefault(k, (time.monotonic(), step))
        now = time.monotonic()
        eta = round((now - since) / (step - from_step) * (total - step), 1) if step > from_step else None
        # `sent`: when the preview left the worker (epoch seconds), so a client can tell how late it arrived.
        job_event_soon(self.jobs[k].pk, {"type": "progress", "step": step, "total": total, "eta": eta, "preview": image,
                                         "sent": round(time.time(), 3)})
        if step == total and self.on_last_step:
            self.on_last_step()


def jobs_run(jobs: list[Job], on_last_step=None, prepared: dict | None = None) -> None:
    """Run claimed jobs: one alone through generate(), compatible ones together through
    generate_batch(). Each job ends on its own: failed, cancelled or given up here, or handed to
    the finishing pool to be stored and published. `on_last_step()` is called when the last
    step's preview is made; `prepared` holds requests made beforehand (job id -> _request_or_error)."""
    watch = RunTracker(jobs, on_last_step)
    for job in jobs:
        job_event_soon(job.pk, {"type": "started", "attempt": job.attempts})
    outcomes = _outcomes(jobs, watch, prepared or {})
    made = [k for k, outcome in enumerate(outcomes) if k not in watch.reasons and not isinstance(outcome, Exception)]
    progress = {k: watch.latest.pop(k) for k in made if k in watch.latest}  # saved as they are published
    watch.save()  # the others' last steps and previews (no query when every job was made)
    flush()  # previews already handed to the sender go out before any job's end
    for k, (job, outcome) in enumerate(zip(jobs, outcomes)):
        if k in watch.reasons or isinstance(outcome, GenerationCancelled):
            continue  # ended when it stopped (or it is another attempt's now)
        if isinstance(outcome, Exception):
            detail = "".join(traceback.format_exception(outcome))
            log.warning("job %s (of a run of %d) failed: %s", job.pk, len(jobs), detail)
            job_end_refunded(job=job, attempt=job.attempts, error=f"Generation failed: {said(outcome)}",
                             detail=detail[-20000:])
            continue
        try:
            FINISHER.submit(job, Finishing(
                job_id=job.pk, attempt=job.attempts, images=list(outcome.images), indexes=outcome.indexes,
                seeds=outcome.seeds, texts=[_parameters(outcome, k) for k in range(len(outcome.images))],
                flagged=outcome.flagged, timings=outcome.timings, batch_size=getattr(outcome, "batch_size", 1),
                progress=progress.get(k, ())))
        except Exception:  # this job alone: the others of the batch are finished as usual
            log.exception("job %s could not be handed over to be finished", job.pk)
            job_end_refunded(job=job, attempt=job.attempts, error="Generation failed: its images could not be stored.")


def said(error: Exception) -> str:
    """An engine error as its job's owner reads it: the engine's own sentence, or what kind of
    failure it was; never a library's text (a state_dict dump) or a server path."""
    if isinstance(error, JobError):
        return str(error)
    if isinstance(error, torch.OutOfMemoryError):
        return "the GPU ran out of memory for it; a smaller size or fewer images may fit. The credits are back."
    return "an error in the server stopped it (staff can see what). The credits are back."


def _outcomes(jobs: list[Job], watch: RunTracker, prepared: dict) -> list:
    """Each job's engine result, or the exception that ended it."""
    outcomes: list = [None] * len(jobs)
    requests = {}
    for k, job in enumerate(jobs):
        made = prepared[job.pk] if job.pk in prepared else _request_or_error(job)
        if isinstance(made, Exception):
            outcomes[k] = made
        else:
            requests[k] = made
    try:
        if len(jobs) == 1 and requests:
            outcomes = [_run_alone(jobs[0], requests[0], watch)]
        elif requests:
            ready = sorted(requests)
            batch = generate_batch([requests[k] for k in ready], should_cancel=lambda: {
                ready.index(k) for k in watch.stopped() if k in ready}, on_preview=lambda i, *a: watch.preview(
                ready[i], *a), **engine_configure())
            for i, k in enumerate(ready):
                outcomes[k] = batch[i]
    except Exception as error:  # the whole run failed: every job still running fails with it
        log.exception("run of %d job(s) failed", len(jobs))
        outcomes = [outcome or error for outcome in outcomes]
    return outcomes


def _parameters(result, k: int) -> str:
    return result.text if isinstance(result, UpscaleResult) else result.parameters(k)


def _request_or_error(job: Job):
    try:
        return _request(job)
    except Exception as error:  # the job's own (a deleted input, a bad add-on): it fails alone
        return error


def _request(job: Job) -> GenerationRequest | None:
    """The engine request of a job (None for an upscale, which is no diffusion run)."""
    if job.mode == "upscale":
        return None
    inputs = {field: upload.image for field, upload in job_inputs(job).items()}
    return GenerationRequest(model=job.checkpoint.model_ref(), refiner=job.refiner and job.refiner.model_ref(),
                             vae=job.vae and job.vae.model_ref(), **job.params(), **inputs, **engine_addons(job.addons))


def _run_alone(job: Job, request, watch: RunTracker):
    """A single job: generate() (or the upscaler); its result, or the exception that ended it."""
    try:
        if request is None:
            init_image = job_inputs(job)["init_image"].image
            return upscale(init_image, scale=job.upscale_by, upscaler=job.upscaler, seed=job.seed,
                           parameters=_source_parameters(job, init_image.size),
                           model=engine_addons(job.addons).get("upscaler_model"), device=engine_configure().get("device"))
        if job.plot:
            return _run_plot(job, watch)
        return generate(request, on_preview=lambda *a: watch.preview(0, *a), should_cancel=lambda: bool(watch.stopped()),
                        **engine_configure())
    except Exception as error:
        if not isinstance(error, GenerationCancelled):
            log.exception("job %s failed", job.pk)
        return error


def _run_plot(job: Job, watch: RunTracker) -> PlotResult:
    """An X/Y/Z plot's cells one after another (each may differ in model, steps or sampler), on one
    progress bar, then their grid."""
    started = time.perf_counter()
    requests = [_cell_request(job, cell) for cell in job.plot["cells"]]
    totals = [sum(steps for *_, steps in request.passes()) for request in requests]
    results = []
    for k, request in enumerate(requests):
        done = sum(totals[:k])
        results.append(generate(request, on_preview=lambda step, _, image, done=done: watch.preview(
            0, done + step, sum(totals), image), should_cancel=lambda: bool(watch.stopped()), **engine_configure()))
    return plot_result(results, job.plot["axes"], started)


def _cell_request(job: Job, cell: dict) -> GenerationRequest:
    """A plot cell's engine request: the job's settings with the cell's own, one image."""
    refs = {}
    for field, model in (("checkpoint", Checkpoint), ("refiner", Checkpoint), ("vae", Vae)):
        found = cell[field] and model.objects.filter(pk=cell[field], enabled=True).first()
        if cell[field] and found is None:
            raise JobError(f"a {field} this plot uses is no longer available")
        refs[field] = found and found.model_ref()
    return GenerationRequest(model=refs["checkpoint"], refiner=refs["refiner"], vae=refs["vae"],
                             **{**job.params(), **cell["params"], "num_images": 1}, **engine_addons(cell["addons"]))


def _source_parameters(job: Job, size: tuple[int, int]) -> str:
    """An upscale's infotext: the picture's own settings, at the size it had."""
    return format_parameters(prompt=job.prompt, negative_prompt=job.negative_prompt, steps=job.steps,
                             scheduler=job.scheduler, guidance_scale=job.guidance_scale, seed=job.seed, width=size[0],
                             height=size[1], model_hash=job.checkpoint.short_hash, model_name=job.checkpoint.name)
