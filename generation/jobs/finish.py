"""Finishing a run's images beside the denoiser: watermark, PNG with its parameters, C2PA, WebP
thumbnail, fingerprint, storage and publish run in a bounded pool of processes
(SDWEB_FINISH_PROCESSES; the work is CPU-bound and would hold the GIL), so the GPU thread starts
the next run while the last one is finished. Each job is finished on its own: an error fails and
refunds that job alone and removes the files its attempt wrote; a finishing process that dies
sends its job back to the queue. Publishing stays one conditional update, so an attempt that lost
the job meanwhile publishes nothing and nothing is charged twice."""

import concurrent.futures
import io
import logging
import multiprocessing
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from PIL import Image as PILImage

from gallery.services import image_files_save, images_publish, saved_files_delete
from generation.credits.ledger import credits_refund
from generation.engine.metadata import save_png
from generation.engine.watermark import PREVIEW_STRENGTH, embed_watermark
from generation.jobs import live
from generation.jobs.models import Job
from generation.jobs.process_start import finishing_process_start
from generation.jobs.queue import enqueue_job, job_end_refunded, job_requeue
from generation.provenance.c2pa import sign_png
from generation.provenance.models import ImageFingerprint

log = logging.getLogger(__name__)
THUMBNAIL_EDGE = 256  # the short side: the least the watermark needs
# Settings a finishing process takes from its parent: a test's temporary database and folders too.
INHERITED = ("DATABASES", "STORAGES", "MEDIA_ROOT", "SDWEB")


@dataclass
class Finishing:
    """What the denoiser made for one job, as a finishing process takes it (no tensors: pictures)."""

    job_id: object
    attempt: int
    images: list  # PIL images, kept by the safety checker, not yet watermarked
    indexes: list[int]  # each image's place among the job's images (its id and payload)
    seeds: list[int]
    texts: list[str]  # each image's A1111 parameters
    flagged: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    batch_size: int = 1
    progress: tuple = ()  # the last step, total, preview and previews sent since the last save


def job_finish(work: Finishing) -> list[tuple]:
    """Store and publish one job's images; returns the job events to send (the caller sends them:
    the embedded server's channel layer lives in its own process)."""
    with live.collected() as events:
        job = Job.objects.get(pk=work.job_id)
        made = []
        try:
            for k in range(len(work.images)):
                made.append(_store(job, work, k))
            prints = [ImageFingerprint.of(image["id"], picture) for image, picture in zip(made, work.images)]
            if not _publish(job, work, made, prints):
                saved_files_delete(made)  # this attempt's own files: another attempt owns the job
        except Exception:
            log.exception("job %s: its images could not be finished", job.pk)
            saved_files_delete(made)
            job_end_refunded(job=job, attempt=work.attempt,
                             error="Generation failed: its images could not be stored. The credits are back.")
    return events


def _store(job: Job, work: Finishing, k: int) -> dict:
    """Image k watermarked with its own id, as a PNG (parameters, C2PA) and a WebP thumbnail; the
    fields of its gallery row, for images_publish."""
    image_id = job.image_ids[work.indexes[k]]
    picture = work.images[k] = embed_watermark(work.images[k], image_id.to_bytes(8, "big"))
    png = io.BytesIO()
    save_png(picture, png, work.texts[k], f"{image_id:016x}")
    thumb = picture
    if min(picture.size) > THUMBNAIL_EDGE:  # the picture's mark is lost shrinking past half
        scale = THUMBNAIL_EDGE / min(picture.size)
        thumb = picture.resize([max(THUMBNAIL_EDGE, round(side * scale)) for side in picture.size], PILImage.LANCZOS)
    # its own, firmer mark: a small lossy preview, where the picture's quiet one may not survive WebP
    thumb = embed_watermark(thumb, image_id.to_bytes(8, "big"), strength=PREVIEW_STRENGTH)
    webp = io.BytesIO()
    thumb.save(webp, format="WEBP", quality=85)
    signed = sign_png(png.getvalue(), title=f"{image_id:016x}.png")
    names = image_files_save(image_id=image_id, attempt=work.attempt, thumbnail=webp.getvalue(), png=signed)
    width, height = picture.size  # hires fix and "only masked" inpainting change the size
    return {"id": image_id, "index": work.indexes[k], "seed": work.seeds[k], "width": width, "height": height,
            "stored_bytes": len(signed) + len(webp.getvalue()), **names}


@transaction.atomic
def _publish(job: Job, work: Finishing, made: list[dict], prints: list[ImageFingerprint]) -> bool:
    """Succeed the job with these images if this attempt still owns it; False if it lost it."""
    flagged = len(work.flagged)
    shown = {}
    if work.progress:  # the run's last steps and preview, not saved before
        step, total, preview, sent = work.progress
        shown = dict(progress_step=step, progress_total=total, preview=preview, previews_sent=F("previews_sent") + sent)
    finished = Job.objects.filter(pk=job.pk, attempts=work.attempt, status=Job.RUNNING).update(
        status=Job.SUCCEEDED, finished_at=timezone.now(), lease_until=None, **shown,
        timings={k: round(v, 4) for k, v in work.timings.items()}, batch_size=work.batch_size,
        error=f"{flagged} image(s) withheld by the safety checker; their share was refunded." if flagged else "")
    if not finished:  # cancelled or taken over meanwhile
        return False
    images = images_publish(job=job, made=made)
    ImageFingerprint.objects.bulk_create(prints)
    if flagged:
        credits_refund(job=job, amount=-(-job.cost * flagged // job.charged_images),
                       reason="images withheld by the safety checker")
    shown = [{"id": image.hex_id, "seed": image.seed} for image in images]
    transaction.on_commit(lambda: live.job_event(job.pk, {"type": "finished", "images": shown}))
    return True


class Finisher:
    """The worker's finishing pool. At most two full runs per process wait for it (a run hands
    over up to SDWEB_BATCH_MAX jobs at once: a smaller bound would make the denoiser wait for the
    last run's jobs every run); past that the denoiser waits, since the CPU is then what limits the
    worker."""

    def __init__(self):
        self.pool, self.lock = None, threading.Lock()
        self.pending: set[concurrent.futures.Future] = set()

    def start(self) -> None:
        """Start the processes now (a worker's start), so the first job doesn't wait for them."""
        for _ in range(settings.SDWEB["FINISH_PROCESSES"]):
            self._pool().submit(int)

    def submit(self, job: Job, work: Finishing) -> None:
        processes = settings.SDWEB["FINISH_PROCESSES"]
        if not processes:
            _send(job_finish(work))
            return
        backlog = 2 * processes * (settings.SDWEB["BATCH_MAX"] or 8)
        concurrent.futures.wait(self.pending.copy() if len(self.pending) >= backlog else (),
                                return_when=concurrent.futures.FIRST_COMPLETED)
        future = self._pool().submit(job_finish, work)
        self.pending.add(future)
        future.add_done_callback(lambda done: self._done(job, work.attempt, done))

    def _done(self, job: Job, attempt: int, future) -> None:
        try:
            events = future.result()
        except Exception as error:  # the process died (or the work could not reach it): its job starts over
            log.error("job %s: its finishing process failed (%s); the job goes back to the queue", job.pk, error)
            if isinstance(error, concurrent.futures.process.BrokenProcessPool):
                with self.lock:
                    self.pool = None
            with live.collected() as events:
                if attempt < settings.SDWEB["ATTEMPT_LIMIT"]:
                    job_requeue(job=job, attempt=attempt)
                    transaction.on_commit(enqueue_job)
                else:
                    job_end_refunded(job=job, attempt=attempt,
                                     error=f"The worker stopped {attempt} times; giving up.")
        try:
            _send(events)
        finally:
            self.pending.discard(future)  # last: drain() returns once the job's end is told

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        with self.lock:
            if self.pool is None:
                # A Celery prefork pool process is marked daemonic, which multiprocessing takes to
                # mean "no children" (these are shut down with it: tasks.worker_stop, up's stop), and
                # holds billiard's authentication key, which multiprocessing can't hand to a child.
                process = multiprocessing.current_process()
                process._config["daemon"] = False
                process._config["authkey"] = multiprocessing.process.AuthenticationString(process.authkey)
                inherited = {name: getattr(settings, name) for name in INHERITED}
                self.pool = concurrent.futures.ProcessPoolExecutor(
                    settings.SDWEB["FINISH_PROCESSES"], mp_context=multiprocessing.get_context("spawn"),
                    initializer=finishing_process_start, initargs=(inherited,))
            return self.pool

    def drain(self, timeout: float = 60) -> None:
        """Wait for the jobs being finished (tests)."""
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self, timeout: float = 60) -> None:
        """A worker that stops: the jobs being finished are finished, then the processes end."""
        self.drain(timeout)
        with self.lock:
            pool, self.pool = self.pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def _send(events: list[tuple]) -> None:
    for job_id, event in events:
        live.job_event(job_id, event)


FINISHER = Finisher()
