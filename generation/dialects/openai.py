"""OpenAI's Images API, POST /v1/images/generations, so OpenAI clients work unchanged:
metered, audited and watermarked like every sdweb job. Streaming sends the live previews as
`image_generation.partial_image` server-sent events from an async iterator (a sync one would be
buffered by Django under ASGI until the end), as the job's events arrive on the channel layer."""

import base64
import io
import json
import time

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core import signing
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, JsonResponse, StreamingHttpResponse
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from PIL import Image as PILImage

from gallery.models import Image
from generation.engine.families import TXT2IMG_FAMILIES
from generation.jobs.live import job_events, wait_for_end
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.jobs.validation import RefusalCode
from generation.library.models import Checkpoint
from generation.library.selectors import checkpoints_for, user_checkpoint
from generation.provenance.audit import audit_refused
from generation.untrusted_images import Upload, mask_from, read_image
from sdweb.shared import throttle
from sdweb.shared.api_keys import api_key_user
from sdweb.shared.parsers import loads

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
SIGNER = signing.TimestampSigner(salt="sdweb.openai.url")


class OpenAIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.kind, self.headers = status, param, code, kind, headers or {}

    def response(self) -> JsonResponse:
        response = JsonResponse({"error": {"message": str(self), "type": self.kind, "param": self.param,
                                           "code": self.code}}, status=self.status)
        for name, value in self.headers.items():
            response[name] = value
        return response


def authenticate(request):
    scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
    found = api_key_user(raw.strip()) if scheme.lower() == "bearer" else None
    if found is None:
        raise OpenAIError(401, "Incorrect API key provided.", code="invalid_api_key")
    user = found[0]
    rate = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["user"]
    count, period = rate.split("/")
    window = {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]
    if throttle.too_many("openai", str(user.pk), int(count), window):
        raise OpenAIError(429, "Rate limit reached; slow down.", code="rate_limit_exceeded", kind="requests",
                          headers={"Retry-After": str(window)})
    throttle.count("openai", str(user.pk), window)
    return user


def parse(request, user) -> dict:
    """The body as submit params and options; a refusal here is audited like any other."""
    try:
        data = loads(request.body or b"{}")
    except ValueError:
        data = None
    try:
        return _spec(data, user)
    except OpenAIError as error:
        audit_refused(user=user, client_ip=throttle.client_ip(request), data=data,
                               errors=f"{error.param or 'body'}: {error}")
        raise


def _spec(data, user) -> dict:
    if data is None:
        raise OpenAIError(400, "The body must be JSON.")
    if not isinstance(data, dict):
        raise OpenAIError(400, "The body must be a JSON object.")
    prompt = data.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise OpenAIError(400, "prompt is required.", param="prompt")
    checkpoint = user_checkpoint(user)
    if data.get("model") not in (None, "", "dall-e-2", "dall-e-3", "gpt-image-1"):
        checkpoint = Checkpoint.objects.enabled_named(data["model"])
        if checkpoint is None:
            raise OpenAIError(400, f"The model {data['model']!r} does not exist.", param="model",
                              code="model_not_found")
    size = data.get("size") or "auto"
    if size == "auto":
        width, height = checkpoint.default_width, checkpoint.default_height
    else:
        try:
            width, height = (int(v) for v in str(size).lower().split("x"))
        except ValueError:
            raise OpenAIError(400, "size must be WIDTHxHEIGHT, such as 512x512, or auto.", param="size")
    n = data.get("n", 1)
    response_format = data.get("response_format") or "b64_json"
    output_format = data.get("output_format") or "png"
    partial_images = data.get("partial_images", 0)
    for param, value, allowed in (("response_format", response_format, ("b64_json", "url")),
                                  ("output_format", output_format, tuple(FORMATS)),
                                  ("partial_images", partial_images, (0, 1, 2, 3))):
        if type(value) is not type(allowed[0]) or value not in allowed:  # 1.0 and True are not 1 here
            raise OpenAIError(400, f"{param} must be one of {', '.join(map(str, allowed))}.", param=param)
    stream = data.get("stream") is True
    if stream and n != 1:
        raise OpenAIError(400, "Streaming makes one image: n must be 1.", param="n")
    params = {"prompt": prompt, "negative_prompt": "", "checkpoint": checkpoint, "width": width, "height": height,
              "steps": checkpoint.default_steps, "guidance_scale": checkpoint.guidance, "scheduler": "Euler a", "seed": -1,
              "num_images": n}
    return {"params": params, "response_format": response_format, "output_format": output_format,
            "stream": stream, "partial_images": partial_images}


def submit(user, request, params) -> Job:
    try:
        return job_submit(user=user, params=params, client_ip=throttle.client_ip(request))
    except Refused as refusal:
        if refusal.code == RefusalCode.INSUFFICIENT_CREDITS:
            raise OpenAIError(429, str(refusal), code="insufficient_quota", kind="insufficient_quota")
        if refusal.code == RefusalCode.ACTIVE_JOB_CAP:
            raise OpenAIError(429, str(refusal), code="rate_limit_exceeded", kind="requests")
        param = {"num_images": "n", "width": "size", "height": "size", "init_image": "image",
                 "checkpoint": "model"}.get(refusal.field, refusal.field)
        if refusal.code in (RefusalCode.ROLE_LIMIT, RefusalCode.STORAGE_FULL):
            raise OpenAIError(403, str(refusal), param=param, code=str(refusal.code))
        raise OpenAIError(400, str(refusal), param=param)


def encoded(image: Image, output_format: str) -> bytes:
    with default_storage.open(image.png.name, "rb") as file:
        data = file.read()
    if output_format == "png":
        return data  # the original: metadata and watermark as stored
    converted = io.BytesIO()
    # 4:4:4 chroma: full colour detail (the watermark, in luminance, reads either way)
    PILImage.open(io.BytesIO(data)).save(converted, FORMATS[output_format][0], quality=90, subsampling=0)
    return converted.getvalue()


def image_item(request, image: Image, spec: dict, prompt: str) -> dict:
    if spec["response_format"] == "url":
        token = SIGNER.sign_object({"image": image.hex_id, "format": spec["output_format"]})
        return {"url": request.build_absolute_uri(reverse("openai-file", args=[token])), "revised_prompt": prompt}
    return {"b64_json": base64.b64encode(encoded(image, spec["output_format"])).decode(), "revised_prompt": prompt}


def finished_job(job: Job) -> Job:
    wait_for_end(job.pk, settings.SDWEB["JOB_TIMEOUT_SECONDS"] + 600)
    job.refresh_from_db()
    if job.status != Job.SUCCEEDED:
        raise OpenAIError(502 if job.status == Job.FAILED else 409, job.error or f"The job was {job.status}.",
                          kind="server_error" if job.status == Job.FAILED else "invalid_request_error")
    return job


def sse(event: str, payload: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps({'type': event, **payload})}\n\n".encode()


async def stream_events(request, job: Job, spec: dict):
    """Partial images from the live previews as the job runs, then the finished image."""
    sent, fractions = 0, [(i + 1) / (spec["partial_images"] + 1) for i in range(spec["partial_images"])]
    base = {"size": f"{job.width}x{job.height}", "output_format": spec["output_format"], "background": "opaque",
            "quality": "auto"}
    async for event in job_events(job.pk, settings.SDWEB["JOB_TIMEOUT_SECONDS"] + 600):
        if event["type"] == "progress" and sent < len(fractions) and event["step"] / event["total"] >= fractions[sent]:
            preview = io.BytesIO()
            PILImage.open(io.BytesIO(event["preview"])).save(preview, FORMATS[spec["output_format"]][0])
            yield sse("image_generation.partial_image", {**base, "partial_image_index": sent,
                                                         "created_at": int(time.time()),
                                                         "b64_json": base64.b64encode(preview.getvalue()).decode()})
            sent += 1
    await sync_to_async(job.refresh_from_db)()
    if job.status != Job.SUCCEEDED:
        yield sse("error", {"error": {"message": job.error or f"The job was {job.status}.", "type": "server_error",
                                      "param": None, "code": None}})
        return
    image = await sync_to_async(job.images.order_by("index").first)()
    data = await sync_to_async(encoded)(image, spec["output_format"])
    yield sse("image_generation.completed", {**base, "created_at": int(time.time()),
                                             "b64_json": base64.b64encode(data).decode(),
                                             "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}})


def models(request, model_id=None):
    """GET /v1/models (and /v1/models/ID): the checkpoints the caller's role may use, as OpenAI lists models."""
    try:
        if request.method != "GET":
            raise OpenAIError(405, "Use GET.")
        found = checkpoints_for(authenticate(request)).filter(family__in=TXT2IMG_FAMILIES).order_by("name")
        shown = [{"id": c.name, "object": "model", "created": int(c.created_at.timestamp()), "owned_by": "sdweb"}
                 for c in (found if model_id is None else found.filter(name=model_id))]
        if model_id is None:
            return JsonResponse({"object": "list", "data": shown})
        if not shown:
            raise OpenAIError(404, f"The model {model_id!r} does not exist.", param="model", code="model_not_found")
        return JsonResponse(shown[0])
    except OpenAIError as error:
        return error.response()


@csrf_exempt
async def images_generations(request):
    return await _images(request, parse)


@csrf_exempt
async def images_edits(request):
    """Multipart: `image` (one PNG, JPEG or WebP), optional `mask` whose transparent pixels mark
    where to repaint (without one, the image's own transparent pixels do), and the generation fields."""
    return await _images(request, parse_edit)


async def _images(request, parser):
    if request.method != "POST":
        return OpenAIError(405, "Use POST.").response()
    try:
        user = await sync_to_async(authenticate)(request)
        spec = await sync_to_async(parser)(request, user)
        job = await sync_to_async(submit)(user, request, spec["params"])
        if spec["stream"]:
            response = StreamingHttpResponse(stream_events(request, job, spec), content_type="text/event-stream")
            response["Cache-Control"] = "no-cache"
            return response
        job = await sync_to_async(finished_job)(job)

        def items():
            return [image_item(request, image, spec, job.prompt) for image in job.images.order_by("index")]

        return JsonResponse({"created": int(job.created_at.timestamp()), "data": await sync_to_async(items)()})
    except OpenAIError as error:
        return error.response()


def parse_edit(request, user) -> dict:
    """The multipart form as submit params: the same fields as a generation, plus the images."""
    data = {key: request.POST[key] for key in request.POST}
    files = {name: request.FILES.get(name) or request.FILES.get(name + "[]") for name in ("image", "mask")}
    for key in ("n", "partial_images"):
        if key in data and data[key].isdigit():
            data[key] = int(data[key])
    data["stream"] = data.get("stream") == "true"
    try:
        if files["image"] is None:
            raise OpenAIError(400, "image is required: a PNG, JPEG or WebP file.", param="image")
        auto = (data.get("size") or "auto") == "auto"
        spec = _spec(data, user)
        if auto:  # the starting image's size
            del spec["params"]["width"], spec["params"]["height"]
        for name, upload in files.items():
            if upload is not None and upload.size > settings.SDWEB["UPLOAD_MAX_BYTES"]:
                raise OpenAIError(400, f"{name}: at most {settings.SDWEB['UPLOAD_MAX_BYTES'] // 2**20} MB.", param=name)
        spec["params"]["init_image"], spec["params"]["mask"] = _image_and_mask(
            files["image"].read(), files["mask"].read() if files["mask"] else None)
        spec["params"]["denoising_strength"] = 1.0  # what an edit repaints is made anew
        spec["params"]["inpainting_fill"] = 0
    except OpenAIError as error:
        audit_refused(user=user, client_ip=throttle.client_ip(request), data=data,
                      errors=f"{error.param or 'body'}: {error}")
        raise
    return spec


def _image_and_mask(image: bytes, mask: bytes | None) -> tuple:
    """The starting image and OpenAI's mask (its transparent pixels are the ones to repaint; with
    no mask, the image's own). A file that isn't an image is left to submit, which refuses it by
    name and audits its SHA-256; each file is decoded once."""
    given = mask is not None
    try:
        upload = read_image(mask if given else image, field="mask" if given else "image")
    except ValueError:
        return image, mask
    if upload.image.mode != "RGBA":
        if given:
            raise OpenAIError(400, "mask: a PNG with transparent pixels where the image is to change is required.",
                              param="mask")
        raise OpenAIError(400, "image: without a mask, the image needs transparent pixels where it is to change.",
                          param="image")
    repaint = Upload(image=mask_from(upload.image, transparent_repaints=True), sha256=upload.sha256)
    return (image, repaint) if given else (upload, repaint)


def signed_file(request, token):
    """An image behind a signed, expiring link: no credentials needed until it expires."""
    try:
        claim = SIGNER.unsign_object(token, max_age=settings.SDWEB["SIGNED_URL_SECONDS"])
    except signing.BadSignature:  # includes SignatureExpired
        raise Http404
    image = Image.objects.filter(pk=int(claim["image"], 16), hidden=False).first()
    if image is None:  # deleted, or taken down by staff: the link dies with it
        raise Http404
    response = FileResponse(io.BytesIO(encoded(image, claim["format"])), content_type=FORMATS[claim["format"]][1])
    response["Cache-Control"] = "private, no-store"  # a copy kept elsewhere would outlive a take-down
    return response
