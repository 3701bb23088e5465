"""Submitting: validate, filter, quote, and in one transaction charge, create the job and audit
it; or refuse (audited too) naming the field."""

import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType

from django.db import IntegrityError, transaction
from django.db.models import Sum

from generation.accounts.models import Team, UserSettings
from generation.accounts.roles import allowance
from generation.accounts.teams import paying_team
from generation.credits.ledger import credits_change, locked_account, quote_cost
from generation.credits.models import CreditEntry
from generation.jobs.inputs import image_inputs, input_digests, inputs_store, refused
from generation.jobs.models import Job
from generation.jobs.plot import validated_plot
from generation.jobs.queue import enqueue_job
from generation.jobs.styles import styled
from generation.jobs.validation import RefusalCode, Refused, validated, validated_upscale
from generation.library.models import AddOn, Checkpoint, Vae
from generation.library.storage import BYTES_PER_PIXEL, THUMBNAIL_BYTES, storage_full
from generation.provenance import prompt_filter
from generation.provenance.audit import audit_append
from generation.provenance.models import INPUT_DIGESTS, PromptAudit, new_image_id


def _with_styles(user, params: dict) -> dict:
    """The prompts as the job runs them: the user's styles named in params applied."""
    if not params.get("styles"):
        return params
    try:
        prompt, negative = styled(user=user, names=params["styles"], prompt=params.get("prompt") or "",
                                  negative_prompt=params.get("negative_prompt") or "")
    except ValueError as error:
        raise refused(error) from error
    return {**params, "prompt": prompt, "negative_prompt": negative}


# What job_submit takes, by the names every entry point (the page, REST, the A1111 and OpenAI
# dialects, the gallery's upscale and variations) translates into: the settings, the models by
# name (or the row), the pictures as received (bytes, an Upload, or a gallery Image), ControlNet
# units as the extension shapes them, style names, an X/Y/Z plot, an upscale of a gallery image, and
# the team that pays (a slug, or teams.OWN_CREDITS; absent: the user's chosen one).
PARAMS = (*Job.PARAMS, "checkpoint", "refiner", "vae", "init_image", "mask", "controlnet", "styles", "plot",
          "upscale_by", "upscaler", "team")


@dataclass(frozen=True)
class Submission:
    """A submission resolved and checked, before anything is decided: the checkpoint, the Job's
    other fields (settings with the seed fixed, refiner, VAE, add-on uses), the decoded pictures,
    the cost, the team that pays (None: the user), and the params it was resolved from (with styles
    applied), which the audit records."""

    checkpoint: Checkpoint
    team: Team | None
    fields: MappingProxyType
    inputs: MappingProxyType
    cost: int
    audited: MappingProxyType


def job_submit(*, user, params: dict, client_ip: str | None = None, idempotency_key: str | None = None) -> Job:
    """Resolve `params` (PARAMS) into a Submission, then in one transaction charge, create the job
    and audit it; or refuse (audited too) with a message naming the field. With an
    `idempotency_key`, a repeated request returns the job the first one made, charged once, with
    `replayed` True (False on a new job); the same key with other params is refused."""
    if unknown := set(params) - set(PARAMS):
        raise TypeError(f"job_submit: unknown params {sorted(unknown)}")
    audited = {**params, **input_digests(params)}  # the audit records what the job starts from
    digest = request_digest(audited)
    idempotency_key = (idempotency_key or "").strip() or None
    if idempotency_key and not (len(idempotency_key) <= 200 and idempotency_key.isascii()
                                and idempotency_key.isprintable()):
        refusal = Refused("An Idempotency-Key is at most 200 printable ASCII characters.", field="Idempotency-Key")
        audit_append(user=user, client_ip=client_ip, params=audited, decision=PromptAudit.REFUSED, reason=str(refusal))
        raise refusal
    if idempotency_key:
        earlier = Job.objects.filter(user=user, idempotency_key=idempotency_key).first()
        if earlier is not None:
            if earlier.request_digest != digest:
                raise Refused("This Idempotency-Key was already used with a different request.",
                              code=RefusalCode.IDEMPOTENCY_MISMATCH)
            earlier.replayed = True
            return earlier
    try:
        audited = _with_styles(user, audited)
        submission = submission_resolve(user, audited)
    except Refused as refusal:
        audit_append(user=user, client_ip=client_ip, params=audited, decision=PromptAudit.REFUSED,
                     reason=refusal.audit_reason or str(refusal))
        raise
    try:
        job = _decide(user, submission, client_ip, idempotency_key=idempotency_key, digest=digest)
    except IntegrityError:
        if not idempotency_key:
            raise
        # The same key raced in twice: the other request's job stands, this one charged nothing.
        return job_submit(user=user, params=params, client_ip=client_ip, idempotency_key=idempotency_key)
    job.replayed = False
    return job


def submission_resolve(user, params: dict) -> Submission:
    """The pictures decoded, every setting, model and add-on checked for this user, the seed fixed
    and the cost quoted; a Refused names the field at fault."""
    inputs = image_inputs(user, params)
    validate = validated_upscale if "upscale_by" in params else validated_plot if params.get("plot") else validated
    checkpoint, fields = validate(params, inputs, user)
    _check_allowed(user, fields["prompt"])
    try:
        team = paying_team(user, params.get("team"))
    except ValueError as error:
        raise Refused(str(error), field="team") from error
    passes = fields.pop("passes")
    cost = quote_cost(width=0, height=0, steps=0, num_images=1 if fields.get("plot") else fields["num_images"],
                      passes=passes, controlnet_units=sum(a["kind"] == AddOn.CONTROLNET for a in fields.get("addons", [])))
    # The most its images can take until stored (a plot's grid is as large as its cells together); a
    # team's images count against no member's storage.
    largest = max(w * h for w, h, _ in passes) * BYTES_PER_PIXEL + THUMBNAIL_BYTES
    fields["storage_bound"] = 0 if team else largest * fields["num_images"] * (2 if fields.get("plot") else 1)
    return Submission(checkpoint=checkpoint, team=team, fields=MappingProxyType(fields), inputs=MappingProxyType(inputs),
                      cost=cost, audited=MappingProxyType(params))


def _decide(user, submission: Submission, client_ip, *, idempotency_key, digest) -> Job:
    """Charge, create and audit the job in one transaction, or refuse (audited) for the active-job
    cap, the storage quota or the balance; the pictures are stored only once accepted, so a refusal
    leaves no file. The user's account is locked even when a team pays: their cap and quota hold."""
    audit = {"user": user, "client_ip": client_ip, "params": submission.audited, "checkpoint": submission.checkpoint}
    pool = f"the team {submission.team.name}'s pool" if submission.team else "your balance"
    with transaction.atomic():
        account = locked_account(user)
        if submission.team:  # (always the user's lock first, then the team's: no deadlock)
            account = locked_account(team=submission.team)
        active, cap = Job.objects.filter(user=user, status__in=Job.ACTIVE).count(), allowance(user).active_jobs
        refusal = None
        if active >= cap:
            refusal = Refused(f"You already have {active} jobs queued or running, the most allowed at once; "
                              "wait for one to finish or cancel one.", code=RefusalCode.ACTIVE_JOB_CAP)
        elif full := storage_full(user, submission.fields["storage_bound"], held=Job.objects.filter(
                user=user, status__in=Job.ACTIVE).aggregate(n=Sum("storage_bound"))["n"] or 0):
            refusal = Refused(full, code=RefusalCode.STORAGE_FULL)
        elif account.balance < submission.cost:
            refusal = Refused(f"This costs {submission.cost} credits and {pool} is {account.balance}.",
                              code=RefusalCode.INSUFFICIENT_CREDITS)
        if refusal:
            audit_append(**audit, decision=PromptAudit.REFUSED, reason=str(refusal))
        else:
            fields = {**submission.fields, "addons": [{**record} for record in submission.fields["addons"]]}
            fields |= inputs_store(submission.inputs, fields["addons"])
            job = Job.objects.create(user=user, team=submission.team, checkpoint=submission.checkpoint, cost=submission.cost,
                                     idempotency_key=idempotency_key, request_digest=digest,
                                     image_ids=[new_image_id() for _ in range(fields["num_images"])], **fields)
            credits_change(user=user, team=submission.team, kind=CreditEntry.CHARGE, amount=-submission.cost,
                           reason=f"generation by {user.get_username()}" if submission.team else "generation", job=job)
            audit_append(**audit, decision=PromptAudit.ACCEPTED, job=job)
            transaction.on_commit(enqueue_job)
    if refusal:
        raise refusal
    return job


def _check_allowed(user, prompt: str) -> None:
    """Refuse suspended accounts and prompts that match a block rule."""
    suspended = UserSettings.objects.filter(user=user, suspended_at__isnull=False).first()
    if suspended:
        raise Refused("Your account is suspended, so it can't generate images"
                      + (f": {suspended.suspended_reason}" if suspended.suspended_reason else "."), code=RefusalCode.SUSPENDED)
    rule = prompt_filter.blocked_by(prompt)
    if rule:
        raise Refused("This prompt asks for something this site doesn't allow; change it and try again.",
                      field="prompt", code=RefusalCode.BLOCKED, audit_reason=f"blocked by the prompt filter rule {rule!r}")


def request_digest(params: dict) -> str:
    """What an Idempotency-Key promises: the same request, by its settings and its pictures' digests."""
    shown = {k: str(v.name if isinstance(v, (Checkpoint, Vae)) else v) for k, v in params.items()
             if k in Job.PARAMS or k in ("checkpoint", "refiner", "vae", "upscale_by", "upscaler", "team", *INPUT_DIGESTS)}
    if isinstance(params.get("controlnet"), list):  # the units' settings; their images are in the digests
        shown["controlnet"] = str([{k: v for k, v in unit.items() if k != "image"} if isinstance(unit, dict) else unit
                                   for unit in params["controlnet"]])
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()
