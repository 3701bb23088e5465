"""job_run: one claimed job through the engine, with no transaction or row lock held while the
model works. Progress, previews and lease renewals are small single-row updates. Each attempt
writes its images under names of its own; only the attempt that still owns the job publishes
them (one conditional update), and a losing attempt removes only its own files."""

import functools
import io
import logging
import operator
import threading
import time
from datetime import timedelta

import torch
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Image
from gallery.services import image_files_delete, image_files_save
from generation.engine.batch import generate_batch
from generation.engine.loading import PIPELINES, compile_unet
from generation.engine.metadata import format_parameters
from generation.engine.previews import PreviewSettings
from generation.engine.request import GenerationRequest
from generation.engine.run import GenerationCancelled, generate
from generation.engine.safety import DiffusersSafetyChecker
from generation.engine.upscale import upscale
from generation.live import job_event
from generation.models import Checkpoint, ImageFingerprint, Job
from generation.provenance import sign_png
from generation.selectors import default_checkpoint
from generation.services.addons import engine_addons
from generation.services.credits import credits_refund
from generation.services.queue import CANCELLED_NOTE, job_finish_failed, job_requeue, jobs_claim, jobs_reap
from generation.services.submit import engine_limits, job_inputs

log = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()  # set when the embedded server stops: running jobs go back to the queue
THUMBNAIL_EDGE = 256


def job_run_next(*, worker: str = "") -> Job | None:
    """Claim the fairest job, with the jobs that can share its run, and run them to an end.
    Returns the first job, or None if none was waiting."""
    resident = PIPELINES.resident_sources()
    held = frozenset(Checkpoint.objects.filter(source__in=resident).values_list("pk", flat=True)) if resident else frozenset()
    jobs = jobs_claim(worker=worker, held=held, images=batch_images(), wait_ms=settings.SDWEB["BATCH_WAIT_MS"])
    if jobs:
        jobs_run(jobs)
        jobs_reap()  # this worker is free again: a job whose worker died meanwhile is claimed next
    return jobs[0] if jobs else None


def batch_images() -> int:
    """SDWEB_BATCH_MAX: images denoised together, from jobs of any user; 0 = 8 on a GPU, 1 (no
    batching) on the CPU, where a batch takes as long as its images one after another."""
    configured = settings.SDWEB["BATCH_MAX"]
    device = settings.SDWEB["DEVICE"] or ("cuda" if torch.cuda.is_available() else "cpu")
    return configured or (8 if device.startswith("cuda") else 1)


def engine_options() -> dict:
    """The engine's settings from settings.SDWEB, as `generate` takes them."""
    options = settings.SDWEB
    PIPELINES.budget_bytes = options["PIPELINE_CACHE_BYTES"]
    if torch.get_num_threads() != options["TORCH_THREADS"]:
        torch.set_num_threads(options["TORCH_THREADS"])
    return {
        "limits": engine_limits(),
        "preview": PreviewSettings(max_edge=options["PREVIEW_MAX_EDGE"], min_interval=options["PREVIEW_INTERVAL"],
                                   format=options["PREVIEW_FORMAT"], taesd=options["TAESD"] or None),
        "checker": image_checker(options["SAFETY_CHECKER"]),
        "device": options["DEVICE"] or None,
        "dtype": options["DTYPE"] or None,
    }


def engine_warm_up() -> None:
    """SDWEB_COMPILE=1: before the worker takes its first job, compile the default checkpoint's UNet
    and run each of SDWEB_COMPILE_SIZES at batch 1 and at the batch limit, so no user waits for a
    compilation (a size not listed compiles on its first job)."""
    checkpoint = default_checkpoint()
    if not settings.SDWEB["COMPILE"] or checkpoint is None:
        return
    options = engine_options()
    model = PIPELINES.get(checkpoint.model_ref(), options["device"], options["dtype"])
    compile_unet(model)
    for width, height in settings.SDWEB["COMPILE_SIZES"]:
        for count in sorted({1, batch_images()}):
            generate_batch([GenerationRequest(prompt="warm-up", model=checkpoint.model_ref(), width=width,
                                              height=height, steps=2, seed=k) for k in range(count)],
                           device=options["device"], dtype=options["dtype"])
        log.info("compiled for %dx%d", width, height)


@functools.lru_cache(maxsize=2)
def image_checker(setting: str):
    """SDWEB_SAFETY_CHECKER: "off", or a StableDiffusionSafetyChecker folder (loaded once)."""
    return None if setting in ("", "off") else DiffusersSafetyChecker(setting)


def job_run(job: Job) -> None:
    jobs_run([job])


class Watch:
    """The claimed jobs of one run, as this attempt owns them: each step asks, in one query, which
    were cancelled or taken over, renews the leases, and ends a stopped job at once (a batch runs on
    for the others)."""

    def __init__(self, jobs: list[Job]):
        self.jobs, self.reasons = jobs, {}  # index -> why that job stopped
        self.deadline = time.monotonic() + settings.SDWEB["JOB_TIMEOUT_SECONDS"]
        self.lease = timedelta(seconds=settings.SDWEB["LEASE_SECONDS"])
        self.renewed = time.monotonic()
        self.first_step = {}  # index -> (when, step) of its first preview: the rate is measured from there

    def owned(self, indexes: list[int]) -> QuerySet:
        """These jobs' rows, if this attempt still owns them."""
        condition = functools.reduce(operator.or_, [Q(pk=self.jobs[k].pk, attempts=self.jobs[k].attempts)
                                                    for k in indexes])
        return Job.objects.filter(condition, status=Job.RUNNING)

    def stopped(self) -> set[int]:
        live = [k for k in range(len(self.jobs)) if k not in self.reasons]
        if live and SHUTTING_DOWN.is_set():
            self.stop(live, "shutdown")
        elif live and time.monotonic() > self.deadline:
            self.stop(live, "timeout")
        elif live:
            rows = dict(self.owned(live).values_list("pk", "cancel_requested"))
            for k in live:
                if self.jobs[k].pk not in rows or rows[self.jobs[k].pk]:
                    self.stop([k], "cancel" if self.jobs[k].pk in rows else "lost")
            live = [k for k in live if k not in self.reasons]
            if live and time.monotonic() - self.renewed > self.lease.total_seconds() / 4:
                self.owned(live).update(lease_until=timezone.now() + self.lease)
                self.renewed = time.monotonic()
        return set(self.reasons)

    def stop(self, indexes: list[int], reason: str) -> None:
        for k in indexes:
            self.reasons[k] = reason
            job = self.jobs[k]
            if reason == "shutdown":
                job_requeue(job=job, attempt=job.attempts)
            elif reason in ("cancel", "timeout"):
                job_finish_failed(job=job, attempt=job.attempts,
                                  error=CANCELLED_NOTE if reason == "cancel" else "Stopped: the job ran past its time limit.",
                                  status=Job.CANCELLED if reason == "cancel" else Job.FAILED)
            # "lost": another worker owns the job now

    def preview(self, k: int, step: int, total: int, image: bytes) -> None:
        job = self.jobs[k]
        self.owned([k]).update(progress_step=step, progress_total=total, preview=image,
                               previews_sent=F("previews_sent") + 1)
        # From the first step on, not from the start: loading and text encoding would make an
        # early estimate jump (49 s, then 95 s) as the steady step time shows through.
        since, from_step = self.first_step.setdefault(k, (time.monotonic(), step))
        now = time.monotonic()
        eta = round((now - since) / (step - from_step) * (total - step), 1) if step > from_step else None
        job_event(job.pk, {"type": "progress", "step": step, "total": total, "eta": eta, "preview": image})


def jobs_run(jobs: list[Job]) -> None:
    """Run claimed jobs: one alone through generate(), compatible ones together through
    generate_batch(). Each job ends on its own: stored, failed, cancelled or given up."""
    watch = Watch(jobs)
    for job in jobs:
        job_event(job.pk, {"type": "started", "attempt": job.attempts})
    outcomes: list = [None] * len(jobs)
    requests = {}
    for k, job in enumerate(jobs):
        try:
            requests[k] = _request(job)
        except Exception as error:
            outcomes[k] = error
    try:
        if len(jobs) == 1 and requests:
            outcomes = [_run_alone(jobs[0], requests[0], watch)]
        elif requests:
            ready = sorted(requests)
            batch = generate_batch([requests[k] for k in ready], should_cancel=lambda: {
                ready.index(k) for k in watch.stopped() if k in ready}, on_preview=lambda i, *a: watch.preview(
                ready[i], *a), watermark_payloads=[_payloads(jobs[k]) for k in ready], **engine_options())
            for i, k in enumerate(ready):
                outcomes[k] = batch[i]
    except Exception as error:  # the whole run failed: every job still running fails with it
        log.exception("run of %d job(s) failed", len(jobs))
        outcomes = [outcome or error for outcome in outcomes]
    for k, (job, outcome) in enumerate(zip(jobs, outcomes)):
        if k in watch.reasons or isinstance(outcome, GenerationCancelled):
            continue  # ended when it stopped (or it is another attempt's now)
        if isinstance(outcome, Exception):
            if len(jobs) > 1:
                log.warning("job %s of a batch of %d failed: %s", job.pk, len(jobs), outcome)
            job_finish_failed(job=job, attempt=job.attempts, error=f"Generation failed: {outcome}")
            continue
        images = [_store(job, job.attempts, outcome, i) for i in range(len(outcome.images))]
        prints = [ImageFingerprint.of(image.id, outcome.images[i]) for i, image in enumerate(images)]
        if not _publish(job, job.attempts, outcome, images, prints):
            image_files_delete(images)  # this attempt's own files: another attempt owns the job


def _request(job: Job) -> GenerationRequest | None:
    """The engine request of a job (None for an upscale, which is no diffusion run)."""
    if job.mode == "upscale":
        return None
    inputs = {field: upload.image for field, upload in job_inputs(job).items()}
    return GenerationRequest(model=job.checkpoint.model_ref(), refiner=job.refiner and job.refiner.model_ref(),
                             vae=job.vae and job.vae.model_ref(), **job.params(), **inputs, **engine_addons(job))


def _payloads(job: Job) -> list[bytes]:
    return [i.to_bytes(8, "big") for i in job.image_ids]


def _run_alone(job: Job, request, watch: Watch):
    """A single job: generate() (or the upscaler); its result, or the exception that ended it."""
    try:
        if request is None:
            init_image = job_inputs(job)["init_image"].image
            return upscale(init_image, scale=job.upscale_by, upscaler=job.upscaler, seed=job.seed,
                           parameters=_source_parameters(job, init_image.size), watermark_payload=_payloads(job)[0])
        return generate(request, on_preview=lambda *a: watch.preview(0, *a), should_cancel=lambda: bool(watch.stopped()),
                        watermark_payloads=_payloads(job), **engine_options())
    except Exception as error:
        if not isinstance(error, GenerationCancelled):
            log.exception("job %s failed", job.pk)
        return error


def _source_parameters(job: Job, size: tuple[int, int]) -> str:
    """An upscale's infotext: the picture's own settings, at the size it had."""
    return format_parameters(prompt=job.prompt, negative_prompt=job.negative_prompt, steps=job.steps,
                             scheduler=job.scheduler, guidance_scale=job.guidance_scale, seed=job.seed, width=size[0],
                             height=size[1], model_hash=job.checkpoint.short_hash, model_name=job.checkpoint.name)


def _store(job: Job, attempt: int, result, k: int) -> Image:
    """Write image k's PNG (metadata, watermark, C2PA) and WebP thumbnail; the row is not saved yet."""
    image_id = job.image_ids[result.indexes[k]]
    png = io.BytesIO()
    result.save_png(k, png, image_id=f"{image_id:016x}")
    thumb = result.images[k].copy()
    thumb.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), PILImage.LANCZOS)
    webp = io.BytesIO()
    thumb.save(webp, format="WEBP", quality=85)
    names = image_files_save(image_id=image_id, attempt=attempt, thumbnail=webp.getvalue(),
                             png=sign_png(png.getvalue(), title=f"{image_id:016x}.png"))
    width, height = result.images[k].size  # hires fix and "only masked" inpainting change the size
    return Image(id=image_id, owner_id=job.user_id, job=job, index=result.indexes[k], seed=result.seeds[k],
                 width=width, height=height, **names)


@transaction.atomic
def _publish(job: Job, attempt: int, result, images: list[Image], prints: list[ImageFingerprint]) -> bool:
    """Succeed the job with these images if this attempt still owns it; False if it lost it."""
    finished = Job.objects.filter(pk=job.pk, attempts=attempt, status=Job.RUNNING).update(
        status=Job.SUCCEEDED, finished_at=timezone.now(), lease_until=None,
        timings={k: round(v, 4) for k, v in result.timings.items()}, error=_withheld_note(result),
        batch_size=getattr(result, "batch_size", 1))
    if not finished:  # cancelled or taken over meanwhile
        return False
    Image.objects.bulk_create(images)
    ImageFingerprint.objects.bulk_create(prints)
    if result.flagged:
        share = -(-job.cost * len(result.flagged) // job.num_images)
        credits_refund(job=job, amount=share, reason="images withheld by the safety checker")
    shown = [{"id": image.hex_id, "seed": image.seed} for image in images]
    transaction.on_commit(lambda: job_event(job.pk, {"type": "finished", "images": shown}))
    return True


def _withheld_note(result) -> str:
    if not result.flagged:
        return ""
    return f"{len(result.flagged)} image(s) withheld by the safety checker; their share was refunded."


def fingerprints_backfill() -> int:
    """Fingerprint the stored images made before the similarity index (or whose row is missing), so
    the trace finds their copies too; returns how many were added. Safe to run again."""
    added = 0
    missing = Image.objects.exclude(id__in=ImageFingerprint.objects.values("image_id")).only("id", "png")
    for image in missing.iterator(chunk_size=200):
        with image.png.open("rb") as file:
            picture = PILImage.open(file)
            picture.load()
        ImageFingerprint.objects.bulk_create([ImageFingerprint.of(image.id, picture)], ignore_conflicts=True)
        added += 1
    return added
