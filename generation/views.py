import base64
import hmac
import uuid
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required, permission_required
from django.core.files.storage import default_storage
from django.db.models import Sum
from django.http import FileResponse, Http404, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from gallery.models import Image
from generation.accounts.roles import allowance
from generation.credits.ledger import credits_topup_if_due
from generation.engine.controlmaps import control_map
from generation.engine.metadata import parse_parameters, read_png_parameters
from generation.engine.request import LATENT_UPSCALERS, PIXEL_UPSCALERS
from generation.forms import SDXL_PRESETS, SIZE_PRESETS, AddonUploadForm, GenerateForm
from generation.jobs import styles
from generation.jobs.models import Job
from generation.jobs.queue import job_cancel as cancel
from generation.jobs.selectors import job_for_viewer, studio_jobs
from generation.jobs.submit import Refused, job_submit
from generation.jobs.validation import default_size, settings_problems
from generation.library.addons import addon_delete, addon_upload
from generation.library.models import AddOn, Checkpoint, Vae
from generation.library.selectors import addons_for, upscaler_models
from generation.monitoring.dashboard import figures
from generation.monitoring.metrics import render_database_metrics
from generation.provenance.audit import audit_refused
from generation.provenance.trace import verify_image
from generation.untrusted_images import open_image, png_bytes, read_image
from sdweb.shared import throttle
from sdweb.shared.pages import back_to
from sdweb.shared.throttle import client_ip


@login_required
def generate(request):
    """The studio page: the form, and beside it the live view of the job just submitted (or the
    latest one still running), with the form keeping that job's settings for the next try."""
    credits_topup_if_due(user=request.user)
    recent, active, made = studio_jobs(request.user)
    job = _job_or_none(request.user, request.GET.get("job"), recent)
    if job is None and request.method == "GET":
        job = active
    initial = None
    start = _start_image(request, job)
    # The form keeps the settings of the job shown, else those that made the starting image picked
    # ("Use as starting image"), else of the user's last job (not its image).
    last = job or (start.job if start is not None and request.GET.get("init") and not start.job.upscale_by else
                   made)
    if request.method == "GET":
        initial = request.GET.dict() if "prompt" in request.GET else (
            {**last.params(), "seed": -1, "num_images": 1 if last.plot else last.num_images,
             "checkpoint": last.checkpoint_id, "refiner": last.refiner_id,
             "vae": last.vae_id, "hr_denoising_strength": last.denoising_strength if last.enable_hr else 0.7}
            if last else {})
    if start is not None and request.method == "GET":
        initial = {**initial, "init_image_id": start.hex_id}
        if "prompt" not in request.GET:  # "Use as starting image": the job takes the image's size
            initial |= dict(zip(("width", "height"), default_size(start.width, start.height)))
    control = _gallery_image(request, request.GET.get("control") or request.POST.get("cn_image_id") or "")
    if control is not None and request.method == "GET":
        initial = {**initial, "cn_image_id": control.hex_id}
    form = GenerateForm(request.POST or None, request.FILES or None, initial=initial, user=request.user)
    if request.method == "POST" and form.is_valid():
        try:
            job = _submit_count(request, _params(form.cleaned_data))
        except Refused as refusal:
            field = refusal.field or ""
            if field.startswith("controlnet"):  # the page's one unit: controlnet[0].image -> cn_image
                field = "cn_" + field.rpartition(".")[2]
            field = field.replace(".", "_") if field.startswith("plot.") else field
            form.add_error(field if field in form.fields else None, str(refusal))
            _each_fields_own_check(form)
        else:
            return redirect(reverse("generate") + f"?job={job.pk}")
    elif request.method == "POST":
        _each_fields_own_check(form)
        audit_refused(user=request.user, client_ip=client_ip(request), data=request.POST.dict(), errors=form.errors)
    return render(request, "generate.html", {
        "form": form, "presets": SIZE_PRESETS + [s for s in SDXL_PRESETS if s not in SIZE_PRESETS],
        "sd_presets": SIZE_PRESETS, "sdxl_presets": SDXL_PRESETS, "cost_unit": settings.SDWEB["COST_UNIT"], "job": job,
        "max_side": allowance(request.user).max_side,  # (a dropped picture is shrunk to it)
        "recent_jobs": recent, "start_image": start,
        "control_image": control, "loras": form.addons_of(AddOn.LORA), "last_seed": last.seed if last else "",
        "recent_prompts": list(dict.fromkeys(request.user.jobs.values_list("prompt", flat=True)[:50]))[:10],
        "embeddings": form.addons_of(AddOn.EMBEDDING),
        "checkpoint_sizes": {c.pk: c.form_facts() for c in form.fields["checkpoint"].listed},
    }, status=400 if form.errors else 200)


def _submit_count(request, params: dict) -> Job:
    """Batch count: that many jobs one after another, seeds (and variation seeds) continuing from
    the first's as A1111's batches do; returns the first. A refusal after the first stops the rest
    and says how many were queued."""
    count = params.pop("batch_count", None) or 1
    first = job_submit(user=request.user, params=params, client_ip=client_ip(request))
    step = 1 if first.plot else first.num_images
    for k in range(1, count):
        shifted = {"seed": first.seed + k * step} | (
            {"subseed": first.subseed + k * step} if first.subseed_strength else {})
        try:
            job_submit(user=request.user, params={**params, **shifted}, client_ip=client_ip(request))
        except Refused as refusal:
            messages.warning(request, f"{k} of {count} jobs queued; the next was refused: {refusal}")
            break
    else:
        if count > 1:
            messages.success(request, f"{count} jobs queued, seeds from {first.seed}: this is the first; the others "
                                      "are under Recent jobs.")
    return first


def _each_fields_own_check(form) -> None:
    for field, problem in settings_problems(form.cleaned_data).items():
        if field not in form.errors:
            form.add_error(field, problem)


def _start_image(request, job):
    """The gallery image the form starts from: ?init=<id> ("Use as starting image"), the one in
    the form being resubmitted, or the one the shown job started from."""
    value = request.GET.get("init") or request.POST.get("init_image_id") or (
        f"{job.init_image_id:016x}" if job and job.init_image_id and request.method == "GET" else "")
    return _gallery_image(request, value)


def _gallery_image(request, value: str):
    image = Image.objects.filter(pk=int(value, 16)).first() if _is_hex_id(value) else None
    return image if image is not None and image.can_view(request.user) else None


def _params(data: dict) -> dict:
    """The form's data as submit takes it: uploads as bytes, a gallery image by its id."""
    params = {k: v for k, v in data.items() if k not in ("init_image", "init_image_id", "mask")
              and not k.startswith("cn_")}
    for field in ("init_image", "mask"):
        if data.get(field):
            params[field] = data[field].read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
    if "init_image" not in params and data.get("init_image_id"):
        image = Image.objects.filter(pk=int(data["init_image_id"], 16)).first() if _is_hex_id(
            data["init_image_id"]) else None
        if image is None:
            raise Refused("That image no longer exists; upload a starting image.", field="init_image")
        params["init_image"] = image
    if data.get("cn_model"):
        params["controlnet"] = [_control_unit(data, params.get("init_image"))]
    return params


def _control_unit(data: dict, init_image) -> dict:
    """The page's ControlNet unit as submit takes it."""
    unit = {k.removeprefix("cn_"): v for k, v in data.items() if k.startswith("cn_") and k not in (
        "cn_model", "cn_image", "cn_image_id")} | {"model": data["cn_model"].name}
    if data.get("cn_image"):
        unit["image"] = data["cn_image"].read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
    elif data.get("cn_image_id"):
        unit["image"] = Image.objects.filter(pk=int(data["cn_image_id"], 16)).first() if _is_hex_id(
            data["cn_image_id"]) else None
    else:
        unit["image"] = init_image
    if unit["image"] is None:
        raise Refused("Choose a control image (or a starting image) for the ControlNet.", field="cn_image")
    if unit["module"] != "canny":
        unit.pop("threshold_a"), unit.pop("threshold_b")
    return unit


def _is_hex_id(value: str) -> bool:
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def _job_or_none(user, job_id, among: list[Job]):  # the job asked for; from `among` (listed) if there
    try:
        job_id = uuid.UUID(str(job_id)) if job_id else None
    except ValueError:
        return None
    return next((j for j in among if j.pk == job_id), None) or job_id and job_for_viewer(user, job_id=job_id)


@login_required
def job_detail(request, job_id):
    job = job_for_viewer(request.user, job_id=job_id)
    if job is None:
        raise Http404
    return render(request, "job.html", {"job": job})


@login_required
@require_POST
def job_cancel(request, job_id):
    try:
        job = cancel(user=request.user, job_id=job_id)
    except Job.DoesNotExist:
        raise Http404
    return back_to(request, reverse("job", args=[job.pk]))  # the job's panel says what happens next


def metrics(request):
    """Prometheus figures from the database, for a caller with SDWEB_METRICS_TOKEN or from an
    address in SDWEB_METRICS_ALLOW."""
    token, allowed = settings.SDWEB["METRICS_TOKEN"], settings.SDWEB["METRICS_ALLOW"]
    sent = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not (token and sent and hmac.compare_digest(sent, token)) and client_ip(request) not in allowed:
        response = HttpResponse("Metrics need a bearer token (SDWEB_METRICS_TOKEN) or an allowed address "
                                "(SDWEB_METRICS_ALLOW).\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    return HttpResponse(render_database_metrics(), content_type="text/plain; version=0.0.4; charset=utf-8")


@staff_member_required
@permission_required("generation.view_job", raise_exception=True)
def dashboard(request):
    """Staff: the key figures of the last 24 hours and 7 days, with jobs charted."""
    return render(request, "dashboard.html", {"windows": [figures(24), figures(24 * 7)]})


@login_required
@require_POST
def control_map_preview(request):
    """The ControlNet unit's map as the job will make it, from the control image (an upload or a
    gallery image), else the starting image: JSON {"image": data URL} or {"error": why}."""
    try:
        upload = request.FILES.get("cn_image") or request.FILES.get("init_image")
        image = _gallery_image(request, request.POST.get("cn_image_id") or request.POST.get("init_image_id") or "")
        if upload is not None:
            data = upload.read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
        elif image is not None:
            with default_storage.open(image.png.name, "rb") as file:
                data = file.read()
        else:
            raise ValueError("cn_image: choose a control image (or a starting image) first")
        thresholds = [float(request.POST.get(f"cn_threshold_{x}") or -1) for x in "ab"]
        picture = control_map(read_image(data, field="cn_image").image, request.POST.get("cn_module", "none"), 512,
                              *thresholds)
    except ValueError as error:
        message = str(error).partition(": ")[2] or str(error)
        return JsonResponse({"error": message[:1].upper() + message[1:]}, status=400)
    picture.thumbnail((768, 768))
    return JsonResponse({"image": "data:image/png;base64," + base64.b64encode(png_bytes(picture)).decode()})


@login_required
@require_POST
def style_save(request):
    """The form's prompts saved as a style; back to the form as it was."""
    try:
        style = styles.style_save(user=request.user, name=request.POST.get("style_name", ""),
                                  prompt=request.POST.get("prompt", ""),
                                  negative_prompt=request.POST.get("negative_prompt", ""))
        messages.success(request, f"Style {style.name!r} saved: tick it under Styles to use it.")
    except ValueError as error:
        messages.error(request, str(error).partition(": ")[2])
    return _back_to_the_form(request)


@login_required
@require_POST
def style_delete(request):
    gone = sum(styles.style_delete(user=request.user, name=name) for name in request.POST.getlist("styles"))
    messages.info(request, f"{gone} style{'s' if gone != 1 else ''} deleted." if gone else "Tick the styles to delete.")
    return _back_to_the_form(request)


def _back_to_the_form(request):
    kept = {k: v for k, v in request.POST.items() if k not in ("csrfmiddlewaretoken", "style_name", "styles", "mask")}
    return redirect(reverse("generate") + "?" + urlencode({"prompt": "", **kept}))


@login_required
def addons_page(request):
    """The add-ons a user may use (the library, published uploads, their own), and their uploads."""
    form = AddonUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            addon = addon_upload(user=request.user, kind=form.cleaned_data["kind"], name=form.cleaned_data["name"],
                                 file=form.cleaned_data["file"], preview=form.cleaned_data.get("preview"))
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            form.add_error(field if field in form.fields else None, message[:1].upper() + message[1:])
        else:
            messages.success(request, f"{addon.get_kind_display()} {addon.name} is in your library; only you can use it.")
            return redirect("addons")
    used = request.user.addons.aggregate(total=Sum("file_size"))["total"] or 0
    return render(request, "addons.html", {
        "form": form, "addons": addons_for(request.user), "used_mb": used / 2**20,
        "quota_mb": settings.SDWEB["ADDON_QUOTA_BYTES"] / 2**20}, status=400 if form.errors else 200)


@login_required
@require_POST
def addon_remove(request, addon_id):
    try:
        addon_delete(user=request.user, addon_id=addon_id)
    except AddOn.DoesNotExist:
        raise Http404
    messages.info(request, "Deleted; jobs that used it keep its name and hash.")
    return redirect("addons")


@login_required
def addon_preview(request, addon_id):
    addon = addons_for(request.user).filter(pk=addon_id).exclude(preview="").first()
    if addon is None:
        raise Http404
    response = FileResponse(default_storage.open(addon.preview, "rb"), content_type="image/png")
    response["Cache-Control"] = "private, max-age=3600"
    return response


@login_required
@require_POST
def png_info(request):
    """The A1111 parameters a dropped PNG carries, as the generate form's fields (JSON); "PNG Info"."""
    upload = request.FILES.get("image")
    try:
        picture = open_image(upload.read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1) if upload else b"", field="image")
    except ValueError as error:
        return JsonResponse({"error": str(error).partition(": ")[2]}, status=400)
    text = read_png_parameters(picture)
    if not text:
        return JsonResponse({"error": "This image carries no generation parameters (A1111 or sdweb PNG)."}, status=400)
    try:
        found = parse_parameters(text)
    except ValueError:  # "Steps: many" and the like: a file anyone can edit
        return JsonResponse({"error": "This image's parameters are not in a form A1111 or sdweb writes."}, status=400)
    fields, unused = _png_info_fields(found, request.user)
    read = ", ".join(dict.fromkeys(PNG_INFO_LABELS.get(f, f.replace("_", " ")) for f in fields))
    return JsonResponse({"fields": fields, "parameters": text, "read": f"Read {read}." + (
        f" Not used here: {', '.join(unused)}." if unused else "")})


PNG_INFO_LABELS = {"guidance_scale": "CFG scale", "distilled_guidance_scale": "distilled guidance",
                   "subseed": "variation seed", "subseed_strength": "variation seed",
                   "enable_hr": "hires fix", "hr_scale": "hires fix",
                   "hr_upscaler": "hires fix", "hr_second_pass_steps": "hires fix", "hr_denoising_strength": "hires fix",
                   "vae": "VAE", "cn_model": "ControlNet", "cn_module": "ControlNet", "cn_weight": "ControlNet"}


def _png_info_fields(found: dict, user) -> tuple[dict, list[str]]:
    """The generate form's fields from a parsed infotext (LoRAs and embeddings are in the prompt),
    and the names of what the studio has no field or no match for."""
    fields = {"prompt": found["prompt"], "negative_prompt": found["negative_prompt"],
              **{ours: found[theirs] for ours, theirs in (("steps", "steps"), ("guidance_scale", "cfg_scale"),
                                                        ("seed", "seed"), ("width", "width"), ("height", "height"),
                                                        ("clip_skip", "clip_skip"), ("scheduler", "scheduler"),
                                                        ("subseed", "subseed"), ("subseed_strength", "subseed_strength"))
                 if theirs in found}}
    unused = []
    for field, model, name in (("checkpoint", Checkpoint, found.get("model")), ("vae", Vae, found.get("VAE"))):
        match = model.objects.enabled_named(name) if name else None
        if match is not None:
            fields[field] = match.pk
        elif name:
            unused.append(f"{model._meta.verbose_name} {name!r}")
    if "Distilled CFG Scale" in found:  # Forge's FLUX.1 guidance
        fields["distilled_guidance_scale"] = float(found["Distilled CFG Scale"])
    if "Hires upscale" in found or "Hires resize" in found:
        fields |= {"enable_hr": True, "hr_denoising_strength": float(found.get("Denoising strength", 0.7))}
        if "Hires upscale" in found:
            fields["hr_scale"] = float(found["Hires upscale"])
        if found.get("Hires upscaler") in (*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *upscaler_models(user)):
            fields["hr_upscaler"] = found["Hires upscaler"]
        elif "Hires upscaler" in found:
            unused.append(f"upscaler {found['Hires upscaler']!r}")
        if "Hires steps" in found:
            fields["hr_second_pass_steps"] = int(found["Hires steps"])
    elif "Denoising strength" in found:
        fields["denoising_strength"] = float(found["Denoising strength"])
    unit = dict(part.split(": ", 1) for part in found.get("ControlNet 0", "").strip('"').split(", ") if ": " in part)
    if unit:
        model = addons_for(user, kind=AddOn.CONTROLNET).filter(name=unit.get("Model", "").split(" [")[0]).first()
        if model is None:
            unused.append(f"ControlNet {unit.get('Model', '')!r}")
        else:
            fields |= {"cn_model": model.pk, "cn_module": unit.get("Module", "none"),
                       "cn_weight": float(unit.get("Weight", 1))}
    return fields, unused


def verify_page(request):
    """Anyone's "was this made here?" (trace.verify_image), throttled per address."""
    answer, error = None, ""
    if request.method == "POST":
        if throttle.over_limit("verify-ip", client_ip(request), settings.SDWEB["VERIFY_PER_WINDOW"]):
            return throttle.lockout_response(request)
        try:
            answer = verify_image(request.FILES.get("image"))
        except ValueError as error_:
            error = str(error_).partition(": ")[2] or str(error_)
    return render(request, "verify.html", {"answer": answer, "error": error}, status=400 if error else 200)

