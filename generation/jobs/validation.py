"""A submission's settings checked against the engine and the library: the checkpoint and its
role, the refiner, the VAE, each add-on and ControlNet unit, an upscale; refusals name the field."""

from enum import StrEnum

from django.conf import settings

from gallery.models import Image
from generation.accounts.roles import Allowance, allowance
from generation.engine.families import FAMILIES, refiner_problem, role_problem
from generation.engine.parts import check_request
from generation.engine.request import MIN_SIDE, GenerationRequest, Limits
from generation.engine.upscale import UPSCALERS, check_upscale, upscaled_size
from generation.jobs.models import Job
from generation.library.models import Checkpoint, Vae
from generation.library.uses import UseRefused, addon_uses, upscaler_use


class RefusalCode(StrEnum):
    """Why a submission was refused (what the APIs turn into a status or their own error code)."""

    INVALID = "invalid"  # a field is wrong: the refusal names it
    INSUFFICIENT_CREDITS = "insufficient_credits"
    ACTIVE_JOB_CAP = "active_job_cap"
    IDEMPOTENCY_MISMATCH = "idempotency_mismatch"
    BLOCKED = "blocked"  # by the prompt filter
    SUSPENDED = "suspended"
    ROLE_LIMIT = "role_limit"  # beyond what the user's role allows (accounts.roles)
    STORAGE_FULL = "storage_full"  # the user's images, inputs and add-ons fill their quota


class Refused(Exception):
    """A submission that was not accepted; `field` names the input at fault, if one is, and
    `code` says why; `audit_reason`, when given, is what the audit records instead of the message."""

    def __init__(self, message: str, field: str | None = None, code: RefusalCode = RefusalCode.INVALID,
                 audit_reason: str = ""):
        super().__init__(message)
        self.field, self.code, self.audit_reason = field, RefusalCode(code), audit_reason


def engine_limits(allowed: Allowance | None = None) -> Limits:
    """The engine's limits: the site's, or those of a user's roles (`allowed`)."""
    if allowed is not None:
        return Limits(max_side=allowed.max_side, max_images=allowed.max_images, max_steps=allowed.max_steps)
    return Limits(max_side=settings.SDWEB["MAX_SIDE"], max_images=settings.SDWEB["MAX_IMAGES"],
                  max_steps=settings.SDWEB["MAX_STEPS"])


def within_role(allowed: Allowance, checkpoint: Checkpoint | None, fields: dict, field: str = "checkpoint") -> None:
    """Refuse (403: ROLE_LIMIT) a checkpoint or a size, steps, image count or upscale factor the user's
    roles don't allow."""
    roles = ", ".join(allowed.roles)
    if checkpoint is not None and allowed.checkpoints is not None and checkpoint.pk not in allowed.checkpoints:
        raise Refused(f"{checkpoint.name} is not among the checkpoints your role ({roles}) may use.", field=field,
                      code=RefusalCode.ROLE_LIMIT)
    for name, cap in (("width", allowed.max_side), ("height", allowed.max_side), ("steps", allowed.max_steps),
                      ("num_images", allowed.max_images)):
        value = fields.get(name)
        if allowed.roles and isinstance(value, int) and not isinstance(value, bool) and value > cap:
            raise Refused(f"{name} may be at most {cap} for your role ({roles}); got {value}.", field=name,
                          code=RefusalCode.ROLE_LIMIT)
    factors = {"upscale_by": fields.get("upscale_by"), "hr_scale": fields.get("hr_scale") if fields.get("enable_hr") else None}
    for name, value in factors.items():
        if allowed.max_upscale is not None and isinstance(value, (int, float)) and value > allowed.max_upscale:
            raise Refused(f"{name} may be at most {allowed.max_upscale:g} for your role ({roles}); got {value:g}.",
                          field=name, code=RefusalCode.ROLE_LIMIT)


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


def validated(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    checkpoint = params.get("checkpoint")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.objects.enabled_named(checkpoint)
    if checkpoint is None or not checkpoint.enabled:
        raise Refused("Choose one of the available checkpoints.", field="checkpoint")
    if problem := role_problem(checkpoint.family, "inpaint" if "mask" in inputs else "txt2img"):
        raise Refused(f"{checkpoint.name} {problem}; choose another checkpoint.", field="checkpoint")
    allowed = allowance(user)
    within_role(allowed, checkpoint, {})
    refiner = _refiner(checkpoint, params.get("refiner"))
    within_role(allowed, refiner, {}, "refiner")
    vae = _vae(checkpoint, params.get("vae"))
    fields = {f: params[f] for f in Job.PARAMS if f in params}
    fields.setdefault("negative_prompt", "")
    if "init_image" in inputs:  # img2img's size defaults to the starting image's, within the limits
        width, height = default_size(*inputs["init_image"].size)
        fields.setdefault("width", width)
        fields.setdefault("height", height)
    within_role(allowed, None, fields)
    addons, engine_addons = _uses(addon_uses, user, checkpoint, fields, params.get("controlnet"), inputs.get("controlnet", []))
    try:
        request = GenerationRequest(model=checkpoint.source, **fields, init_image=inputs.get("init_image"),
                                    mask=inputs.get("mask"), **engine_addons)
        request.validate(engine_limits(allowed))  # (hires fix's size too)
        if FAMILIES[checkpoint.family].transformer:
            check_request(request, FAMILIES[checkpoint.family].group)
    except (TypeError, ValueError) as error:
        message = str(error)
        field = next((f for f in (*Job.PARAMS, "init_image", "mask", "controlnet") if message.startswith(f + " ")), None)
        raise Refused(message[:1].upper() + message[1:], field=field) from error
    # The seed is fixed now, so a retried job makes the same images.
    return checkpoint, {**{f: getattr(request, f) for f in Job.PARAMS}, "seed": request.seeds()[0],
                        "subseed": request.subseeds()[0] if request.subseed_strength else -1, "refiner": refiner,
                        "vae": vae, "addons": addons, "passes": request.passes()}


def _uses(check, *args):
    """The add-ons' checks (library.uses), their refusals as a submission's."""
    try:
        return check(*args)
    except UseRefused as refusal:
        raise Refused(str(refusal), field=refusal.field,
                      code=RefusalCode.ROLE_LIMIT if refusal.by_role else RefusalCode.INVALID) from None


def validated_upscale(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    """An upscale of a gallery image: the source job's prompt and settings, the new size; it
    costs one step at that size."""
    source = params.get("init_image")
    if not isinstance(source, Image) or "mask" in inputs:
        raise Refused("Upscaling takes a finished image of the gallery (init_image, no mask).", field="init_image")
    upscaler = params.get("upscaler") or "Lanczos"
    addons = [] if upscaler in UPSCALERS or not isinstance(upscaler, str) else [
        _uses(upscaler_use, user, upscaler, "upscaler")]
    try:
        check_upscale(params["upscale_by"], upscaler, source.width, source.height, settings.SDWEB["UPSCALE_MAX_SIDE"],
                      models=[a["name"] for a in addons])
    except ValueError as error:
        raise Refused(str(error)[:1].upper() + str(error)[1:], field=str(error).split(" ")[0]) from error
    width, height = upscaled_size(source.width, source.height, params["upscale_by"])
    job = source.job
    within_role(allowance(user), job.checkpoint, {"upscale_by": params["upscale_by"]})
    kept = {f: getattr(job, f) for f in ("prompt", "negative_prompt", "steps", "guidance_scale", "scheduler", "clip_skip")}
    return job.checkpoint, {**kept, "width": width, "height": height, "num_images": 1, "seed": source.seed,
                            "upscale_by": params["upscale_by"], "upscaler": upscaler, "vae": job.vae,
                            "addons": addons, "passes": [(width, height, 1)]}


def default_size(width: int, height: int) -> tuple[int, int]:
    """A picture's size made a job's: shrunk to SDWEB_MAX_SIDE keeping its aspect ratio, in
    multiples of 8, at least MIN_SIDE a side."""
    shrink = min(1, settings.SDWEB["MAX_SIDE"] / max(width, height))
    return tuple(max(MIN_SIDE, int(side * shrink) // 8 * 8) for side in (width, height))


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
    if vae.latent_channels != (16 if FAMILIES[checkpoint.family].transformer else 4):
        kind = "FLUX.1, SD 3.5 or Z-Image" if vae.latent_channels == 16 else "SD"
        raise Refused(f"VAE {vae.name} is for {kind} ({vae.latent_channels} "
                      f"latent channels); {checkpoint.name} is {checkpoint.get_family_display()}.", field="vae")
    return vae


def _refiner(checkpoint: Checkpoint, refiner) -> Checkpoint | None:
    if refiner in (None, ""):
        return None
    if not isinstance(refiner, Checkpoint):
        refiner = Checkpoint.objects.enabled_named(refiner)
    if refiner is None or not refiner.enabled:
        raise Refused("No enabled checkpoint has that name; choose an SDXL refiner.", field="refiner")
    if problem := refiner_problem(checkpoint.family, refiner.family):
        raise Refused(f"{refiner.name} can't refine {checkpoint.name}: {problem}.", field="refiner")
    return refiner
