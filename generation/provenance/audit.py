"""The prompt audit: an append-only hash chain of every submission.

Each row's hash covers its content and the hash before it; `AuditChain` (one row) holds the head
(the newest hash and the number of rows appended) and the point the chain was last pruned to.
A submission writes its row in its own transaction, unsealed and without waiting for anyone; once
that commits, `chain_seal` places and hashes every row written so far, one sealer at a time. So
writers wait for at most the seal before theirs, not for each other's whole transactions, and the
chain stays one line, in the order the rows were sealed. The hash covers `subject` (a stable
pseudonym of the user id) rather than the username or the user id, which account deletion changes."""

import hashlib
import hmac
import json
import math
from collections.abc import Mapping
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from generation.engine.request import MAX_PROMPT_CHARS, SETTINGS
from generation.library.models import Checkpoint
from generation.provenance import prompt_filter
from generation.provenance.models import INPUT_DIGESTS, AuditChain, AuditImage, ImageFingerprint, PromptAudit

GENESIS = "0" * 64
CHAIN_LOCK = 0x5D3EB_A0D17  # the advisory lock key of the audit chain


def pseudonym(user_id: int) -> str:
    """Stable for one account, so staff can still tell its audit rows apart from others'."""
    digest = hmac.new(settings.SECRET_KEY.encode(), f"user:{user_id}".encode(), hashlib.sha256).hexdigest()
    return f"deleted-{digest[:12]}"


def content(row: PromptAudit) -> bytes:
    return json.dumps([row.created_at.isoformat(), row.subject, row.client_ip, row.prompt, row.negative_prompt,
                       row.params, row.checkpoint, row.decision, row.reason, str(row.job_id or ""), row.image_ids],
                      sort_keys=True, separators=(",", ":")).encode()


def chain_hash(previous: str, row: PromptAudit) -> str:
    return hashlib.sha256(previous.encode() + content(row)).hexdigest()


def locked_chain(wait: bool = True) -> AuditChain | None:
    """The chain's head, for the one writer that may extend or prune it until this transaction
    ends; None when another holds it and `wait` is False. On PostgreSQL an advisory lock (waiting
    for a row lock would write to the row); on SQLite the transaction itself locks the file."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {'pg_advisory_xact_lock' if wait else 'pg_try_advisory_xact_lock'}(%s)", [CHAIN_LOCK])
            if not wait and not cursor.fetchone()[0]:
                return None
    return AuditChain.objects.get_or_create(pk=1)[0]


def chain_append(**fields) -> PromptAudit:
    """Write a row for the chain, in the caller's transaction; it is sealed once that commits."""
    row = PromptAudit.objects.create(created_at=timezone.now(), **fields)
    AuditImage.objects.bulk_create([AuditImage(image_id=i, audit=row) for i in row.image_ids])
    transaction.on_commit(lambda: chain_seal(wait=False), robust=True)  # if it fails, the next seal does it
    return row


def chain_seal(wait: bool = True) -> int:
    """Place and hash every committed row not yet in the chain, in the order they were written.

    With `wait` False a writer that finds another sealing leaves its row to that one: a sealer
    looks for rows again after it lets go of the chain, and every row was committed before its
    writer tried the lock, so no row is left behind (a writer killed in between: the next seal,
    or verify_audit, seals its row)."""
    if connection.in_atomic_block:  # the lock is let go when the caller's transaction ends: look again then
        transaction.on_commit(lambda: chain_seal(wait=False), robust=True)
    sealed = 0
    while True:
        with transaction.atomic():
            chain = locked_chain(wait)
            if chain is None:
                return sealed
            # Read after taking the lock (a new snapshot): rows committed meanwhile are sealed now too.
            pending = list(PromptAudit.objects.filter(position=None).order_by("pk"))
            head, length = chain.head, chain.length
            for row in pending:
                # The row as the database gives it back (PostgreSQL's jsonb writes 2.5e16 as an
                # integer, inet normalises addresses...), which is what verification will read.
                head, length = chain_hash(head, row), length + 1
                PromptAudit.objects.seal(row.pk, length, head)
            if pending:
                AuditChain.objects.filter(pk=1).update(head=head, length=length)
        sealed += len(pending)
        if not PromptAudit.objects.filter(position=None).exists():
            return sealed


def audit_append(*, user, client_ip, params: Mapping, decision: str, reason: str = "", checkpoint=None,
                 job=None) -> PromptAudit:
    """One submission as decided: the prompts (made storable; past MAX_PROMPT_CHARS, that much of
    them with the whole one's length and SHA-256), the settings, the decision."""
    params = params if isinstance(params, Mapping) else {}
    shown = {k: v for k, v in params.items() if k in (*SETTINGS, *INPUT_DIGESTS, "upscale_by", "upscaler", "team")
             and k not in ("prompt", "negative_prompt")}
    for field in ("refiner", "vae"):
        if params.get(field):
            shown[field] = str(params[field])[:200]
    if job is not None:
        shown.update({f: getattr(job, f) for f in (*SETTINGS[2:], "cost")})
        shown.update(refiner=job.refiner.name if job.refiner else None, vae=job.vae.name if job.vae else None)
        shown.update({f: getattr(job, f) for f in ("init_image_sha256", "mask_sha256", "upscale_by", "upscaler")
                      if getattr(job, f)})
        shown.pop("team", None)
        if job.team_id:  # whose pool paid: the team's name
            shown["team"] = job.team.name
        if job.addons:  # what the trace names: each add-on's kind, name and file hash
            shown["addons"] = [{k: a[k] for k in ("kind", "name", "sha256")} for a in job.addons]
    checkpoint_name = checkpoint.name if checkpoint else str(params.get("checkpoint") or "")
    if checkpoint_name.isdigit():  # a form sends the checkpoint's id: the audit names it
        checkpoint_name = Checkpoint.objects.filter(pk=int(checkpoint_name)).values_list("name", flat=True).first() \
            or checkpoint_name
    texts = [str(params.get(f) or "") for f in ("prompt", "negative_prompt")]
    for field, text in zip(("prompt", "negative_prompt"), texts):
        if len(text) > MAX_PROMPT_CHARS:  # refused anyway: a megabyte must not go into the log for good
            shown[f"{field}_length"] = len(text)
            shown[f"{field}_sha256"] = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    stored = [storable(text[:MAX_PROMPT_CHARS]) for text in texts]
    if stored != [text[:MAX_PROMPT_CHARS] for text in texts]:
        reason += " (characters that cannot be stored are written as \\x00 and \\uXXXX escapes)"
    return chain_append(
        user=user, username=user.get_username(), subject=pseudonym(user.pk), client_ip=client_ip,
        prompt=stored[0], negative_prompt=stored[1], search_text=search_text(*stored),
        params={k: _stored(v) for k, v in shown.items()},
        checkpoint=storable(checkpoint_name)[:100], decision=decision, reason=storable(reason).strip(),
        job_id=job.pk if job else None, image_ids=list(job.image_ids) if job else [],
    )


def audit_refused(*, user, client_ip, data, errors) -> PromptAudit:
    """Audit a submission refused before it reached `job_submit` (a form or body that did not parse)."""
    if isinstance(errors, dict):
        errors = "; ".join(f"{field}: {' '.join(map(str, messages)) if isinstance(messages, list) else messages}"
                           for field, messages in errors.items())
    return audit_append(user=user, client_ip=client_ip, params=data, decision=PromptAudit.REFUSED, reason=str(errors))


def search_text(*texts: str) -> str:
    """What audit search matches besides the prompts: their normal forms and TR39 skeletons."""
    return "\n".join(dict.fromkeys(form for text in texts if text for reading in prompt_filter.readings(text)
                                    for form in (reading, prompt_filter.skeleton(reading))))


def _stored(value):
    """A setting as the audit keeps it: numbers as they are, lists and objects (add-ons) kept, the rest storable text."""
    if isinstance(value, int) or isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, (list, tuple)):
        return [_stored(v) for v in value]
    if isinstance(value, dict):
        return {storable(str(k)): _stored(v) for k, v in value.items()}
    return storable(str(value))


def storable(text: str) -> str:
    """Text PostgreSQL can keep: NUL and lone surrogates become visible backslash escapes."""
    return text.encode("utf-8", "backslashreplace").decode().replace("\x00", "\\x00")


def audit_verify() -> tuple[int, str | None]:
    """(rows checked, None) when the chain is whole, else (rows checked, what is wrong first).
    Rows not sealed yet (a writer stopped between its commit and its seal) are sealed first."""
    chain_seal()
    chain = AuditChain.objects.get(pk=1)
    previous, count = chain.base, 0
    rows = PromptAudit.objects.filter(position__gt=chain.base_position).order_by("position")
    for row in rows.iterator(chunk_size=2000):
        if chain_hash(previous, row) != row.hash:
            return count, (f"row {row.pk} ({row.created_at:%Y-%m-%d %H:%M:%S}) does not match the chain: it, or a "
                           f"row before it back to the chain's start, was changed, removed or moved")
        previous, count = row.hash, count + 1
    if previous != chain.head or count != chain.length - chain.pruned:
        return count, (f"the chain's head says {chain.length - chain.pruned} rows ending in {chain.head[:12]}…, "
                       f"the table holds {count} ending in {previous[:12]}…: rows were removed from the end")
    return count, None


@transaction.atomic
def audit_prune(before: datetime) -> int:
    """Remove the rows made before `before`, keeping the chain verifiable from the next row on."""
    chain = locked_chain()
    count, problem = audit_verify()
    if problem:
        raise ValueError(f"the audit chain is broken, nothing was pruned: {problem}")
    kept = PromptAudit.objects.filter(position__gt=chain.base_position)
    last = kept.filter(created_at__lt=before).order_by("-position").first()
    if last is None:
        return 0
    pruned_images = AuditImage.objects.filter(audit__position__lte=last.position).values("image_id")
    ImageFingerprint.objects.filter(image_id__in=pruned_images).delete()
    removed = PromptAudit.objects.prune_through(last.position)
    AuditChain.objects.filter(pk=1).update(base=last.hash, base_position=last.position, pruned=chain.pruned + removed)
    return removed
