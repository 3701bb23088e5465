"""job_run: one claimed job through the engine, with no transaction or row lock held while the
model works. Progress, previews and lease renewals are small single-row updates. Each attempt
writes its images under names of its own; only the attempt that still owns the job publishes
them (one conditional update), and a losing attempt removes only its own files."""

import functools
import io
import logging
import threading
import time
from datetime import timedelta

import torch
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Image
from gallery.services import image_files_delete, image_files_save
from generation.engine.loading import PIPELINES
from generation.engine.metadata import format_parameters
from generation.engine.previews import PreviewSettings
from generation.engine.request import GenerationRequest
from generation.engine.run import GenerationCancelled, generate
from generation.engine.safety import DiffusersSafetyChecker
from generation.engine.upscale import upscale
from generation.live import job_event
from generation.models import Checkpoint, ImageFingerprint, Job
from generation.provenance import sign_png
from generation.services.addons import engine_addons
from generation.services.credits import credits_refund
from generation.services.queue import CANCELLED_NOTE, job_claim, job_finish_failed, job_requeue, jobs_reap
from generation.services.submit import engine_limits, job_inputs

log = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()  # set when the embedded server stops: running jobs go back to the queue
THUMBNAIL_EDGE = 256


def job_run_next(*, worker: str = "") -> Job | None:
    """Claim the fairest job and run it to an end. Returns the job, or None if none was waiting."""
    resident = PIPELINES.resident_sources()
    held = frozenset(Checkpoint.objects.filter(source__in=resident).values_list("pk", flat=True)) if resident else frozenset()
    job = job_claim(worker=worker, held=held)
    if job is not None:
        job_run(job)
        jobs_reap()  # this worker is free again: a job whose worker died meanwhile is claimed next
    return job


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


@functools.lru_cache(maxsize=2)
def image_checker(setting: str):
    """SDWEB_SAFETY_CHECKER: "off", or a StableDiffusionSafetyChecker folder (loaded once)."""
    return None if setting in ("", "off") else DiffusersSafetyChecker(setting)


def job_run(job: Job) -> None:
    attempt, lease = job.attempts, timedelta(seconds=settings.SDWEB["LEASE_SECONDS"])
    deadline = time.monotonic() + settings.SDWEB["JOB_TIMEOUT_SECONDS"]
    lease_renewed = time.monotonic()
    stop_reason = None
    owned = Job.objects.filter(pk=job.pk, attempts=attempt, status=Job.RUNNING)

    def should_cancel() -> bool:
        nonlocal stop_reason, lease_renewed
        if SHUTTING_DOWN.is_set():
            stop_reason = "shutdown"
        elif time.monotonic() > deadline:
            stop_reason = "timeout"
        else:
            row = owned.values_list("cancel_requested", flat=True).first()
            stop_reason = "lost" if row is None else "cancel" if row else None
        if stop_reason is None and time.monotonic() - lease_renewed > lease.total_seconds() / 4:
            owned.update(lease_until=timezone.now() + lease)
            lease_renewed = time.monotonic()
        return stop_reason is not None

    first_step = []  # (when, step) of the first preview: the rate is measured from there

    def on_preview(step: int, total: int, image: bytes) -> None:
        owned.update(progress_step=step, progress_total=total, preview=image, previews_sent=F("previews_sent") + 1)
        # From the first step on, not from the start: loading and text encoding would make an
        # early estimate jump (49 s, then 95 s) as the steady step time shows through.
        first_step[:] = first_step or [(time.monotonic(), step)]
        (since, from_step), now = first_step[0], time.monotonic()
        eta = round((now - since) / (step - from_step) * (total - step), 1) if step > from_step else None
        job_event(job.pk, {"type": "progress", "step": step, "total": total, "eta": eta, "preview": image})

    job_event(job.pk, {"type": "started", "attempt": attempt})
    payloads = [i.to_bytes(8, "big") for i in job.image_ids]
    try:
        inputs = {field: upload.image for field, upload in job_inputs(job).items()}
        if job.mode == "upscale":
            result = upscale(inputs["init_image"], scale=job.upscale_by, upscaler=job.upscaler, seed=job.seed,
                             parameters=_source_parameters(job, inputs["init_image"].size), watermark_payload=payloads[0])
        else:
            request = GenerationRequest(model=job.checkpoint.model_ref(), refiner=job.refiner and job.refiner.model_ref(),
                                        vae=job.vae and job.vae.model_ref(), **job.params(), **inputs,
                                        **engine_addons(job))
            result = generate(request, on_preview=on_preview, should_cancel=should_cancel, watermark_payloads=payloads,
                              **engine_options())
    except GenerationCancelled:
        if stop_reason == "shutdown":
            job_requeue(job=job, attempt=attempt)
        elif stop_reason in ("cancel", "timeout"):
            error = CANCELLED_NOTE if stop_reason == "cancel" else "Stopped: the job ran past its time limit."
            job_finish_failed(job=job, attempt=attempt, error=error,
                              status=Job.CANCELLED if stop_reason == "cancel" else Job.FAILED)
        return  # "lost": another worker owns the job now
    except Exception as error:
        log.exception("job %s failed", job.pk)
        job_finish_failed(job=job, attempt=attempt, error=f"Generation failed: {error}")
        return

    images = [_store(job, attempt, result, k) for k in range(len(result.images))]
    prints = [ImageFingerprint.of(image.id, result.images[k]) for k, image in enumerate(images)]
    if not _publish(job, attempt, result, images, prints):
        image_files_delete(images)  # this attempt's own files: another attempt owns the job


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
        timings={k: round(v, 4) for k, v in result.timings.items()}, error=_withheld_note(result))
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
