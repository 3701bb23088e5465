"""Submitting: validate, filter, quote, and in one transaction charge, create the job and audit
it; or refuse (audited too) naming the field."""

import hashlib
import io
import itertools
import json
import math
import random

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction
from PIL import Image as PILImage

from gallery.models import Image
from generation import filters
from generation.engine.plot import AXES, FIELDS, SUPPORTED, axis_values
from generation.engine.plot import label as plot_label
from generation.engine.prompts import LORA_TAG, embedding_pattern, lora_tags
from generation.engine.request import (
    CONTROL_MODES,
    LATENT_UPSCALERS,
    MAX_SEED,
    MIN_SIDE,
    PIXEL_UPSCALERS,
    RESIZE_MODES,
    ControlUnit,
    GenerationRequest,
    Limits,
    LoraUse,
    ModelRef,
)
from generation.engine.schedulers import resolve_scheduler
from generation.engine.upscale import UPSCALERS, check_upscale, upscaled_size
from generation.models import INPUT_DIGESTS, AddOn, Checkpoint, CreditEntry, Job, PromptAudit, UserSettings, Vae, new_image_id
from generation.selectors import addon_named, addons_for
from generation.services.audit import audit_append
from generation.services.credits import credits_change, locked_account, quote_cost
from generation.services.queue import enqueue_job
from generation.services.styles import styled
from generation.uploads import Upload, flattened, mask_from, png_bytes, read_image


class Refused(Exception):
    """A submission that was not accepted; `field` names the input at fault, if one is, and
    `code` says why: invalid, insufficient_credits, active_job_cap, idempotency_mismatch, blocked or
    suspended; `audit_reason`, when given, is what the audit records instead of the message."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid", audit_reason: str = ""):
        super().__init__(message)
        self.field, self.code, self.audit_reason = field, code, audit_reason


def engine_limits() -> Limits:
    return Limits(max_side=settings.SDWEB["MAX_SIDE"], max_images=settings.SDWEB["MAX_IMAGES"],
                  max_steps=settings.SDWEB["MAX_STEPS"])


def _with_styles(user, params: dict) -> dict:
    """The prompts as the job runs them: the user's styles named in params applied."""
    if not params.get("styles"):
        return params
    try:
        prompt, negative = styled(user=user, names=params["styles"], prompt=params.get("prompt") or "",
                                  negative_prompt=params.get("negative_prompt") or "")
    except ValueError as error:
        raise _refused(error) from error
    return {**params, "prompt": prompt, "negative_prompt": negative}


def settings_problems(values: dict) -> dict[str, str]:
    """The engine's check of each setting on its own, {field: why}, so that a refusal can name
    every problem in one round rather than one at a time."""
    problems = {}
    for field, value in values.items():
        if field not in Job.PARAMS or field in ("prompt", "negative_prompt"):
            continue
        try:
            GenerationRequest(prompt="x", model="x", **{field: value}).validate(engine_limits())
        except (TypeError, ValueError) as error:
            if str(error).startswith(field + " "):
                problems[field] = str(error)[:1].upper() + str(error)[1:]
    return problems


def job_submit(*, user, params: dict, client_ip: str | None = None, idempotency_key: str | None = None) -> Job:
    """Validate, quote, and in one transaction charge, create the job and audit it; or refuse
    (audited too) with a message naming the field. With an `idempotency_key`, a repeated request
    returns the job the first one made, charged once, with `replayed` True (False on a new job);
    the same key with other params is refused."""
    params = {**params, **input_digests(params)}  # the audit records what the job starts from
    fingerprint = request_fingerprint(params)
    idempotency_key = (idempotency_key or "").strip() or None
    if idempotency_key and not (len(idempotency_key) <= 200 and idempotency_key.isascii()
                                and idempotency_key.isprintable()):
        refusal = Refused("An Idempotency-Key is at most 200 printable ASCII characters.", field="Idempotency-Key")
        audit_append(user=user, client_ip=client_ip, params=params, decision=PromptAudit.REFUSED, reason=str(refusal))
        raise refusal
    if idempotency_key:
        earlier = Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
        if earlier is not None:
            if earlier.request_fingerprint != fingerprint:
                raise Refused("This Idempotency-Key was already used with a different request.",
                              code="idempotency_mismatch")
            earlier.replayed = True
            return earlier
    try:
        params = _with_styles(user, params)
        inputs = _image_inputs(user, params)
        validate = _validated_upscale if "upscale_by" in params else _validated_plot if params.get("plot") else _validated
        checkpoint, fields = validate(params, inputs, user)
        _check_allowed(user, fields["prompt"])
    except Refused as refusal:
        audit_append(user=user, client_ip=client_ip, params=params, decision=PromptAudit.REFUSED,
                     reason=refusal.audit_reason or str(refusal))
        raise
    cost = quote_cost(width=0, height=0, steps=0, num_images=1 if fields.get("plot") else fields["num_images"],
                      passes=fields.pop("passes"),
                      controlnet_units=sum(a["kind"] == AddOn.CONTROLNET for a in fields.get("addons", [])))
    fields |= _stored_inputs(inputs, fields.get("addons", []))
    try:
        with transaction.atomic():
            account = locked_account(user)
            refusal = None
            active = Job.objects.filter(user=user, status__in=Job.ACTIVE).count()
            if active >= settings.SDWEB["ACTIVE_JOB_CAP"]:
                refusal = Refused(f"You already have {active} jobs queued or running, the most allowed at once; "
                                  "wait for one to finish or cancel one.", code="active_job_cap")
            elif account.balance < cost:
                refusal = Refused(f"This costs {cost} credits and your balance is {account.balance}.",
                                  code="insufficient_credits")
            if refusal:
                audit_append(user=user, client_ip=client_ip, params=params, checkpoint=checkpoint,
                             decision=PromptAudit.REFUSED, reason=str(refusal))
            else:
                job = Job.objects.create(user=user, checkpoint=checkpoint, cost=cost, idempotency_key=idempotency_key,
                                         request_fingerprint=fingerprint,
                                         image_ids=[new_image_id() for _ in range(fields["num_images"])], **fields)
                credits_change(user=user, kind=CreditEntry.CHARGE, amount=-cost, reason="generation", job=job)
                audit_append(user=user, client_ip=client_ip, params=params, checkpoint=checkpoint,
                             decision=PromptAudit.ACCEPTED, job=job)
                transaction.on_commit(enqueue_job)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same key raced in twice: the other request's job stands, this one charged nothing.
        return job_submit(user=user, params=params, client_ip=client_ip, idempotency_key=idempotency_key)
    if refusal:
        raise refusal
    job.replayed = False
    return job


def _check_allowed(user, prompt: str) -> None:
    """Refuse suspended accounts and prompts that match a block rule."""
    suspended = UserSettings.objects.filter(user=user, suspended_at__isnull=False).first()
    if suspended:
        raise Refused("Your account is suspended, so it can't generate images"
                      + (f": {suspended.suspended_reason}" if suspended.suspended_reason else "."), code="suspended")
    rule = filters.blocked_by(prompt)
    if rule:
        raise Refused("This prompt asks for something this site doesn't allow; change it and try again.",
                      field="prompt", code="blocked", audit_reason=f"blocked by the prompt filter rule {rule!r}")


def request_fingerprint(params: dict) -> str:
    shown = {k: str(v.name if isinstance(v, (Checkpoint, Vae)) else v) for k, v in params.items()
             if k in Job.PARAMS or k in ("checkpoint", "refiner", "vae", "upscale_by", "upscaler", *INPUT_DIGESTS)}
    if isinstance(params.get("controlnet"), list):  # the units' settings; their images are in the digests
        shown["controlnet"] = str([{k: v for k, v in unit.items() if k != "image"} if isinstance(unit, dict) else unit
                                   for unit in params["controlnet"]])
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def _validated(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    checkpoint = params.get("checkpoint")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.objects.enabled_named(checkpoint)
    if checkpoint is None or not checkpoint.enabled:
        raise Refused("Choose one of the available checkpoints.", field="checkpoint")
    if checkpoint.role == "refiner" or checkpoint.role == "inpaint" and "mask" not in inputs:
        raise Refused(f"{checkpoint.name} is {checkpoint.get_family_display()}: it can't make an image "
                      f"{'without a mask' if checkpoint.role == 'inpaint' else 'from text alone'}; choose another "
                      "checkpoint.", field="checkpoint")
    refiner = _refiner(checkpoint, params.get("refiner"))
    vae = _vae(checkpoint, params.get("vae"))
    fields = {f: params[f] for f in Job.PARAMS if f in params}
    fields.setdefault("negative_prompt", "")
    if "init_image" in inputs:  # img2img's size defaults to the starting image's, within the limits
        width, height = default_size(*inputs["init_image"].size)
        fields.setdefault("width", width)
        fields.setdefault("height", height)
    addons, engine_addons = _addons(user, checkpoint, fields, params.get("controlnet"), inputs.get("controlnet", []))
    try:
        request = GenerationRequest(model=checkpoint.source, **fields, init_image=inputs.get("init_image"),
                                    mask=inputs.get("mask"), **engine_addons)
        request.validate(engine_limits())
    except (TypeError, ValueError) as error:
        message = str(error)
        field = next((f for f in (*Job.PARAMS, "init_image", "mask", "controlnet") if message.startswith(f + " ")), None)
        raise Refused(message[:1].upper() + message[1:], field=field) from error
    # The seed is fixed now, so a retried job makes the same images.
    return checkpoint, {**{f: getattr(request, f) for f in Job.PARAMS}, "seed": request.seeds()[0],
                        "subseed": request.subseeds()[0] if request.subseed_strength else -1, "refiner": refiner,
                        "vae": vae, "addons": addons, "passes": request.passes()}


def _validated_plot(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    """An X/Y/Z plot: every cell validated as a job of its own (one image), with the seed fixed once
    for all as A1111 does; the job makes the cells and their grid and costs what the cells cost."""
    plot = params["plot"]
    if not isinstance(plot, dict) or set(plot) - {"x", "y", "z"}:
        raise Refused("An X/Y/Z plot is {\"x\": {\"type\": …, \"values\": …}, \"y\": …, \"z\": …}.", field="plot")
    if "init_image" in inputs or params.get("controlnet"):
        raise Refused("An X/Y/Z plot runs from text here: no starting image or ControlNet.", field="plot")
    if params.get("num_images", 1) != 1:
        raise Refused("An X/Y/Z plot makes one image per cell: num_images must be 1.", field="num_images")
    base = {k: v for k, v in params.items() if k != "plot"}
    checkpoint, fields = _validated(base, inputs, user)
    axes = _plot_axes(plot, base)
    count = math.prod(len(axis["values"]) for axis in axes)
    if count > settings.SDWEB["PLOT_MAX_CELLS"]:
        raise Refused(f"This plot has {count} cells; at most {settings.SDWEB['PLOT_MAX_CELLS']}.", field="plot")
    cells, passes = [], []
    subseed = fields["subseed"] if fields["subseed"] != -1 else random.SystemRandom().randint(0, MAX_SEED)
    for values in itertools.product(*(axis["values"] for axis in reversed(axes))):  # x varies fastest
        cell = {**base, "seed": fields["seed"], "subseed": subseed}
        for axis, value in zip(reversed(axes), values):
            cell = _plot_apply(axis, cell, value)
        try:
            cell_checkpoint, cell_fields = _validated(cell, inputs, user)
        except Refused as refusal:
            raise Refused(f"Plot cell {', '.join(map(str, reversed(values)))}: {refusal}", field="plot") from None
        cells.append({"label": " · ".join(plot_label(axis["type"], value) for axis, value in zip(axes, values[::-1])),
                      "params": {f: cell_fields[f] for f in Job.PARAMS if cell_fields[f] != fields[f]},
                      "checkpoint": cell_checkpoint.pk, "vae": cell_fields["vae"] and cell_fields["vae"].pk,
                      "refiner": cell_fields["refiner"] and cell_fields["refiner"].pk, "addons": cell_fields["addons"]})
        passes += cell_fields["passes"]
    return checkpoint, {**fields, "num_images": len(cells) + 1, "passes": passes,
                        "plot": {"axes": [{k: a[k] for k in ("axis", "type", "values")} for a in axes], "cells": cells}}


def _plot_axes(plot: dict, base: dict) -> list[dict]:
    """The axes in x, y, z order, "Nothing" left out; a type is A1111's index or its label."""
    axes = []
    for name in ("x", "y", "z"):
        axis = plot.get(name) or {}
        kind, text = (axis.get("type", "Nothing"), axis.get("values", "")) if isinstance(axis, dict) else (None, None)
        if isinstance(kind, int) and not isinstance(kind, bool) and 0 <= kind < len(AXES):
            kind = AXES[kind]
        if kind not in AXES:
            raise Refused(f"plot.{name}.type must be one of {', '.join(SUPPORTED)} (or A1111's index).",
                          field=f"plot.{name}.type")
        if kind == "Nothing":
            continue
        if kind not in SUPPORTED:
            raise Refused(f"plot.{name}.type {kind!r} is not supported here; one of {', '.join(SUPPORTED)}.",
                          field=f"plot.{name}.type")
        try:
            values = axis_values(kind, ", ".join(map(str, text)) if isinstance(text, list) else text)
        except ValueError as error:
            raise Refused(f"plot.{name}.values for {kind}: {error}.", field=f"plot.{name}.values") from None
        if kind == "Prompt S/R" and not any(values[0] in (base.get(f) or "") for f in ("prompt", "negative_prompt")):
            raise Refused(f"plot.{name}.values: Prompt S/R replaces its first value, {values[0]!r}, which neither "
                          "prompt holds.", field=f"plot.{name}.values")
        axes.append({"axis": name, "type": kind, "values": values})
    if not axes:
        raise Refused("An X/Y/Z plot needs at least one axis.", field="plot.x.type")
    return axes


def _plot_apply(axis: dict, cell: dict, value) -> dict:
    """A cell's params with one axis's value set."""
    name = FIELDS[axis["type"]][0]
    if axis["type"] == "Prompt S/R":
        search = axis["values"][0]
        return {**cell, **{f: (cell.get(f) or "").replace(search, value) for f in ("prompt", "negative_prompt")}}
    if axis["type"] == "Sampler":
        try:
            value = resolve_scheduler(value)
        except ValueError as error:
            raise Refused(f"plot.{axis['axis']}.values: {error}.", field=f"plot.{axis['axis']}.values") from None
    if axis["type"] in ("Seed", "Var. seed") and value == -1:
        value = random.SystemRandom().randint(0, MAX_SEED)
    if axis["type"] == "VAE" and value == "None":
        value = None
    return {**cell, name: value}


def _addons(user, checkpoint: Checkpoint, fields: dict, units, control_images: list) -> tuple[list, dict]:
    """The LoRAs the prompt's <lora:...> tags name, the embeddings either prompt names (of the
    checkpoint's family, as A1111 skips the others) and the ControlNet units: (what the job
    records: names, hashes, settings; the same as the engine takes them)."""
    family = checkpoint.family.split("-")[0]
    records, engine = [], {"loras": [], "embeddings": [], "controlnets": []}
    if not all(isinstance(fields.get(f), str) for f in ("prompt", "negative_prompt")):
        return records, {}  # the engine's checks name the field
    try:
        tags = lora_tags(fields["prompt"])
    except ValueError as error:
        raise Refused(str(error), field="prompt") from None
    if LORA_TAG.search(fields["negative_prompt"]):
        raise Refused("LoRA tags work in the prompt, not the negative prompt.", field="negative_prompt")
    for name, unet, te in tags:
        addon = _addon(user, AddOn.LORA, name, family, checkpoint, "prompt")
        records.append({"kind": AddOn.LORA, "name": name, "sha256": addon.sha256, "unet": unet, "te": te})
        engine["loras"].append(LoraUse(ModelRef(addon.source, name=name, hash=addon.short_hash), unet, te))
    embeddings = {e.name.lower(): e for e in reversed(addons_for(user, AddOn.EMBEDDING).filter(family=family))}
    pattern = embedding_pattern(e.name for e in embeddings.values())
    named = {m.lower() for text in (fields["prompt"], fields["negative_prompt"]) for m in pattern.findall(text)} if (
        pattern) else set()
    for addon in (embeddings[name] for name in sorted(named)):
        records.append({"kind": AddOn.EMBEDDING, "name": addon.name, "sha256": addon.sha256})
        engine["embeddings"].append(ModelRef(addon.source, name=addon.name, hash=addon.short_hash))
    for k, (unit, upload) in enumerate(zip(units or [], control_images)):
        addon = _addon(user, AddOn.CONTROLNET, str(unit.get("model") or "").split(" [")[0], family, checkpoint,
                       f"controlnet[{k}].model")
        settings_ = {"module": unit.get("module") or "none", "weight": unit.get("weight", 1.0),
                     "guidance_start": unit.get("guidance_start", 0.0), "guidance_end": unit.get("guidance_end", 1.0),
                     "control_mode": _choice(unit.get("control_mode", 0), CONTROL_MODES, f"controlnet[{k}].control_mode"),
                     "resize_mode": _choice(unit.get("resize_mode", 1), RESIZE_MODES, f"controlnet[{k}].resize_mode"),
                     "processor_res": unit.get("processor_res", 512), "threshold_a": unit.get("threshold_a", -1),
                     "threshold_b": unit.get("threshold_b", -1)}
        records.append({"kind": AddOn.CONTROLNET, "name": addon.name, "sha256": addon.sha256, **settings_,
                        "image_sha256": upload.sha256})  # "image": its stored file, named when it is stored
        engine["controlnets"].append(ControlUnit(ModelRef(addon.source, family=family, name=addon.name,
                                                          hash=addon.short_hash), upload.image, **settings_))
    engine = {k: tuple(v) for k, v in engine.items()}
    if fields.get("enable_hr") and isinstance(fields.get("hr_upscaler"), str) and fields["hr_upscaler"] not in (
            *LATENT_UPSCALERS, *PIXEL_UPSCALERS):
        records.append(_upscaler_record(user, fields["hr_upscaler"], "hr_upscaler"))
        engine["upscaler_model"] = ModelRef(fields["hr_upscaler"], name=fields["hr_upscaler"])  # named; run finds the file
    return records, engine


def _upscaler_record(user, name: str, field: str) -> dict:
    addon = _addon(user, AddOn.UPSCALER, name, "any", None, field)
    return {"kind": AddOn.UPSCALER, "name": addon.name, "sha256": addon.sha256}


def _addon(user, kind: str, name: str, family: str, checkpoint: Checkpoint, field: str) -> AddOn:
    addon = addon_named(user, kind, name)
    label = dict(AddOn.KINDS)[kind]
    if addon is None:
        where = {AddOn.LORA: "GET /sdapi/v1/loras", AddOn.CONTROLNET: "GET /controlnet/model_list",
                 AddOn.UPSCALER: "GET /sdapi/v1/upscalers"}[kind]
        raise Refused(f"No {label} called {name!r}; the Add-ons page (or {where}) lists those you can use.",
                      field=field)
    if addon.family not in (family, "any"):
        raise Refused(f"{label} {name!r} is for {addon.get_family_display()}; checkpoint {checkpoint.name!r} is "
                      f"{checkpoint.get_family_display()}.", field=field)
    return addon


def _choice(value, allowed: tuple, field: str) -> int:
    """A1111's extension takes a mode as its index or its label (any capitalisation)."""
    if isinstance(value, str):
        labels = [label.lower() for label in allowed]
        if value.lower() not in labels:
            raise Refused(f"One of {', '.join(allowed)} (or 0-{len(allowed) - 1}).", field=field)
        return labels.index(value.lower())
    return value


def _validated_upscale(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    """An upscale of a gallery image: the source job's prompt and settings, the new size; it
    costs one step at that size."""
    source = params.get("init_image")
    if not isinstance(source, Image) or "mask" in inputs:
        raise Refused("Upscaling takes a finished image of the gallery (init_image, no mask).", field="init_image")
    upscaler = params.get("upscaler") or "Lanczos"
    addons = [] if upscaler in UPSCALERS or not isinstance(upscaler, str) else [
        _upscaler_record(user, upscaler, "upscaler")]
    try:
        check_upscale(params["upscale_by"], upscaler, source.width, source.height, settings.SDWEB["UPSCALE_MAX_SIDE"],
                      models=[a["name"] for a in addons])
    except ValueError as error:
        raise Refused(str(error)[:1].upper() + str(error)[1:], field=str(error).split(" ")[0]) from error
    width, height = upscaled_size(source.width, source.height, params["upscale_by"])
    job = source.job
    kept = {f: getattr(job, f) for f in ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler", "clip_skip")}
    return job.checkpoint, {**kept, "width": width, "height": height, "num_images": 1, "seed": source.seed,
                            "upscale_by": params["upscale_by"], "upscaler": upscaler, "vae": job.vae,
                            "addons": addons, "passes": [(width, height, 1)]}


def default_size(width: int, height: int) -> tuple[int, int]:
    """A picture's size made a job's: shrunk to SDWEB_MAX_SIDE keeping its aspect ratio, in
    multiples of 8, at least MIN_SIDE a side."""
    shrink = min(1, settings.SDWEB["MAX_SIDE"] / max(width, height))
    return tuple(max(MIN_SIDE, int(side * shrink) // 8 * 8) for side in (width, height))


def input_digests(params: dict) -> dict:
    """The SHA-256 of the starting image and mask as received (gallery images: their file), and
    the gallery image id, for the audit; also for uploads that turn out not to be images."""
    digests = {}
    for field in ("init_image", "mask"):
        value = params.get(field)
        if isinstance(value, (bytes, bytearray)):
            digests[f"{field}_sha256"] = hashlib.sha256(value).hexdigest()
        elif isinstance(value, Upload):
            digests[f"{field}_sha256"] = value.sha256
        elif isinstance(value, Image):
            digests[f"{field}_id"] = value.hex_id
    units = params.get("controlnet")
    if isinstance(units, list) and units:
        digests["controlnet_sha256"] = [_digest(unit.get("image") if isinstance(unit, dict) else None) for unit in units]
    return digests


def _digest(value) -> str:
    if isinstance(value, (bytes, bytearray)):
        return hashlib.sha256(value).hexdigest()
    return value.sha256 if isinstance(value, Upload) else f"image {value.hex_id}" if isinstance(value, Image) else ""


def _image_inputs(user, params: dict) -> dict:
    """The starting image (RGB) and mask (L, white = repaint) as the engine takes them, and each
    ControlNet unit's image (an Upload) under "controlnet"."""
    inputs, init, mask = {"controlnet": _control_images(user, params.get("controlnet"))}, params.get("init_image"), \
        params.get("mask")
    if init in (None, "", b""):
        if mask not in (None, "", b""):
            raise Refused("A mask needs a starting image (init_image).", field="init_image")
        return inputs
    try:
        upload = _upload(user, init, "init_image")
        inputs["init_image"], inputs["init_image_sha256"] = flattened(upload.image), upload.sha256
        if mask not in (None, "", b""):
            upload = mask if isinstance(mask, Upload) else read_image(mask, field="mask")
            inputs["mask"], inputs["mask_sha256"] = mask_from(upload.image), upload.sha256
    except ValueError as error:
        raise _refused(error) from error
    if "mask" in inputs and inputs["mask"].size != inputs["init_image"].size:
        raise Refused(f"The mask is {inputs['mask'].width}x{inputs['mask'].height}; it must be the starting image's "
                      f"size, {inputs['init_image'].width}x{inputs['init_image'].height}.", field="mask")
    if isinstance(params.get("init_image"), Image):
        inputs["init_image_id"] = params["init_image"].id
    return inputs


def _control_images(user, units) -> list[Upload]:
    if units in (None, "", []):
        return []
    most = settings.SDWEB["CONTROLNET_MAX_UNITS"]
    if not isinstance(units, list) or not all(isinstance(unit, dict) for unit in units):
        raise Refused("controlnet: a list of units (objects with image, module, model...) is required.",
                      field="controlnet")
    if len(units) > most:
        raise Refused(f"controlnet: {len(units)} units; at most {most} are allowed in one job.", field="controlnet")
    try:
        return [Upload(flattened(u.image), u.sha256) for u in (
            _upload(user, unit.get("image"), f"controlnet[{k}].image") for k, unit in enumerate(units))]
    except ValueError as error:
        raise _refused(error) from error


def _upload(user, value, field: str) -> Upload:
    """An image as received (bytes or an Upload) or a gallery image the user may see, read with
    the upload checks; its SHA-256 is of the file received (a gallery image's: its PNG)."""
    if isinstance(value, Upload):
        return value
    if isinstance(value, Image):
        if not value.can_view(user):
            raise ValueError(f"{field}: upload a PNG, JPEG or WebP file, or give the id of an image of yours "
                             "(or a public one)")
        if value.hidden:  # a takedown holds for everything made from the image
            raise ValueError(f"{field}: image {value.hex_id} was hidden by staff and can't be used to make images")
        with default_storage.open(value.png.name, "rb") as file:
            value = file.read()
    return read_image(value, field=field)


def _refused(error: ValueError) -> Refused:
    field, _, message = str(error).partition(": ")
    return Refused(message[:1].upper() + message[1:] + ".", field=field)


def job_inputs(job: Job) -> dict:
    """A job's starting image and mask as stored, as submit takes them again (more variants) and
    the engine takes them (PIL images under .image), each with the SHA-256 of the file received."""
    inputs = {}
    for field, mode in (("init_image", "RGB"), ("mask", "L")):
        if getattr(job, field):
            with default_storage.open(getattr(job, field), "rb") as file:
                image = PILImage.open(io.BytesIO(file.read()), formats=["PNG"]).convert(mode)
            inputs[field] = Upload(image=image, sha256=getattr(job, f"{field}_sha256"))
    return inputs


def job_control_units(job: Job) -> list[dict]:
    """A job's ControlNet units as submit takes them again (more variants)."""
    units = []
    for record in job.addons:
        if record["kind"] == AddOn.CONTROLNET:
            with default_storage.open(record["image"], "rb") as file:
                image = PILImage.open(io.BytesIO(file.read()), formats=["PNG"]).convert("RGB")
            units.append({k: v for k, v in record.items() if k not in ("kind", "name", "sha256", "image", "image_sha256")}
                         | {"model": record["name"], "image": Upload(image=image, sha256=record["image_sha256"])})
    return units


def _stored_inputs(inputs: dict, addons: list[dict]) -> dict:
    """Write the starting image, mask and control images as clean PNGs, each named by what it is
    and the stored file's own SHA-256 (the same picture sent again stores nothing new, and no
    other file can take its name), and give the Job fields (and unit records) that point at them."""
    units = [record for record in addons if record["kind"] == AddOn.CONTROLNET]
    for record, upload in zip(units, inputs["controlnet"]):
        record["image"] = _stored("control", upload.image)
    fields = {field: _stored(field, inputs[field]) for field in ("init_image", "mask") if field in inputs}
    fields |= {f"{field}_sha256": inputs[f"{field}_sha256"] for field in fields}
    return fields | ({"init_image_id": inputs["init_image_id"]} if "init_image_id" in inputs else {})


def _stored(kind: str, image: PILImage.Image) -> str:
    data = png_bytes(image)
    name = f"inputs/{kind}-{hashlib.sha256(data).hexdigest()}.png"
    return name if default_storage.exists(name) else default_storage.save(name, ContentFile(data))


def _vae(checkpoint: Checkpoint, vae) -> Vae | None:
    """A VAE named by the request, else the checkpoint's default, else none (its own); "None"
    (A1111's word) is the checkpoint's own even where it has a default."""
    if vae == "None":
        return None
    if vae in (None, ""):
        return checkpoint.default_vae if checkpoint.default_vae and checkpoint.default_vae.enabled else None
    if not isinstance(vae, Vae):
        vae = Vae.objects.enabled_named(vae)
    if vae is None or not vae.enabled:
        raise Refused("No enabled VAE has that name; GET /api/v1/vaes/ lists them.", field="vae")
    return vae


def _refiner(checkpoint: Checkpoint, refiner) -> Checkpoint | None:
    if refiner in (None, ""):
        return None
    if not isinstance(refiner, Checkpoint):
        refiner = Checkpoint.objects.enabled_named(refiner)
    if refiner is None or not refiner.enabled:
        raise Refused("No enabled checkpoint has that name; choose an SDXL refiner.", field="refiner")
    if not (checkpoint.xl and refiner.family in ("sdxl", "sdxl-refiner")):
        raise Refused(f"{refiner.name} can't refine {checkpoint.name}: a refiner must be an SDXL refiner or base, "
                      "for an SDXL checkpoint.", field="refiner")
    return refiner
