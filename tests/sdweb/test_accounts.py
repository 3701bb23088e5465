import re

import pytest
from django.contrib.auth.models import User
from django.core import mail

from sdweb.models import Invite

SIGNUP = {"username": "dana", "email": "dana@example.com", "password1": "a-long-pass-123",
          "password2": "a-long-pass-123"}


def test_signing_up_signs_you_in_with_the_starting_credits(client, db):
    response = client.post("/accounts/signup/", SIGNUP, follow=True)
    assert response.redirect_chain[-1][0] == "/generate/"
    assert response.context["user"].username == "dana"
    assert "You have 100 credits to start." in response.content.decode()
    assert User.objects.get(username="dana").credits.balance == 100


def test_a_bad_sign_up_says_what_is_wrong_next_to_the_field(client, db):
    response = client.post("/accounts/signup/", {**SIGNUP, "password2": "something-else-1"})
    assert response.status_code == 200 and "password2" in response.context["form"].errors
    assert not User.objects.filter(username="dana").exists()


def test_invite_only_registration_needs_an_unused_invite(client, admin, settings):
    settings.SDWEB = {**settings.SDWEB, "REGISTRATION": "invite"}
    assert client.post("/accounts/signup/", SIGNUP).status_code == 403
    invite = Invite.objects.create(created_by=admin)
    assert client.post(f"/accounts/signup/{invite.code}/", SIGNUP).status_code == 302
    assert Invite.objects.get().used_by.username == "dana"
    client.logout()
    again = client.post(f"/accounts/signup/{invite.code}/", {**SIGNUP, "username": "eve"})
    assert again.status_code == 404 and not User.objects.filter(username="eve").exists()


def test_staff_issue_invites_in_the_admin_and_see_the_link(client, admin, settings):
    client.force_login(admin)
    client.post("/admin/sdweb/invite/add/", {"note": "for dana"})
    invite = Invite.objects.get()
    assert invite.created_by == admin
    page = client.get(f"/admin/sdweb/invite/{invite.pk}/change/").content.decode()
    assert f"/accounts/signup/{invite.code}/" in page


def test_closed_registration_refuses_everyone(client, db, settings):
    settings.SDWEB = {**settings.SDWEB, "REGISTRATION": "closed"}
    response = client.post("/accounts/signup/", SIGNUP)
    assert response.status_code == 403 and "closed" in response.content.decode()
    assert not User.objects.filter(username="dana").exists()


def test_sign_in_is_throttled_per_account_after_repeated_failures(client, alice, settings):
    settings.SDWEB = {**settings.SDWEB, "AUTH_FAILURES_PER_ACCOUNT": 3}
    for _ in range(3):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    blocked = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert blocked.status_code == 429 and "Too many attempts" in blocked.content.decode()
    assert "_auth_user_id" not in client.session


def test_sign_in_is_throttled_per_ip(client, alice, settings):
    settings.SDWEB = {**settings.SDWEB, "AUTH_ATTEMPTS_PER_IP": 2}
    for name in ("x", "y"):
        client.post("/accounts/login/", {"username": name, "password": "nope"}, REMOTE_ADDR="10.9.9.9")
    blocked = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"},
                          REMOTE_ADDR="10.9.9.9")
    assert blocked.status_code == 429
    allowed = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"},
                          REMOTE_ADDR="10.9.9.10")
    assert allowed.status_code == 302


def test_sign_in_and_out(client, alice):
    assert client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"}).status_code == 302
    assert client.get("/account/").status_code == 200
    client.post("/accounts/logout/")
    assert client.get("/account/").status_code == 302


def test_changing_the_password(client, alice):
    client.force_login(alice)
    response = client.post("/accounts/password_change/", {"old_password": "alice-password-1",
                                                          "new_password1": "new-secret-456",
                                                          "new_password2": "new-secret-456"})
    assert response.status_code == 302
    assert User.objects.get(pk=alice.pk).check_password("new-secret-456")


def test_resetting_a_forgotten_password_by_email(client, alice):
    client.post("/accounts/password_reset/", {"email": "alice@example.com"})
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    client.post(form_page.redirect_chain[-1][0], {"new_password1": "reset-pass-789", "new_password2": "reset-pass-789"})
    assert User.objects.get(pk=alice.pk).check_password("reset-pass-789")


def test_the_account_page_shows_balance_ledger_and_jobs(client, alice):
    client.force_login(alice)
    page = client.get("/account/").content.decode()
    assert "Balance: <strong>100</strong>" in page and "starting grant" in page and "+100" in page
    assert "No jobs yet" in page


@pytest.mark.parametrize("path", ["/generate/", "/explore/", "/account/"])
def test_people_signed_in_are_told_when_the_test_model_is_in_use_and_staff_how_to_add_one(client, alice, admin,
                                                                                          path, tmp_path):
    from generation.engine import make_test_model
    from generation.library.checkpoints import checkpoint_register

    client.force_login(alice)
    assert "Test model" not in client.get(path).content.decode()
    checkpoint_register(name="tiny", source=str(make_test_model(tmp_path / "m")), is_test_model=True)
    page = client.get(path).content.decode()
    assert "Test model: its images are noise." in page and "add_model" not in page
    client.force_login(admin)
    assert "add_model NAME FILE.safetensors --default" in client.get(path).content.decode()
    client.logout()
    assert "Test model" not in client.get("/").content.decode()  # not for visitors
