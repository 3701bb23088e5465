from datetime import timedelta

import pytest
from django.utils import timezone

from generation.credits.ledger import credits_change, credits_refund, credits_topup_if_due, quote_cost
from generation.credits.models import CreditAccount, CreditEntry
from tests.support import assert_ledger_balanced


def test_a_new_account_starts_with_the_starting_grant_as_a_ledger_row(alice):
    assert alice.credits.balance == 100
    assert list(alice.credits.entries.values_list("kind", "amount")) == [("grant", 100)]
    assert_ledger_balanced()


@pytest.mark.parametrize("size, steps, images, cost", [
    (512, 30, 1, 1), (512, 30, 4, 4), (768, 30, 1, 3), (512, 31, 1, 2), (256, 20, 2, 1), (1024, 50, 2, 14),
])
def test_the_cost_grows_with_pixels_steps_and_images_rounded_up(size, steps, images, cost):
    assert quote_cost(width=size, height=size, steps=steps, num_images=images) == cost


def test_the_periodic_top_up_adds_up_to_the_ceiling_once_per_period(alice, settings):
    settings.SDWEB = {**settings.SDWEB, "TOPUP_AMOUNT": 30, "TOPUP_CEILING": 110}
    assert credits_topup_if_due(user=alice).amount == 10  # 100 -> the 110 ceiling
    assert credits_topup_if_due(user=alice) is None  # not due again yet
    credits_change(user=alice, kind="charge", amount=-110, reason="spent")
    CreditAccount.objects.filter(user=alice).update(last_topup_at=timezone.now() - timedelta(hours=25))
    assert credits_topup_if_due(user=alice).amount == 30
    assert CreditAccount.objects.get(user=alice).balance == 30
    assert_ledger_balanced()


def test_a_refund_happens_once_however_often_it_is_asked_for(alice, checkpoint):
    from generation.jobs.submit import job_submit
    from tests.support import params

    job = job_submit(user=alice, params=params(checkpoint))
    assert credits_refund(job=job, reason="failed") is not None
    assert credits_refund(job=job, reason="failed again") is None
    assert CreditEntry.objects.filter(job=job, kind="refund").count() == 1
    assert CreditAccount.objects.get(user=alice).balance == 100
    assert_ledger_balanced()


def test_an_admin_adjustment_is_a_ledger_row_signed_by_the_admin(client, admin, alice):
    client.force_login(admin)
    response = client.post(f"/admin/generation/creditaccount/{alice.credits.pk}/change/",
                           {"adjust_by": "-40", "reason": "refund abuse", "entries-TOTAL_FORMS": "0",
                            "entries-INITIAL_FORMS": "0"})
    assert response.status_code == 302
    entry = CreditEntry.objects.get(account__user=alice, kind="adjust")
    assert (entry.amount, entry.reason, entry.staff) == (-40, "refund abuse", admin)
    assert CreditAccount.objects.get(user=alice).balance == 60
    assert_ledger_balanced()


def test_an_admin_adjustment_needs_a_reason(client, admin, alice):
    client.force_login(admin)
    response = client.post(f"/admin/generation/creditaccount/{alice.credits.pk}/change/",
                           {"adjust_by": "5", "reason": "", "entries-TOTAL_FORMS": "0", "entries-INITIAL_FORMS": "0"})
    assert response.status_code == 200 and b"goes into the ledger" in response.content
    assert CreditAccount.objects.get(user=alice).balance == 100
