import csv
import io

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from generation.jobs.submit import Refused, job_submit
from generation.provenance.models import PromptAudit
from tests.support import params


@pytest.fixture
def audited(alice, carol, checkpoint):
    job_submit(user=alice, params=params(checkpoint, prompt="a harbour at night"))
    job_submit(user=carol, params=params(checkpoint, prompt="=HYPERLINK(\"http://evil\",\"click\")"))
    with pytest.raises(Refused):
        job_submit(user=carol, params=params(checkpoint, prompt="@SUM(1+1) AND more"))
    job_submit(user=alice, params=params(checkpoint, prompt="+cmd|' /C calc'!A0", negative_prompt="-2+3"))
    return PromptAudit.objects.all()


def changelist(client, admin, **query):
    client.force_login(admin)
    response = client.get("/admin/generation/promptaudit/", query)
    assert response.status_code == 200
    return list(response.context["cl"].result_list)


def test_admins_filter_the_audit_by_user_decision_date_and_checkpoint(client, admin, audited):
    assert {r.username for r in changelist(client, admin, username="carol")} == {"carol"}
    assert [r.prompt for r in changelist(client, admin, decision="refused")] == ["@SUM(1+1) AND more"]
    midnight = timezone.now().replace(hour=0, minute=0, second=0, microsecond=0)
    assert len(changelist(client, admin, created_at__gte=str(midnight))) == 4
    assert changelist(client, admin, created_at__gte=str(midnight + timezone.timedelta(days=1))) == []
    assert len(changelist(client, admin, checkpoint="sdweb-test-tiny")) == 4
    assert changelist(client, admin, checkpoint="other") == []


def test_admins_search_the_prompt_text(client, admin, audited):
    assert [r.prompt for r in changelist(client, admin, q="harbour")] == ["a harbour at night"]


def test_the_csv_export_takes_the_filtered_rows_and_neutralises_formulas(client, admin, audited):
    client.force_login(admin)
    response = client.get("/admin/generation/promptaudit/export/", {"username": "carol"})
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert response["Content-Type"].startswith("text/csv")
    assert {r["username"] for r in rows} == {"carol"} and len(rows) == 2
    assert sorted(r["prompt"] for r in rows) == ["'=HYPERLINK(\"http://evil\",\"click\")", "'@SUM(1+1) AND more"]
    everything = list(csv.DictReader(io.StringIO(client.get("/admin/generation/promptaudit/export/").content.decode())))
    alice_row = next(r for r in everything if r["prompt"].startswith("'+cmd"))
    assert alice_row["negative_prompt"] == "'-2+3" and alice_row["decision"] == "accepted"
    assert len(alice_row["image_ids"].split()) == 2 and alice_row["job_id"]


def test_the_audit_admin_offers_the_export_of_the_current_filter(client, admin, audited):
    client.force_login(admin)
    page = client.get("/admin/generation/promptaudit/", {"decision": "refused"}).content.decode()
    assert "/admin/generation/promptaudit/export/?decision=refused" in page


def test_non_staff_cannot_see_or_export_the_audit(client, alice, audited):
    client.force_login(alice)
    assert client.get("/admin/generation/promptaudit/export/").status_code == 302
    assert client.get("/admin/generation/promptaudit/").status_code == 302


def test_audit_rows_cannot_be_changed_or_deleted_through_the_orm_or_the_admin(client, admin, audited):
    row = audited.first()
    row.prompt = "rewritten"
    with pytest.raises(PermissionError):
        row.save()
    with pytest.raises(PermissionError):
        row.delete()
    with pytest.raises(PermissionError):
        PromptAudit.objects.filter(pk=row.pk).update(prompt="rewritten")
    with pytest.raises(PermissionError):
        PromptAudit.objects.all().delete()
    client.force_login(admin)
    assert client.post(f"/admin/generation/promptaudit/{row.pk}/delete/", {"post": "yes"}).status_code == 403
    client.post(f"/admin/generation/promptaudit/{row.pk}/change/", {"prompt": "rewritten"})
    assert PromptAudit.objects.get(pk=row.pk).prompt != "rewritten"


def test_staff_still_see_who_made_what_after_the_image_and_account_are_gone(client, admin, alice, audited):
    from generation.provenance.audit import pseudonym
    from sdweb.accounts import account_delete

    job_id = PromptAudit.objects.get(prompt="a harbour at night").job_id
    account_delete(user=User.objects.get(pk=alice.pk))
    rows = changelist(client, admin, q="harbour")
    assert [(r.username, r.job_id) for r in rows] == [(pseudonym(alice.pk), job_id)]
    assert client.get(f"/admin/generation/promptaudit/{rows[0].pk}/change/").status_code == 200


def test_audit_search_finds_disguised_spellings_and_reasons(client, admin, alice, checkpoint):
    job_submit(user=alice, params=params(checkpoint, prompt="a nud\u0435 statue in a garden"))  # Cyrillic е
    with pytest.raises(Refused):
        job_submit(user=alice, params=params(checkpoint, prompt="a cat", steps=0))
    client.force_login(admin)
    found = client.get("/admin/generation/promptaudit/", {"q": "nude"}).content.decode()
    assert "statue in a garden" in found
    assert "a cat" in client.get("/admin/generation/promptaudit/", {"q": "steps must be"}).content.decode()
    assert "statue" not in client.get("/admin/generation/promptaudit/", {"q": "steps must be"}).content.decode()
