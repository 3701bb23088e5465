"""job_run: one claimed job through the engine, with no transaction or row lock held while the
model works. Progress, previews and lease renewals are small single-row updates; the results
are written in one transaction at the end, and only if this attempt still owns the job."""

import base64
import io
import logging
import time
from datetime import timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F
from django.urls import reverse
from django.utils import timezone
from PIL import Image as PILImage

from gallery.models import Image
from generation.engine import GenerationCancelled, GenerationRequest, PreviewSettings, generate
from generation.live import job_event
from generation.models import Job
from generation.provenance import sign_png
from generation.services import SHUTTING_DOWN, credits_refund, engine_limits, job_finish_failed, job_requeue

log = logging.getLogger(__name__)
THUMBNAIL_EDGE = 256


def job_run(job: Job) -> None:
    attempt, lease = job.attempts, timedelta(seconds=settings.SDWEB["LEASE_SECONDS"])
    deadline = time.monotonic() + settings.SDWEB["JOB_TIMEOUT_SECONDS"]
    started = time.monotonic()
    stop_reason = None
    lease_renewed = time.monotonic()
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

    def on_preview(step: int, total: int, image: bytes) -> None:
        owned.update(progress_step=step, progress_total=total, preview=image, previews_sent=F("previews_sent") + 1)
        elapsed = time.monotonic() - started
        job_event(job.pk, {"type": "progress", "step": step, "total": total,
                           "eta": round(elapsed / step * (total - step), 1), "preview": data_url(image)})

    job_event(job.pk, {"type": "started", "attempt": attempt})
    request = GenerationRequest(model=job.checkpoint.source, **job.params())
    try:
        result = generate(request, on_preview=on_preview, should_cancel=should_cancel,
                          watermark_payloads=[i.to_bytes(8, "big") for i in job.image_ids],
                          preview=PreviewSettings.from_env(), limits=engine_limits())
    except GenerationCancelled:
        if stop_reason == "shutdown":
            job_requeue(job=job, attempt=attempt)
        elif stop_reason in ("cancel", "timeout"):
            error = "Cancelled." if stop_reason == "cancel" else "Stopped: the job ran past its time limit."
            job_finish_failed(job=job, attempt=attempt, error=error,
                              status=Job.CANCELLED if stop_reason == "cancel" else Job.FAILED)
        return  # "lost": another worker owns the job now
    except Exception as error:
        log.exception("job %s failed", job.pk)
        job_finish_failed(job=job, attempt=attempt, error=f"Generation failed: {error}")
        return

    stored = [store_image(job, result, k) for k in range(len(result.images))]
    with transaction.atomic():
        finished = owned.update(status=Job.SUCCEEDED, finished_at=timezone.now(), lease_until=None,
                                timings={k: round(v, 4) for k, v in result.timings.items()},
                                error=_withheld_note(result))
        if finished:  # else cancelled or taken over meanwhile: keep nothing of this attempt
            Image.objects.bulk_create(stored)
            if result.flagged:
                share = -(-job.cost * len(result.flagged) // job.num_images)
                credits_refund(job=job, amount=share, reason="images withheld by the safety checker")
            images = [image_summary(image) for image in stored]
            transaction.on_commit(lambda: job_event(job.pk, {"type": "finished", "images": images}))
    if not finished:
        for image in stored:
            default_storage.delete(image.png.name)
            default_storage.delete(image.thumbnail.name)


def store_image(job: Job, result, k: int) -> Image:
    """Write image k's PNG (metadata + watermark) and WebP thumbnail through Django's storage."""
    image_id = job.image_ids[result.indexes[k]]
    png = io.BytesIO()
    result.save_png(k, png, image_id=f"{image_id:016x}")
    png = io.BytesIO(sign_png(png.getvalue(), title=f"{image_id:016x}.png"))
    thumb = result.images[k].copy()
    thumb.thumbnail((THUMBNAIL_EDGE, THUMBNAIL_EDGE), PILImage.LANCZOS)
    webp = io.BytesIO()
    thumb.save(webp, format="WEBP", quality=85)
    names = {}
    for field, data, suffix in (("png", png, "png"), ("thumbnail", webp, "webp")):
        name = f"{'images' if field == 'png' else 'thumbnails'}/{image_id:016x}.{suffix}"
        default_storage.delete(name)  # an earlier attempt may have left it
        names[field] = default_storage.save(name, ContentFile(data.getvalue()))
    return Image(id=image_id, owner_id=job.user_id, job=job, index=result.indexes[k], seed=result.seeds[k],
                 width=job.width, height=job.height, **names)


def image_summary(image: Image) -> dict:
    return {"id": image.hex_id, "seed": image.seed, "page": reverse("image", args=[image.hex_id]),
            "url": reverse("image-file", args=[image.hex_id]), "thumbnail": reverse("image-thumbnail", args=[image.hex_id])}


def data_url(image: bytes) -> str:
    kind = "webp" if image[8:12] == b"WEBP" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(image).decode()


def _withheld_note(result) -> str:
    if not result.flagged:
        return ""
    return f"{len(result.flagged)} image(s) withheld by the safety checker; their share was refunded."
