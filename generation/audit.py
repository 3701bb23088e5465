"""The prompt audit's hash chain.

Each row's hash covers its content and the hash before it; `AuditChain` (one row) holds the head
(the newest hash and the number of rows appended) and the point the chain was last pruned to.
Appends lock that row, so concurrent writers on PostgreSQL take turns and the chain stays one
line. The hash covers `subject` (a stable pseudonym of the user id) rather than the username or
the user id, which account deletion changes."""

import hashlib
import hmac
import json
from datetime import datetime

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.models import AuditChain, AuditImage, PromptAudit, StaffAction

GENESIS = "0" * 64


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


def locked_chain() -> AuditChain:
    return AuditChain.objects.select_for_update().get_or_create(pk=1)[0]


@transaction.atomic
def append(**fields) -> PromptAudit:
    """Add a row at the head of the chain."""
    chain = locked_chain()
    row = PromptAudit(created_at=timezone.now(), **fields)  # after the lock: time order is chain order
    row.save()
    # Hash the row as the database gives it back (PostgreSQL's jsonb writes 2.5e16 as an integer,
    # inet normalises addresses...), which is what verification will read.
    row.hash = chain_hash(chain.head, PromptAudit.objects.get(pk=row.pk))
    PromptAudit.objects.seal(row.pk, row.hash)
    AuditImage.objects.bulk_create([AuditImage(image_id=i, audit=row) for i in row.image_ids])
    AuditChain.objects.filter(pk=1).update(head=row.hash, length=chain.length + 1)
    return row


def verify() -> tuple[int, str | None]:
    """(rows checked, None) when the chain is whole, else (rows checked, what is wrong first)."""
    chain = AuditChain.objects.get_or_create(pk=1)[0]
    previous, count = chain.base, 0
    for row in PromptAudit.objects.filter(pk__gt=chain.base_id).order_by("pk").iterator(chunk_size=2000):
        if chain_hash(previous, row) != row.hash:
            return count, (f"row {row.pk} ({row.created_at:%Y-%m-%d %H:%M:%S}) does not match the chain: it, or a "
                           f"row before it back to row {chain.base_id}, was changed, removed or moved")
        previous, count = row.hash, count + 1
    if previous != chain.head or count != chain.length - chain.pruned:
        return count, (f"the chain's head says {chain.length - chain.pruned} rows ending in {chain.head[:12]}…, "
                       f"the table holds {count} ending in {previous[:12]}…: rows were removed from the end")
    return count, None


@transaction.atomic
def prune(before: datetime) -> int:
    """Remove the rows made before `before`, keeping the chain verifiable from the next row on."""
    chain = locked_chain()
    count, problem = verify()
    if problem:
        raise ValueError(f"the audit chain is broken, nothing was pruned: {problem}")
    last = PromptAudit.objects.filter(pk__gt=chain.base_id, created_at__lt=before).order_by("-pk").first()
    if last is None:
        return 0
    removed = PromptAudit.objects.prune_through(last.pk)
    AuditChain.objects.filter(pk=1).update(base=last.hash, base_id=last.pk, pruned=chain.pruned + removed)
    return removed


def staff_action(*, staff, action: str, target: str, details: str = "") -> StaffAction:
    """Record what a member of staff did to a user, credits or an image."""
    return StaffAction.objects.create(staff=staff, staff_name=staff.get_username() if staff else "system",
                                      action=action, target=target[:200], details=details)
