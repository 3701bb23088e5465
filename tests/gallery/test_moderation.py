"""Reports, hiding and suspension, and the staff actions they leave behind."""

import pytest

from generation.accounts.models import StaffAction
from generation.credits.models import CreditAccount
from generation.jobs.submit import Refused, job_submit
from generation.provenance.models import PromptAudit


def actions():
    return list(StaffAction.objects.order_by("id").values_list("staff_name", "action", "target"))


def report(client, url, reason="not for children"):
    return client.post(url + "report/", {"reason": reason})


def test_a_visitor_reports_and_staff_hide_the_image_for_good(client, alice, admin, shared):
    image, url = shared
    assert report(client, url).status_code == 302  # signed out: anyone may report
    client.force_login(admin)
    page = client.get("/admin/gallery/report/", {"status": "open"}).content.decode()
    assert "not for children" in page and "alice" in page
    report_id = image.reports.get().pk
    client.post("/admin/gallery/report/", {"action": "hide_images", "_selected_action": [report_id]})
    image.refresh_from_db()
    assert (image.is_public, image.hidden, image.reports.get().outcome) == (False, True, "image hidden")
    client.logout()
    assert client.get(url).status_code == 404
    client.force_login(alice)
    assert "Hidden by staff" in client.get(f"/images/{image.hex_id}/").content.decode()
    response = client.post(f"/images/{image.hex_id}/visibility/", {"public": "1"}, follow=True)
    assert "Staff hid this image" in response.content.decode()
    image.refresh_from_db()
    assert not image.is_public
    assert actions() == [("admin", "hide image", str(image))]


def test_a_suspended_user_cannot_submit_and_their_public_images_are_hidden(client, alice, admin, shared, checkpoint):
    image, url = shared
    report(client, url)
    client.force_login(admin)
    client.post("/admin/gallery/report/", {"action": "suspend_owners", "_selected_action": [image.reports.get().pk]})
    client.logout()
    assert client.get(url).status_code == 404
    with pytest.raises(Refused) as refused:
        job_submit(user=alice, params={"prompt": "again", "checkpoint": checkpoint, "width": 256, "height": 256})
    assert refused.value.code == "suspended"
    assert PromptAudit.objects.filter(user=alice).latest("id").decision == "refused"
    client.force_login(alice)
    page = client.post("/generate/", {"prompt": "again", "checkpoint": checkpoint.pk, "width": 256, "height": 256,
                                      "steps": 2, "guidance_scale": 7, "scheduler": "Euler a", "seed": 1,
                                      "num_images": 1}).content.decode()
    assert "Your account is suspended" in page
    assert actions() == [("admin", "suspend user", "alice")]


def test_dismissing_a_report_keeps_the_image_public(client, admin, shared):
    image, url = shared
    report(client, url)
    client.force_login(admin)
    client.post("/admin/gallery/report/", {"action": "dismiss", "_selected_action": [image.reports.get().pk]})
    image.refresh_from_db()
    assert image.is_public and image.reports.get().outcome == "dismissed"
    assert actions() == [("admin", "dismiss report", f"report {image.reports.get().pk} on {image}")]


def test_staff_changes_to_users_and_credits_in_the_admin_are_audited(client, alice, admin):
    client.force_login(admin)
    account = CreditAccount.objects.get(user=alice)
    client.post(f"/admin/generation/creditaccount/{account.pk}/change/",
                {"adjust_by": "25", "reason": "goodwill", "entries-TOTAL_FORMS": "0", "entries-INITIAL_FORMS": "0"})
    client.post(f"/admin/auth/user/{alice.pk}/change/", {
        "username": "alice", "is_active": "on", "is_staff": "on", "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00", "initial-date_joined_0": "2026-01-01", "initial-date_joined_1": "00:00:00"})
    got = [(action, target) for _, action, target in actions()]
    assert ("adjust credits", "alice") in got and ("admin change", "user alice") in got, got
    assert StaffAction.objects.get(action="adjust credits").details == "+25: goodwill"
    assert client.get("/admin/generation/staffaction/").status_code == 200
