import tempfile

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import urlencode
from django.views.decorators.http import require_http_methods, require_POST
from PIL import Image as PILImage

from gallery import services
from gallery.models import Image
from gallery.selectors import gallery_page, parse_image_id, public_name
from generation.credits.ledger import quote_cost
from generation.engine.upscale import upscaled_size
from generation.jobs.inputs import job_control_units, job_inputs
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.library.selectors import upscaler_models
from sdweb.shared import throttle
from sdweb.shared.pages import back_to
from sdweb.shared.throttle import client_ip

UPSCALE_FACTORS = (1.5, 2, 3, 4)


def _image(hex_id) -> Image:
    return get_object_or_404(Image.objects.select_related("job", "job__checkpoint"), pk=parse_image_id(hex_id))


def _managed(request, hex_id, action: str) -> Image:
    """The image if the user may `action` it (view, change or delete); else a 404, the same
    answer as for an id that doesn't exist."""
    image = _image(hex_id)
    if not image.may(request.user, action):
        raise Http404
    return image


def _private_response(response):
    # Never cached by a browser or proxy: making an image private must close its URL at once.
    response["Cache-Control"] = "private, no-store"
    return response


def _viewable(request, hex_id) -> Image:
    """The image alone (its job isn't read: a page shows many thumbnails), if the user may see it."""
    image = get_object_or_404(Image, pk=parse_image_id(hex_id))
    if not image.can_view(request.user):
        raise Http404
    return image


def image_file(request, hex_id):
    image = _viewable(request, hex_id)
    return _private_response(FileResponse(image.png.open("rb"), content_type="image/png",
                                          as_attachment="download" in request.GET, filename=f"sdweb-{hex_id}.png"))


def image_thumbnail(request, hex_id):
    image = _viewable(request, hex_id)
    return _private_response(FileResponse(image.thumbnail.open("rb"), content_type="image/webp"))


@login_required
def gallery(request):
    query = request.GET.get("q", "").strip()
    page = gallery_page(owner=request.user, query=query, before=request.GET.get("before"), after=request.GET.get("after"))
    return render(request, "gallery.html", {"page": page, "query": query})


def explore(request):
    page = gallery_page(public=True, before=request.GET.get("before"), after=request.GET.get("after"))
    for image in page:
        image.maker = public_name(image)
    return render(request, "explore.html", {"page": page})


def share(request, slug):
    image = get_object_or_404(Image.objects.select_related("job", "job__checkpoint", "owner__studio_settings"),
                              share_slug=slug, is_public=True)
    return render(request, "share.html", {"image": image, "job": image.job, "maker": public_name(image),
                                          "remix_url": settings_url(image, with_start=False)})


def _plot(image: Image) -> dict:
    """An X/Y/Z plot's grid and cells, as the page of any of its images links them."""
    job = image.job
    if not job.plot:
        return {}
    stored = set(job.images.values_list("id", flat=True))
    cells = [(f"{i:016x}", label) for i, label in job.plot_cells if i in stored]
    grid = job.image_ids[-1]
    return {"cells": cells, "grid": f"{grid:016x}" if grid in stored else "", "is_grid": image.id == grid,
            "label": dict(job.plot_cells).get(image.id, "")}


def settings_url(image: Image, *, with_start: bool) -> str:
    """The studio form filled with the settings that made `image` (its own seed, one image); its
    starting image too for the owner ("Use these settings"), never for others ("Remix")."""
    job = image.job.as_made(image.index)
    query = {**{k: v for k, v in job.params().items() if k != "num_images"}, "seed": image.seed,
             "checkpoint": job.checkpoint_id, "num_images": 1}
    if with_start and job.init_image_id:
        query["init"] = job.init_image_hex
    return reverse("generate") + "?" + urlencode(query)


@login_required
@require_POST
def sharing_name(request):
    services.sharing_name_set(user=request.user, shown=request.POST.get("shown") == "1")
    messages.success(request, "Your name now appears on the images you share." if request.POST.get("shown") == "1"
                     else "Your images are shared without your name.")
    return redirect("account")


@require_POST
def share_report(request, slug):
    """Anyone may report a public image; staff see it in the admin's Reports."""
    image = get_object_or_404(Image, share_slug=slug, is_public=True)
    if throttle.over_limit("report-ip", client_ip(request), settings.SDWEB["REPORTS_PER_WINDOW"]):
        return throttle.lockout_response(request)
    services.report_create(image=image, reporter=request.user, reason=request.POST.get("reason", ""))
    messages.success(request, "Thank you: staff will look at this image.")
    return redirect("share", slug=slug)


@login_required
def image_page(request, hex_id):
    image = _managed(request, hex_id, "view")
    job = image.job.as_made(image.index)
    larger = Image.objects.filter(job__init_image_id=image.id, job__upscale_by__gt=0, owner=request.user)
    upscales = [(factor, *upscaled_size(image.width, image.height, factor),
                 quote_cost(width=0, height=0, steps=0, num_images=1,
                            passes=[(*upscaled_size(image.width, image.height, factor), 1)]))
                for factor in UPSCALE_FACTORS
                if max(upscaled_size(image.width, image.height, factor)) <= settings.SDWEB["UPSCALE_MAX_SIDE"]]
    with default_storage.open(image.png.name, "rb") as file:
        parameters = PILImage.open(file).info.get("parameters", "")
    return render(request, "image.html", {"image": image, "job": job, "upscales": upscales, "larger": larger,
                                          "upscaler_models": upscaler_models(request.user), "plot": _plot(image),
                                          "parameters": parameters,
                                          "use_settings_url": settings_url(image, with_start=True),
                                          "may_change": image.may(request.user, "change"),
                                          "may_delete": image.may(request.user, "delete")})


@login_required
@require_POST
def image_visibility(request, hex_id):
    try:
        image = services.image_set_public(image=_managed(request, hex_id, "change"),
                                          public=request.POST.get("public") == "1", actor=request.user)
    except PermissionError as error:
        messages.error(request, str(error))
        return redirect("image", hex_id=hex_id)
    messages.success(request, "Public: anyone with the share link can see it." if image.is_public
                     else "Private again: its share link and file URL no longer work for others.")
    return redirect("image", hex_id=hex_id)


@login_required
@require_http_methods(["GET", "POST"])
def image_delete(request, hex_id):
    """GET asks to confirm (deleting is for good); POST deletes."""
    image = _managed(request, hex_id, "delete")
    if request.method == "GET":
        return render(request, "image_delete.html", {"image": image})
    services.images_delete(images=[image], actor=request.user)
    messages.success(request, "Image deleted.")
    return redirect("gallery")


@login_required
@require_POST
def image_variants(request, hex_id):
    """Same settings, new seeds: a new job through the same checks, charge and audit."""
    image = _managed(request, hex_id, "view")
    if image.hidden:
        messages.error(request, "This image was hidden by staff: no new images can be made from it.")
        return redirect("image", hex_id=hex_id)
    job = image.job
    params = {**job.params(), "seed": -1, "checkpoint": job.checkpoint, **job_inputs(job),
              "controlnet": job_control_units(job)}
    try:
        new_job = job_submit(user=request.user, params=params, client_ip=client_ip(request))
    except Refused as refusal:
        messages.error(request, str(refusal))
        return redirect("image", hex_id=hex_id)
    return redirect("job", job_id=new_job.pk)


@login_required
@require_POST
def image_upscale(request, hex_id):
    """A larger copy of an image as its own job: charged, and beside the original in the gallery."""
    image = _managed(request, hex_id, "view")
    scale = request.POST.get("upscale_by", "")
    try:
        scale = float(scale)
    except ValueError:
        pass  # refused by submit, by name
    try:
        job = job_submit(user=request.user, client_ip=client_ip(request), params={
            "init_image": image, "upscale_by": scale, "upscaler": request.POST.get("upscaler", "Lanczos")})
    except Refused as refusal:
        messages.error(request, str(refusal))
        return redirect("image", hex_id=hex_id)
    return redirect("job", job_id=job.pk)


@login_required
@require_POST
def job_keep(request, job_id):
    job = get_object_or_404(Job, pk=job_id, user=request.user)
    keep = {parse_image_id(value) for value in request.POST.getlist("keep")}
    if None in keep:
        raise Http404
    deleted = services.images_keep(job=job, keep_ids=keep)
    messages.success(request, f"Kept {job.images.count()}, discarded {deleted}.")
    return back_to(request, reverse("job", args=[job.pk]))


@login_required
def account_export(request):
    archive = tempfile.TemporaryFile()
    services.export_zip(user=request.user, into=archive)
    archive.seek(0)
    return FileResponse(archive, as_attachment=True, filename=f"sdweb-{request.user.get_username()}-images.zip",
                        content_type="application/zip")
