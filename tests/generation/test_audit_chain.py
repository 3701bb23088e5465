"""The prompt audit is a hash chain: verify_audit finds any changed byte, removed row or swap,
and prune_audit removes old rows without breaking verification."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.db import models
from django.utils import timezone

from generation.jobs.submit import job_submit
from generation.provenance.audit import GENESIS, chain_hash
from generation.provenance.models import AuditChain, AuditImage, ImageFingerprint, PromptAudit

ROWS = 10_000
FIELDS = ("created_at", "subject", "client_ip", "prompt", "negative_prompt", "params", "checkpoint", "decision",
          "reason", "job_id", "image_ids", "hash")


@pytest.fixture
def chain(db):
    """10 000 rows over the last 700 days, chained as `audit.append` chains them (made in bulk)."""
    head, rows, start = GENESIS, [], timezone.now() - timedelta(days=700)
    for i in range(ROWS):
        row = PromptAudit(created_at=start + timedelta(minutes=100 * i), username=f"user{i % 7}",
                          subject=f"deleted-{i % 7:012d}", client_ip="10.0.0.1", prompt=f"a lighthouse, take {i}",
                          params={"steps": 20, "guidance_scale": 7.0}, checkpoint="tiny", decision="accepted",
                          image_ids=[i], position=i + 1)
        row.hash = head = chain_hash(head, row)
        rows.append(row)
    PromptAudit.objects.bulk_create(rows, batch_size=2000)
    AuditChain.objects.update_or_create(pk=1, defaults={"head": head, "length": ROWS})
    return list(PromptAudit.objects.order_by("pk").values_list("pk", flat=True))


def verify() -> str:
    from io import StringIO

    out = StringIO()
    call_command("verify_audit", stdout=out)
    return out.getvalue()


def tamper(pk, **fields):
    models.QuerySet.update(PromptAudit.objects.filter(pk=pk), **fields)  # below the append-only guard, like SQL


def test_an_intact_chain_of_10000_rows_verifies_and_new_submissions_extend_it(chain, alice, checkpoint):
    assert verify() == f"audit chain intact: {ROWS} rows\n"
    job_submit(user=alice, params={"prompt": "one more", "checkpoint": checkpoint, "width": 256, "height": 256,
                                   "steps": 2})
    assert verify() == f"audit chain intact: {ROWS + 1} rows\n"


def test_a_one_byte_change_is_caught_at_that_row(chain):
    tamper(chain[5000], prompt="a lighthouse, take 5001")
    with pytest.raises(CommandError, match=f"row {chain[5000]} "):
        verify()


def test_a_changed_hash_or_field_anywhere_is_caught(chain):
    row = PromptAudit.objects.get(pk=chain[1234])
    tamper(chain[1234], params={"steps": 21, "guidance_scale": 7.0})
    with pytest.raises(CommandError, match=f"row {chain[1234]} "):
        verify()
    tamper(chain[1234], params=row.params, hash=("0" if row.hash[0] != "0" else "1") + row.hash[1:])
    with pytest.raises(CommandError, match=f"row {chain[1234]} "):
        verify()


def test_a_deleted_row_is_caught_in_the_middle_and_at_the_end(chain):
    models.QuerySet.delete(PromptAudit.objects.filter(pk=chain[7000]))
    with pytest.raises(CommandError, match=f"row {chain[7001]} "):
        verify()
    models.QuerySet.delete(PromptAudit.objects.filter(pk__gte=chain[7000]))
    with pytest.raises(CommandError, match="rows were removed from the end"):
        verify()


def test_two_swapped_rows_are_caught(chain):
    first, second = (PromptAudit.objects.filter(pk=pk).values(*FIELDS).get() for pk in (chain[300], chain[301]))
    tamper(chain[300], **second)
    tamper(chain[301], **first)
    with pytest.raises(CommandError, match=f"row {chain[300]} "):
        verify()


def test_prune_removes_old_rows_and_the_rest_still_verifies(chain, alice, checkpoint, settings):
    settings.SDWEB = {**settings.SDWEB, "AUDIT_RETENTION_DAYS": 365}
    too_recent = (timezone.now() - timedelta(days=100)).date().isoformat()
    with pytest.raises(CommandError, match="rows of the last 365 days are kept"):
        call_command("prune_audit", "--before", too_recent)
    rows = PromptAudit.objects.order_by("pk")
    AuditImage.objects.bulk_create([AuditImage(image_id=1, audit=rows.first()), AuditImage(image_id=2, audit=rows.last())])
    ImageFingerprint.objects.bulk_create([ImageFingerprint(image_id=n, phash=0, whash=0, width=256, height=256)
                                          for n in (1, 2)])
    cutoff = timezone.now() - timedelta(days=400)
    old = PromptAudit.objects.filter(created_at__lt=cutoff.replace(hour=0, minute=0, second=0, microsecond=0)).count()
    call_command("prune_audit", "--before", cutoff.date().isoformat())
    assert PromptAudit.objects.count() == ROWS - old and old > 4000
    assert verify() == f"audit chain intact: {ROWS - old} rows\n"
    assert list(ImageFingerprint.objects.values_list("image_id", flat=True)) == [2]  # pruned with its audit row
    job_submit(user=alice, params={"prompt": "after pruning", "checkpoint": checkpoint, "width": 256, "height": 256,
                                   "steps": 2})
    assert verify() == f"audit chain intact: {ROWS - old + 1} rows\n"
    tamper(PromptAudit.objects.order_by("pk").first().pk, prompt="rewritten")  # the first kept row is checked too
    with pytest.raises(CommandError):
        verify()
    with pytest.raises(CommandError, match="nothing was pruned"):
        call_command("prune_audit")
