import hmac
import uuid

from django.conf import settings
from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required, permission_required
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from gallery.models import Image
from generation.dashboard import figures
from generation.forms import SDXL_PRESETS, SIZE_PRESETS, GenerateForm
from generation.metrics import render_database_metrics
from generation.models import Job
from generation.presenters import back_to
from generation.selectors import job_for_viewer
from generation.services.audit import audit_refused
from generation.services.credits import credits_topup_if_due
from generation.services.queue import job_cancel as cancel
from generation.services.submit import Refused, default_size, job_submit
from sdweb.throttle import client_ip


@login_required
def generate(request):
    """The studio page: the form, and beside it the live view of the job just submitted (or the
    latest one still running), with the form keeping that job's settings for the next try."""
    credits_topup_if_due(user=request.user)
    job = _job_or_none(request.user, request.GET.get("job"))
    if job is None and request.method == "GET":
        job = request.user.jobs.filter(status__in=Job.ACTIVE).select_related("checkpoint").first()
    initial = None
    if request.method == "GET":
        initial = request.GET.dict() if "prompt" in request.GET else (
            {**job.params(), "seed": -1, "checkpoint": job.checkpoint_id, "refiner": job.refiner_id,
             "vae": job.vae_id} if job else {})
    start = _start_image(request, job)
    if start is not None and request.method == "GET":
        initial = {**initial, "init_image_id": start.hex_id}
        if "prompt" not in request.GET:  # "Use as starting image": the job takes the image's size
            initial |= dict(zip(("width", "height"), default_size(start.width, start.height)))
    form = GenerateForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            job = job_submit(user=request.user, params=_params(form.cleaned_data), client_ip=client_ip(request))
        except Refused as refusal:
            form.add_error(refusal.field, str(refusal))
        else:
            return redirect(reverse("generate") + f"?job={job.pk}")
    elif request.method == "POST":
        audit_refused(user=request.user, client_ip=client_ip(request), data=request.POST.dict(), errors=form.errors)
    return render(request, "generate.html", {
        "form": form, "presets": SIZE_PRESETS, "sdxl_presets": SDXL_PRESETS, "cost_unit": settings.SDWEB["COST_UNIT"], "job": job,
        "max_side": settings.SDWEB["MAX_SIDE"],
        "recent_jobs": request.user.jobs.select_related("checkpoint")[:10], "start_image": start,
        "checkpoint_sizes": {c.pk: {"xl": c.xl, "width": c.default_width, "height": c.default_height}
                             for c in form.fields["checkpoint"].queryset},
    }, status=400 if form.errors else 200)


def _start_image(request, job):
    """The gallery image the form starts from: ?init=<id> ("Use as starting image"), the one in
    the form being resubmitted, or the one the shown job started from."""
    value = request.GET.get("init") or request.POST.get("init_image_id") or (
        f"{job.init_image_id:016x}" if job and job.init_image_id and request.method == "GET" else "")
    image = Image.objects.filter(pk=int(value, 16)).first() if _is_hex_id(value) else None
    return image if image is not None and image.can_view(request.user) else None


def _params(data: dict) -> dict:
    """The form's data as submit takes it: uploads as bytes, a gallery image by its id."""
    params = {k: v for k, v in data.items() if k not in ("init_image", "init_image_id", "mask")}
    for field in ("init_image", "mask"):
        if data.get(field):
            params[field] = data[field].read(settings.SDWEB["UPLOAD_MAX_BYTES"] + 1)
    if "init_image" not in params and data.get("init_image_id"):
        image = Image.objects.filter(pk=int(data["init_image_id"], 16)).first() if _is_hex_id(
            data["init_image_id"]) else None
        if image is None:
            raise Refused("That image no longer exists; upload a starting image.", field="init_image")
        params["init_image"] = image
    return params


def _is_hex_id(value: str) -> bool:
    return len(value) == 16 and all(c in "0123456789abcdef" for c in value)


def _job_or_none(user, job_id):
    try:
        return job_for_viewer(user, uuid.UUID(str(job_id))) if job_id else None
    except ValueError:
        return None


@login_required
def job_detail(request, job_id):
    job = job_for_viewer(request.user, job_id)
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
    if job.cancel_requested and job.status == Job.RUNNING:
        messages.info(request, "Stopping at the next step…")
    return back_to(request, reverse("job", args=[job.pk]))


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
