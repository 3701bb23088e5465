"""Every write of the generation domain: credits, submissions, claims, runs, cancels, audit."""

import hashlib
import json
import logging
import math
import threading
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, Q
from django.utils import timezone

from generation import audit, filters
from generation.engine import GenerationRequest, Limits
from generation.models import Checkpoint, CreditAccount, CreditEntry, Job, PromptAudit, UserSettings, new_image_id

log = logging.getLogger(__name__)
SHUTTING_DOWN = threading.Event()  # set when the embedded server stops: running jobs go back to the queue

REQUEST_FIELDS = ("prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "scheduler",
                  "seed", "num_images")


class Refused(Exception):
    """A submission that was not accepted; `field` names the input at fault, if one is, and
    `code` says why: invalid, insufficient_credits, active_job_cap, idempotency_mismatch, blocked or
    suspended; `audit_reason`, when given, is what the audit records instead of the message."""

    def __init__(self, message: str, field: str | None = None, code: str = "invalid", audit_reason: str = ""):
        super().__init__(message)
        self.field, self.code, self.audit_reason = field, code, audit_reason


# Credits ------------------------------------------------------------------------------------

def quote_cost(*, width: int, height: int, steps: int, num_images: int) -> int:
    """ceil(images x width x height x steps / SDWEB_COST_UNIT), at least 1 credit."""
    return max(1, math.ceil(num_images * width * height * steps / settings.SDWEB["COST_UNIT"]))


def _locked_account(user) -> CreditAccount:
    CreditAccount.objects.get_or_create(user_id=user.pk)  # by id: leaves no stale copy cached on `user`
    return CreditAccount.objects.select_for_update().get(user_id=user.pk)


@transaction.atomic
def credits_change(*, user, kind: str, amount: int, reason: str, job=None, staff=None) -> CreditEntry:
    """The one way a balance changes: locked, with its ledger row in the same transaction."""
    account = _locked_account(user)
    entry = CreditEntry.objects.create(account=account, kind=kind, amount=amount, reason=reason, job=job, staff=staff)
    account.balance += amount  # safe: the row is locked until this transaction ends
    account.save(update_fields=["balance"])
    return entry


@transaction.atomic
def credits_grant(*, user, amount: int, reason: str, staff=None) -> CreditEntry:
    if staff:
        audit.staff_action(staff=staff, action="adjust credits", target=user.get_username(),
                           details=f"{amount:+d}: {reason}")
    return credits_change(user=user, kind=CreditEntry.ADJUST if staff else CreditEntry.GRANT, amount=amount,
                          reason=reason, staff=staff)


@transaction.atomic
def credits_refund(*, job: Job, amount: int | None = None, reason: str) -> CreditEntry | None:
    """Refund a job once; a second call (a retry, a race) changes nothing."""
    if CreditEntry.objects.filter(job=job, kind=CreditEntry.REFUND).exists():
        return None
    try:
        with transaction.atomic():
            return credits_change(user=job.user, kind=CreditEntry.REFUND, amount=job.cost if amount is None else amount,
                                  reason=reason, job=job)
    except IntegrityError:  # the unique (job, kind) key: someone refunded it first
        return None


@transaction.atomic
def credits_topup_if_due(*, user) -> CreditEntry | None:
    """The periodic top-up (SDWEB_TOPUP_*), applied when the user next shows up."""
    amount, ceiling = settings.SDWEB["TOPUP_AMOUNT"], settings.SDWEB["TOPUP_CEILING"]
    if amount <= 0:
        return None
    account = _locked_account(user)
    now = timezone.now()
    due = account.last_topup_at is None or now - account.last_topup_at >= timedelta(
        hours=settings.SDWEB["TOPUP_EVERY_HOURS"])
    if not due or account.balance >= ceiling:
        return None
    CreditAccount.objects.filter(pk=account.pk).update(last_topup_at=now)
    return credits_change(user=user, kind=CreditEntry.TOPUP, amount=min(amount, ceiling - account.balance),
                          reason="periodic top-up")


# Submitting ---------------------------------------------------------------------------------

def engine_limits() -> Limits:
    return Limits(max_side=Limits.from_env().max_side, max_images=settings.SDWEB["MAX_IMAGES"],
                  max_steps=Limits.from_env().max_steps)


def job_submit(*, user, params: dict, client_ip: str | None = None, idempotency_key: str | None = None) -> Job:
    """Validate, quote, and in one transaction charge, create the job and audit it; or refuse
    (audited too) with a message naming the field. With an `idempotency_key`, a repeated request
    returns the job the first one made, charged once; the same key with other params is refused."""
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
            return earlier
    try:
        checkpoint, fields = _validated(params)
        _check_allowed(user, fields["prompt"])
    except Refused as refusal:
        audit_append(user=user, client_ip=client_ip, params=params, decision=PromptAudit.REFUSED,
                     reason=refusal.audit_reason or str(refusal))
        raise
    cost = quote_cost(width=fields["width"], height=fields["height"], steps=fields["steps"],
                      num_images=fields["num_images"])
    try:
        with transaction.atomic():
            account = _locked_account(user)
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
    shown = {k: str(v.name if isinstance(v, Checkpoint) else v) for k, v in params.items()
             if k in REQUEST_FIELDS or k == "checkpoint"}
    return hashlib.sha256(json.dumps(shown, sort_keys=True).encode()).hexdigest()


def _validated(params: dict) -> tuple[Checkpoint, dict]:
    checkpoint = params.get("checkpoint")
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = Checkpoint.objects.enabled_named(checkpoint)
    if checkpoint is None or not checkpoint.enabled:
        raise Refused("Choose one of the available checkpoints.", field="checkpoint")
    fields = {f: params[f] for f in REQUEST_FIELDS if f in params}
    fields.setdefault("negative_prompt", "")
    try:
        request = GenerationRequest(model=checkpoint.source, **fields)
        request.validate(engine_limits())
    except (TypeError, ValueError) as error:
        message = str(error)
        field = next((f for f in REQUEST_FIELDS if message.startswith(f + " ")), None)
        raise Refused(message[:1].upper() + message[1:], field=field) from error
    # The seed is fixed now, so a retried job makes the same images.
    return checkpoint, {**{f: getattr(request, f) for f in REQUEST_FIELDS}, "seed": request.seeds()[0]}


def audit_append(*, user, client_ip, params: dict, decision: str, reason: str = "", checkpoint=None,
                 job: Job | None = None) -> PromptAudit:
    params = params if isinstance(params, dict) else {}
    shown = {k: v for k, v in params.items() if k in REQUEST_FIELDS and k not in ("prompt", "negative_prompt")}
    if job is not None:
        shown.update({f: getattr(job, f) for f in ("width", "height", "steps", "guidance_scale", "scheduler",
                                                   "seed", "num_images", "cost")})
    checkpoint_name = checkpoint.name if checkpoint else str(params.get("checkpoint") or "")
    texts = [str(params.get(f) or "") for f in ("prompt", "negative_prompt")]
    stored = [storable(text) for text in texts]
    if stored != texts:
        reason += " (characters that cannot be stored are written as \\x00 and \\uXXXX escapes)"
    return audit.append(
        user=user, username=user.get_username(), subject=audit.pseudonym(user.pk), client_ip=client_ip,
        prompt=stored[0], negative_prompt=stored[1],
        params={k: v if isinstance(v, int) or isinstance(v, float) and math.isfinite(v) else storable(str(v))
                for k, v in shown.items()},
        checkpoint=storable(checkpoint_name)[:100], decision=decision, reason=storable(reason).strip(),
        job_id=job.pk if job else None, image_ids=list(job.image_ids) if job else [],
    )


def audit_refused(*, user, client_ip, data, errors) -> PromptAudit:
    """Audit a submission refused before it reached `job_submit` (a form or body that did not parse)."""
    if isinstance(errors, dict):
        errors = "; ".join(f"{field}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                           for field, messages in errors.items())
    return audit_append(user=user, client_ip=client_ip, params=data, decision=PromptAudit.REFUSED, reason=str(errors))


def storable(text: str) -> str:
    """Text PostgreSQL can keep: NUL and lone surrogates become visible backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def enqueue_job() -> None:
    """Tell a worker a job is waiting. The message carries no job: the worker claims the fairest."""
    from generation.tasks import run_next_job

    run_next_job.delay()


def queue_position(job: Job) -> int:
    """Queued jobs submitted before this one (the fair order can move it ahead)."""
    return Job.objects.filter(status=Job.QUEUED, created_at__lt=job.created_at).count()


# Cancelling ---------------------------------------------------------------------------------

def job_cancel(*, user, job_id) -> Job:
    """The owner cancels a queued job at once (refunded) or asks a running one to stop."""
    from generation.live import job_event

    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_id, user=user)
        if job.status == Job.QUEUED:
            job.status, job.finished_at = Job.CANCELLED, timezone.now()
            job.save(update_fields=["status", "finished_at"])
            credits_refund(job=job, reason="cancelled before it started")
            transaction.on_commit(lambda: job_event(job.pk, {"type": "cancelled"}))
        elif job.status == Job.RUNNING and not job.cancel_requested:
            job.cancel_requested = True
            job.save(update_fields=["cancel_requested"])
    return job


# Claiming and running -----------------------------------------------------------------------

def _claimable(now) -> Q:
    return Q(status=Job.QUEUED) | Q(status=Job.RUNNING, lease_until__lt=now)


def job_claim(*, worker: str = "") -> Job | None:
    """Claim the fairest claimable job: the user with the fewest jobs started in the last
    SDWEB_FAIR_WINDOW_MINUTES first, then the oldest job. A job whose worker died (its lease
    ran out) is claimable again until SDWEB_ATTEMPT_LIMIT attempts."""
    now = timezone.now()
    fail_exhausted(now)
    candidates = list(Job.objects.filter(_claimable(now)).order_by("created_at")[:200])
    window_start = now - timedelta(minutes=settings.SDWEB["FAIR_WINDOW_MINUTES"])
    recent = dict(Job.objects.filter(user__in={j.user_id for j in candidates}, started_at__gte=window_start)
                  .values_list("user").annotate(n=Count("id")).values_list("user", "n"))
    for pick in sorted(candidates, key=lambda j: (recent.get(j.user_id, 0), j.created_at)):
        # A conditional update, nothing locked beforehand: when two workers reach for the same job,
        # PostgreSQL makes the second re-check the condition, it finds nothing and takes the next
        # fairest job instead of sitting idle. A duplicate message claims nothing.
        claimed = Job.objects.filter(_claimable(now), pk=pick.pk).update(
            status=Job.RUNNING, started_at=now, attempts=F("attempts") + 1, progress_step=0, progress_total=0,
            preview=None, worker=worker[:100], lease_until=now + timedelta(seconds=settings.SDWEB["LEASE_SECONDS"]))
        if claimed:
            announce_queue_positions()
            return Job.objects.get(pk=pick.pk)
    return None


def announce_queue_positions(limit: int = 100) -> None:
    """Tell the pages watching queued jobs that the queue moved."""
    from generation.live import job_event

    waiting = Job.objects.filter(status=Job.QUEUED).order_by("created_at").values_list("pk", flat=True)[:limit]
    for position, job_id in enumerate(waiting):
        job_event(job_id, {"type": "queued", "position": position})


def fail_exhausted(now) -> int:
    """Jobs whose worker died SDWEB_ATTEMPT_LIMIT times fail, with one refund each."""
    exhausted = Job.objects.filter(status=Job.RUNNING, lease_until__lt=now, attempts__gte=settings.SDWEB["ATTEMPT_LIMIT"])
    return sum(job_finish_failed(job=job, attempt=job.attempts, error=f"The worker stopped {job.attempts} times; giving up.")
               for job in exhausted)


def jobs_reap() -> dict:
    """The sweep for when no worker is free to notice: fail exhausted jobs, and send one message
    per job whose worker died so that the next free worker claims it."""
    now = timezone.now()
    failed = fail_exhausted(now)
    orphans = Job.objects.filter(status=Job.RUNNING, lease_until__lt=now).count()
    for _ in range(orphans):
        enqueue_job()
    return {"failed": failed, "requeued": orphans}


def job_run_next(*, worker: str = "") -> Job | None:
    """Claim the fairest job and run it to an end. Returns the job, or None if none was waiting."""
    from generation.runner import job_run

    job = job_claim(worker=worker)
    if job is not None:
        job_run(job)
        jobs_reap()  # this worker is free again: a job whose worker died meanwhile is claimed next
    return job


@transaction.atomic
def job_finish_failed(*, job: Job, attempt: int, error: str, status: str = Job.FAILED) -> bool:
    """End a job as failed or cancelled and refund it once, if this attempt still owns it."""
    from generation.live import job_event

    ended = Job.objects.filter(pk=job.pk, attempts=attempt, status__in=Job.ACTIVE).update(
        status=status, error=error, finished_at=timezone.now(), lease_until=None)
    if ended:
        credits_refund(job=job, reason="cancelled" if status == Job.CANCELLED else "failed")
        event = {"type": "cancelled"} if status == Job.CANCELLED else {"type": "failed", "reason": error}
        transaction.on_commit(lambda: job_event(job.pk, event))
    return bool(ended)


def job_requeue(*, job: Job, attempt: int) -> None:
    """Put a running job back in the queue (the process is stopping); it starts over later."""
    Job.objects.filter(pk=job.pk, attempts=attempt, status=Job.RUNNING).update(
        status=Job.QUEUED, lease_until=None, progress_step=0, progress_total=0, preview=None)


def jobs_recover_orphans() -> int:
    """At the start of the embedded server no other worker exists: every running job was left
    by a stopped process. Make them claimable now and return how many jobs are waiting."""
    Job.objects.filter(status=Job.RUNNING).update(lease_until=timezone.now() - timedelta(seconds=1))
    return Job.objects.filter(status__in=Job.ACTIVE).count()


# Checkpoints --------------------------------------------------------------------------------

def checkpoint_register(*, name: str, source: str, family: str = "sd1", make_default: bool = False,
                        is_test_model: bool = False) -> Checkpoint:
    """Register (or update) a checkpoint. A hub id is downloaded now, with a progress bar."""
    from generation.engine.loading import resolve_source

    folder = resolve_source(source)  # ValueError with a clear message when it can't be used
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    side = int(unet_config.get("sample_size", 64)) * 8
    with transaction.atomic():
        checkpoint, _ = Checkpoint.objects.update_or_create(name=name, defaults=dict(
            source=str(source), family=family, default_width=side, default_height=side, enabled=True,
            is_test_model=is_test_model))
        if make_default or not Checkpoint.objects.filter(is_default=True).exists():
            Checkpoint.objects.filter(is_default=True).exclude(pk=checkpoint.pk).update(is_default=False)
            Checkpoint.objects.filter(pk=checkpoint.pk).update(is_default=True)
    return Checkpoint.objects.get(pk=checkpoint.pk)


def checkpoint_ensure_test_model() -> Checkpoint:
    """Build the built-in test model if it is missing and register it."""
    from generation.engine import TEST_MODEL_NAME, make_test_model

    folder = settings.SDWEB["MODELS_DIR"] / TEST_MODEL_NAME
    if not (folder / "model_index.json").is_file():
        make_test_model(folder)
    return checkpoint_register(name=TEST_MODEL_NAME, source=str(folder), is_test_model=True)
