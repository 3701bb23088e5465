from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from generation import services
from generation.forms import SIZE_PRESETS, GenerateForm
from generation.models import Job
from generation.selectors import job_for_viewer
from sdweb.throttle import client_ip


@login_required
def generate(request):
    services.credits_topup_if_due(user=request.user)
    form = GenerateForm(request.POST or None, initial=request.GET.dict() if request.method == "GET" else None)
    if request.method == "POST" and form.is_valid():
        try:
            job = services.job_submit(user=request.user, params=form.cleaned_data, client_ip=client_ip(request))
        except services.Refused as refusal:
            form.add_error(refusal.field, str(refusal))
        else:
            return redirect("job", job_id=job.pk)
    return render(request, "generate.html", {
        "form": form, "presets": SIZE_PRESETS, "cost_unit": settings.SDWEB["COST_UNIT"],
        "recent_jobs": request.user.jobs.select_related("checkpoint")[:10],
    }, status=400 if form.errors else 200)


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
        job = services.job_cancel(user=request.user, job_id=job_id)
    except Job.DoesNotExist:
        raise Http404
    if job.status == Job.CANCELLED:
        messages.info(request, "Cancelled; the credits are back.")
    elif job.cancel_requested:
        messages.info(request, "Stopping at the next step…")
    return redirect("job", job_id=job.pk)
