"""What the studio's pages, the REST API, the API dialects and the sockets show of jobs and
images: one shape for each, and one mapping from a refusal to an HTTP status."""

import base64

from django.urls import reverse

from generation.jobs.models import Job
from generation.jobs.selectors import queue_wait
from generation.jobs.validation import RefusalCode

# A refusal's code -> HTTP status; a refusal that names a field, or any other code, is a 400.
REFUSAL_STATUS = {RefusalCode.INSUFFICIENT_CREDITS: 402, RefusalCode.SUSPENDED: 403, RefusalCode.ACTIVE_JOB_CAP: 409,
                  RefusalCode.IDEMPOTENCY_MISMATCH: 422, RefusalCode.ROLE_LIMIT: 403,
                  RefusalCode.STORAGE_FULL: 403}


def refusal_status(refusal) -> int:
    return REFUSAL_STATUS.get(refusal.code, 400)


def image_summary(hex_id: str, seed: int) -> dict:
    return {"id": hex_id, "seed": seed, "page": reverse("image", args=[hex_id]),
            "url": reverse("image-file", args=[hex_id]), "thumbnail": reverse("image-thumbnail", args=[hex_id])}


def job_images(job: Job, api_request=None) -> list[dict]:
    """The job's images; for an API client (its `api_request`) the links are absolute and `url` is
    the download its API key opens."""
    images = sorted(job.images.all(), key=lambda image: image.index)  # .all(): prefetched for a list of jobs
    shown = [image_summary(image.hex_id, image.seed) for image in images]
    if api_request is not None:
        shown = [{**image, "url": reverse("api-image-download", args=[image["id"]])} for image in shown]
        shown = [{k: api_request.build_absolute_uri(v) if k in ("page", "url", "thumbnail") else v
                  for k, v in image.items()} for image in shown]
    return shown


def data_url(image: bytes) -> str:
    kind = "webp" if image[8:12] == b"WEBP" else "jpeg"
    return f"data:image/{kind};base64," + base64.b64encode(image).decode()


def job_event_shown(event: dict) -> dict:
    """A job event as a page's socket receives it: previews as data URLs, images with their links."""
    if isinstance(event.get("preview"), bytes):
        event = {**event, "preview": data_url(event["preview"])}
    if event.get("type") == "finished":
        event = {**event, "images": [image_summary(i["id"], i["seed"]) for i in event["images"]]}
    return event


def job_state(job: Job, *, queue: bool = True) -> dict:
    """Where a job is now, in the shape of the live events, so a reloaded page resumes (`queue`
    False: a queued job's place left to the caller)."""
    state = {"type": "state", "status": job.status, "step": job.progress_step, "total": job.progress_total,
             "error": job.error}
    if job.status == Job.QUEUED and queue:
        state |= queue_wait(job)
    if job.status == Job.RUNNING and job.preview:
        state["preview"] = data_url(bytes(job.preview))
    if job.status == Job.SUCCEEDED:
        state["images"] = job_images(job)
    return state
