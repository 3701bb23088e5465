"""AUTOMATIC1111's web UI API, /sdapi/v1/, so existing clients work unchanged. Multi-user and
metered: every job goes through the same submit, charge, queue and audit as the studio's."""

import base64
import io
import json
import time
from pathlib import Path

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import JsonResponse
from drf_spectacular.utils import extend_schema
from PIL import Image as PILImage
from rest_framework.response import Response
from rest_framework.views import APIView

from generation.accounts.models import UserSettings
from generation.dialects.controlnet import a1111_field, controlnet_units
from generation.engine.request import HIRES_PARAMS, IMAGE_INPUT_PARAMS
from generation.engine.schedulers import SCHEDULERS, resolve_scheduler
from generation.jobs.live import wait_for_end
from generation.jobs.models import Job, PromptStyle
from generation.jobs.presenters import refusal_status
from generation.jobs.queue import job_cancel
from generation.jobs.submit import Refused, job_submit
from generation.library.checkpoints import checkpoints_scan
from generation.library.models import Checkpoint, Vae, is_model_name
from generation.library.selectors import checkpoints_for, user_checkpoint
from generation.provenance.audit import audit_refused
from generation.untrusted_images import decode_base64
from sdweb.shared.api_auth import ApiKeyAuthentication, CachedBasicAuthentication
from sdweb.shared.throttle import client_ip

# Fields of A1111's txt2img payload that we accept when they hold a value that leaves the image
# as we make it; any other value is refused by name rather than silently ignored.
NEUTRAL = {
    "initial_noise_multiplier": (1, 1.0, None),
    "seed_resize_from_h": (-1, 0, None), "seed_resize_from_w": (-1, 0, None),
    "eta": (None, 0, 1),  # which of these leaves the image as we make it depends on the sampler (below)
    "s_churn": (0, 0.0, None), "s_tmin": (0, 0.0, None), "s_tmax": (None, 0, 0.0, float("inf")),
    "s_noise": (1, 1.0, None), "s_min_uncond": (0, 0.0, None), "restore_faces": (False, None),
    "tiling": (False, None),
    "firstphase_width": (0, None), "firstphase_height": (0, None), "firstpass_image": (None,),
    "latent_mask": (None, ""), "mask_round": (True, None),
}
# Fields that never change the picture (saving, returning, what only other models read).
HARMLESS = {
    "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt",
    "hr_additional_modules", "do_not_save_samples", "do_not_save_grid", "save_images", "send_images",
    "disable_extra_networks", "comments", "infotext", "force_task_id", "override_settings_restore_afterwards",
    "sampler_index", "user", "image_cfg_scale", "include_init_images",  # image_cfg_scale: instruct-pix2pix only
}
USED = {"prompt", "negative_prompt", "styles", "seed", "subseed", "subseed_strength", "steps", "cfg_scale",
        "distilled_cfg_scale", "width", "height", "sampler_name", "scheduler", "batch_size", "n_iter",
        "override_settings", "refiner_checkpoint", "refiner_switch_at", "denoising_strength", *HIRES_PARAMS,
        "init_images", "mask", *IMAGE_INPUT_PARAMS, "alwayson_scripts", "script_name", "script_args"}
A1111_FIELDS = {"guidance_scale": "cfg_scale", "distilled_guidance_scale": "distilled_cfg_scale",
                "num_images": "batch_size", "refiner": "refiner_checkpoint",
                "clip_skip": "override_settings.CLIP_stop_at_last_layers", "vae": "override_settings.sd_vae",
                "init_image": "init_images"}
EMPTY_LISTS = ("hypernetworks", "face-restorers", "realesrgan-models")


def a1111_error(status: int, detail: str, error: str = "HTTPException") -> Response:
    return Response({"error": error, "detail": detail, "body": "", "errors": detail}, status=status)


class A1111View(APIView):
    authentication_classes = [ApiKeyAuthentication, CachedBasicAuthentication]


def find_checkpoint(title) -> Checkpoint | None:
    """As A1111 finds one: by title "name [hash]", name, file name, or short hash."""
    name = str(title).split(" [")[0].strip()
    found = Checkpoint.objects.enabled_named(name)
    if found is None and name and is_model_name(name):
        enabled = Checkpoint.objects.filter(enabled=True)
        found = (next((c for c in enabled.filter(source__endswith=name) if Path(c.source).name == name), None)
                 or (enabled.filter(sha256__startswith=name.lower()).first() if len(name) == 10 else None))
    return found


def find_vae(name):
    """A1111's sd_vae: "Automatic" is the checkpoint's default VAE, "None" its own, else a file name."""
    if name in ("Automatic", "Auto", "automatic", "auto", None, ""):
        return None
    if name == "None":
        return "None"  # the checkpoint decodes with its own, even where it has a default VAE
    vae = Vae.objects.enabled_named(name)
    if vae is None:
        raise ValueError(f"override_settings.sd_vae: no VAE called {name!r} (GET /sdapi/v1/sd-vae)")
    return vae


def translate(payload: dict, user) -> tuple[dict, list[str]]:
    """A1111 txt2img payload -> our submit params, plus the fields that were ignored."""
    if not isinstance(payload, dict):
        raise ValueError("body: a JSON object is required")
    ignored = []
    for field, value in payload.items():
        if field in USED:
            continue
        if field in NEUTRAL:
            if value not in NEUTRAL[field]:
                raise ValueError(f"{field}: {value!r} is not supported (only {NEUTRAL[field][0]!r})")
            ignored.append(field)
        elif field in HARMLESS:
            ignored.append(field)
        else:  # a typo, or another server's field: what it would do to the image is unknown
            raise ValueError(f"{field}: not a field of A1111's txt2img or img2img API; this server does not take it")
    overrides = payload.get("override_settings") or {}
    if not isinstance(overrides, dict):
        raise ValueError("override_settings: an object is required")
    checkpoint, clip_skip, vae = user_checkpoint(user), 1, None
    for key, value in overrides.items():
        if key == "sd_model_checkpoint":
            checkpoint = find_checkpoint(value)
            if checkpoint is None:
                raise ValueError(f"override_settings.sd_model_checkpoint: no checkpoint called {value!r}")
        elif key == "CLIP_stop_at_last_layers":
            clip_skip = value
        elif key == "sd_vae":
            vae = find_vae(value)
        else:
            raise ValueError(f"override_settings.{key}: not supported")
    for field in ("sampler_name", "sampler_index", "scheduler"):
        if not isinstance(payload.get(field) or "", str):
            raise ValueError(f"{field}: a name is required, such as \"Euler a\" or \"Karras\"")
    sampler = payload.get("sampler_name") or payload.get("sampler_index") or "Euler"
    try:
        scheduler = resolve_scheduler(sampler, payload.get("scheduler") or "automatic")
    except ValueError as error:
        raise ValueError(f"sampler_name: {error}") from error
    # A1111 runs ancestral samplers at eta 1 and DDIM at 0 (its defaults; webuiapi always sends 1);
    # the other samplers ignore eta.
    eta_default = {"DDIM": 0, "Euler a": 1, "DPM++ SDE Karras": 1}.get(scheduler)
    if payload.get("eta") is not None and eta_default is not None and payload["eta"] != eta_default:
        raise ValueError(f"eta: {payload['eta']!r} is not supported with {scheduler} (only {eta_default})")
    batch_size, n_iter = payload.get("batch_size", 1), payload.get("n_iter", 1)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in (batch_size, n_iter)):
        raise ValueError("batch_size and n_iter: whole numbers of at least 1")
    params = {
        "prompt": payload.get("prompt", ""), "negative_prompt": payload.get("negative_prompt") or "",
        "seed": payload.get("seed", -1), "steps": payload.get("steps", 50), "guidance_scale": payload.get("cfg_scale", 7.0),
        "distilled_guidance_scale": payload.get("distilled_cfg_scale", 3.5),
        "width": payload.get("width", 512), "height": payload.get("height", 512), "scheduler": scheduler,
        "num_images": batch_size * n_iter, "checkpoint": checkpoint, "clip_skip": clip_skip,
        "styles": payload.get("styles") or [],
        **({"subseed": payload.get("subseed", -1), "subseed_strength": payload["subseed_strength"]}
           if payload.get("subseed_strength") else {}),
    }
    if vae is not None:
        params["vae"] = vae
    if payload.get("script_name"):
        params["plot"] = _plot(payload)
    params |= _image_params(payload) if "init_images" in payload else _hires(payload)
    if units := controlnet_units(payload, params.get("init_image")):
        params["controlnet"] = units
    elif "alwayson_scripts" in payload:
        ignored.append("alwayson_scripts")  # no script with anything to do
    if not payload.get("enable_hr"):  # hires settings sent while it is off change nothing: say so
        unused = HIRES_PARAMS if "init_images" in payload else (*HIRES_PARAMS, "denoising_strength")
        ignored += [field for field in unused if field in payload]
    if payload.get("refiner_checkpoint"):
        # A1111 takes a title, a name or a file name; the switch point defaults to its 0.8.
        refiner = find_checkpoint(payload["refiner_checkpoint"])
        if refiner is None:
            raise ValueError(f"refiner_checkpoint: no checkpoint called {payload['refiner_checkpoint']!r}")
        params["refiner"] = refiner
        params["refiner_switch_at"] = payload.get("refiner_switch_at") or 0.8
    return params, sorted(ignored)


def _plot(payload: dict) -> dict:
    """A1111's X/Y/Z plot script: its args are [x_type, x_values, x_values_dropdown, y_…, z_…,
    draw_legend, include_lone_images, …]; a type is an index into its axis list."""
    if str(payload["script_name"]).strip().lower() != "x/y/z plot":
        raise ValueError(f"script_name: {payload['script_name']!r} is not supported (only \"x/y/z plot\")")
    args = payload.get("script_args")
    if not isinstance(args, list) or len(args) < 9:
        raise ValueError("script_args: the X/Y/Z plot's arguments are required: [x_type, x_values, x_values_dropdown, "
                         "y_type, y_values, y_values_dropdown, z_type, z_values, z_values_dropdown, …]")
    return {axis: {"type": args[3 * k], "values": args[3 * k + 1] or args[3 * k + 2] or ""}
            for k, axis in enumerate("xyz")}


def _hires(payload: dict) -> dict:
    """Hires fix, with A1111's defaults for what the payload leaves out."""
    if not payload.get("enable_hr"):
        return {}
    defaults = {"hr_scale": 2.0, "hr_upscaler": "Latent", "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0}
    params = {f: payload[f] if payload.get(f) is not None else default for f, default in defaults.items()}
    return params | {"enable_hr": True, "denoising_strength": payload.get("denoising_strength") or 0.7}


def _image_params(payload: dict) -> dict:
    """img2img's starting image and mask (base64), and its settings with A1111's defaults."""
    images = payload.get("init_images")
    if not isinstance(images, list) or len(images) != 1:
        raise ValueError("init_images: a list holding one base64-encoded image is required")
    params = {"init_image": decode_base64(images[0], field="init_images")}
    if payload.get("mask"):
        params["mask"] = decode_base64(payload["mask"], field="mask")
    defaults = {"denoising_strength": 0.75, "resize_mode": 0, "mask_blur": 4, "inpainting_fill": 0,
                "inpaint_full_res": True, "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0}
    for field, default in defaults.items():
        value = payload.get(field, default)
        if field in ("inpaint_full_res", "inpainting_mask_invert"):  # A1111 takes 0 and 1 here too
            if value not in (0, 1):
                raise ValueError(f"{field}: true or false (or 1 or 0) is required")
            value = bool(value)
        params[field] = default if value is None else value
    return params


class Txt2Img(A1111View):
    from_image = False

    @extend_schema(exclude=True)
    def post(self, request):
        try:
            if isinstance(request.data, dict) and ("init_images" in request.data) != self.from_image:
                raise ValueError("init_images: " + ("required: img2img starts from an image" if self.from_image else
                                                    "not taken here: POST it to /sdapi/v1/img2img"))
            params, ignored = translate(request.data, request.user)
        except ValueError as error:
            audit_refused(user=request.user, client_ip=client_ip(request), data=request.data, errors=error)
            return a1111_error(400, str(error))
        try:
            job = job_submit(user=request.user, params=params, client_ip=client_ip(request))
        except Refused as refusal:
            field = "script_args" if (refusal.field or "").startswith("plot") else a1111_field(
                A1111_FIELDS.get(refusal.field, refusal.field))
            return a1111_error(refusal_status(refusal), f"{field}: {refusal}" if field else str(refusal))
        # The A1111 call is synchronous: this request waits for the job's end, heard on the channel layer.
        wait_for_end(job.pk, settings.SDWEB["JOB_TIMEOUT_SECONDS"] + 600)
        job.refresh_from_db()
        if job.status != Job.SUCCEEDED:
            return a1111_error(409 if job.status == Job.CANCELLED else 422 if job.status == Job.FAILED else 504,
                               job.error or f"the job is {job.status}", error="GenerationError")
        images = list(job.images.order_by("index"))
        if job.plot:  # the grid first, then the cells if the script was asked to include them
            lone = len(request.data["script_args"]) > 10 and request.data["script_args"][10]
            images = [images[-1], *(images[:-1] if lone else [])]
        encoded, infotexts = [], []
        for image in images:
            with default_storage.open(image.png.name, "rb") as file:
                data = file.read()
            encoded.append(base64.b64encode(data).decode())
            infotexts.append(PILImage.open(io.BytesIO(data)).info.get("parameters", ""))
        seeds = [image.seed for image in images]
        spec = SCHEDULERS[job.scheduler]
        info = {
            "prompt": job.prompt, "all_prompts": [job.prompt] * len(images), "negative_prompt": job.negative_prompt,
            "all_negative_prompts": [job.negative_prompt] * len(images), "seed": job.seed, "all_seeds": seeds,
            "subseed": job.subseed, "all_subseeds": [job.subseed + k if job.subseed_strength else -1 for k in range(
                len(images))], "subseed_strength": job.subseed_strength, "width": job.width,
            "height": job.height, "sampler_name": spec.sampler, "scheduler": spec.schedule_type,
            "cfg_scale": job.guidance_scale, "distilled_cfg_scale": job.distilled_guidance_scale, "steps": job.steps,
            "batch_size": request.data.get("batch_size", 1),
            "n_iter": request.data.get("n_iter", 1), "restore_faces": False, "sd_model_name": job.checkpoint.name,
            "sd_model_hash": job.checkpoint.short_hash, "sd_vae_name": job.vae.name if job.vae else None,
            "sd_vae_hash": job.vae.sha256[:10] if job.vae else None, "seed_resize_from_w": -1, "seed_resize_from_h": -1,
            "denoising_strength": job.denoising_strength if job.mode != "txt2img" or job.enable_hr else None,
            "extra_generation_params": {}, "index_of_first_image": 0,
            "infotexts": infotexts, "styles": request.data.get("styles") or [],
            "job_timestamp": job.created_at.strftime("%Y%m%d%H%M%S"),
            "clip_skip": job.clip_skip, "is_using_inpainting_conditioning": job.checkpoint.role == "inpaint", "version": "sdweb",
            "ignored": ignored, "sdweb_job": str(job.pk), "sdweb_image_ids": [image.hex_id for image in images],
        }
        return Response({"images": encoded, "parameters": request.data, "info": json.dumps(info)})


class Img2Img(Txt2Img):
    from_image = True


class Progress(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        job = (Job.objects.filter(user=request.user, status=Job.RUNNING).order_by("-started_at").first()
               or Job.objects.filter(user=request.user, status=Job.QUEUED).order_by("created_at").first())
        state = {"skipped": False, "interrupted": False, "job": "", "job_count": 0, "job_timestamp": "0",
                 "job_no": 0, "sampling_step": 0, "sampling_steps": 0}
        if job is None:
            return Response({"progress": 0, "eta_relative": 0, "state": state, "current_image": None,
                             "textinfo": None})
        total = job.progress_total or job.steps
        progress = job.progress_step / total if total else 0
        elapsed = (time.time() - job.started_at.timestamp()) if job.started_at else 0
        eta = elapsed / progress - elapsed if progress else 0
        state.update(job=str(job.pk), job_count=1, sampling_step=job.progress_step, sampling_steps=total,
                     interrupted=job.cancel_requested, job_timestamp=job.created_at.strftime("%Y%m%d%H%M%S"))
        preview = None
        if job.preview and request.query_params.get("skip_current_image") not in ("true", "1"):
            preview = base64.b64encode(bytes(job.preview)).decode()
        return Response({"progress": round(progress, 4), "eta_relative": round(eta, 2), "state": state,
                         "current_image": preview, "textinfo": job.status})


class Interrupt(A1111View):
    @extend_schema(exclude=True)
    def post(self, request):
        for job in Job.objects.filter(user=request.user, status=Job.RUNNING):
            job_cancel(user=request.user, job_id=job.pk)
        return Response({})


class SdModels(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        # Only a base name: no server path reaches a client.
        return Response([{"title": c.title, "model_name": c.name, "hash": c.short_hash or None,
                          "sha256": c.sha256 or None, "filename": Path(c.source).name, "config": None}
                         for c in checkpoints_for(request.user)])


class RefreshCheckpoints(A1111View):
    """Staff who may add checkpoints rescan the models folder; for anyone else nothing changes."""

    @extend_schema(exclude=True)
    def post(self, request):
        if request.user.has_perm("generation.add_checkpoint"):
            checkpoints_scan(staff=request.user)
        return Response(None)


class PromptStyles(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([{"name": s.name, "prompt": s.prompt, "negative_prompt": s.negative_prompt}
                         for s in PromptStyle.objects.filter(owner=request.user)])


class Samplers(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        samplers = {}
        for spec in SCHEDULERS.values():
            entry = samplers.setdefault(spec.sampler, {"name": spec.sampler, "aliases": [], "options": {}})
            if spec.name != spec.sampler:
                entry["aliases"].append(spec.name)
        return Response(list(samplers.values()))


class Schedulers(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([{"name": name.lower(), "label": name, "aliases": None, "default_rho": -1,
                          "need_inner_model": False} for name in ("Automatic", "Uniform", "Karras")])


class Options(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        checkpoint = user_checkpoint(request.user)
        return Response({"sd_model_checkpoint": checkpoint.title if checkpoint else None,
                         "sd_checkpoint_hash": (checkpoint.sha256 or None) if checkpoint else None,
                         "CLIP_stop_at_last_layers": 1, "sd_vae": "Automatic", "samples_format": "png"})

    @extend_schema(exclude=True)
    def post(self, request):
        data = request.data if isinstance(request.data, dict) else {}
        if "sd_model_checkpoint" in data:
            checkpoint = find_checkpoint(data["sd_model_checkpoint"])
            if checkpoint is None:
                return a1111_error(400, f"sd_model_checkpoint: no checkpoint called {data['sd_model_checkpoint']!r}")
            with transaction.atomic():
                UserSettings.objects.update_or_create(user=request.user, defaults={"default_checkpoint": checkpoint})
        return JsonResponse(None, safe=False)  # A1111 answers `null`; clients parse it (DRF would send nothing)


class SdVae(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([{"model_name": vae.name, "filename": vae.name} for vae in Vae.objects.filter(enabled=True)])


class EmptyList(A1111View):
    @extend_schema(exclude=True)
    def get(self, request):
        return Response([])
