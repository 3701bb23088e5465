"""A second factor for local accounts (issue 31): TOTP through django-otp, asked after the password
on the sign-in and admin pages; HTTP Basic refuses such an account; staff may be required to have one."""

import base64
import re

import pytest
from django.test import Client
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice


def code(device, *, later=0) -> str:
    totp = TOTP(device.bin_key, device.step, device.t0, device.digits, device.drift)
    totp.time += later * device.step
    return f"{totp.token():06d}"


@pytest.fixture
def with_app(alice):
    """Alice's authenticator app, already set up."""
    return TOTPDevice.objects.create(user=alice, name="authenticator", confirmed=True)


def test_setting_it_up_takes_a_code_from_the_app_and_turning_it_off_another(client, alice, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # (the library's own back-off after a wrong code; a person is slower)
    client.force_login(alice)
    page = client.get("/account/two-factor/").content.decode()
    secret = re.search(r'<code id="totp-key">([A-Z2-7=]+)</code>', page).group(1)
    device = TOTPDevice.objects.get(user=alice, confirmed=False)
    assert base64.b32decode(secret) == device.bin_key and 'src="data:image/svg+xml;base64,' in page
    assert client.post("/account/two-factor/", {"code": "000000"}).status_code == 400
    assert not TOTPDevice.objects.filter(confirmed=True).exists()
    assert client.post("/account/two-factor/", {"code": code(device)}).status_code == 302
    assert TOTPDevice.objects.get(user=alice).confirmed
    assert client.post("/account/two-factor/", {"code": code(device, later=1), "action": "off"}).status_code == 302
    assert not TOTPDevice.objects.filter(user=alice).exists()


def test_a_password_alone_no_longer_signs_in(client, alice, with_app, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0  # (the library's own back-off after a wrong code; a person is slower)
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    assert response["Location"] == "/accounts/login/code/" and "_auth_user_id" not in client.session
    wrong = client.post("/accounts/login/code/", {"code": code(with_app, later=5)})
    assert wrong.status_code == 400 and "That code is not right" in wrong.content.decode()
    assert "_auth_user_id" not in client.session
    right = client.post("/accounts/login/code/", {"code": code(with_app)})
    assert right["Location"] == "/generate/" and client.session["_auth_user_id"] == str(alice.pk)
    assert client.post("/accounts/login/code/", {"code": code(with_app)})["Location"] == "/accounts/login/"  # used


def test_wrong_codes_are_throttled(client, alice, with_app, settings):
    settings.OTP_TOTP_THROTTLE_FACTOR = 0
    client.post("/accounts/login/", {"username": "alice", "password": "alice-password-1"})
    statuses = [client.post("/accounts/login/code/", {"code": "000000"}).status_code for _ in range(7)]
    assert statuses[:5] == [400] * 5 and statuses[-1] == 429


def test_the_admins_sign_in_asks_for_the_code_too_and_http_basic_is_refused(client, admin):
    device = TOTPDevice.objects.create(user=admin, name="authenticator", confirmed=True)
    response = client.post("/admin/login/?next=/admin/", {"username": "admin", "password": "admin-password-1"})
    assert response["Location"] == "/accounts/login/code/" and client.get("/admin/").status_code == 302
    client.post("/accounts/login/code/", {"code": code(device)})
    assert client.get("/admin/").status_code == 200
    basic = base64.b64encode(b"admin:admin-password-1").decode()
    refused = Client().get("/sdapi/v1/sd-models", HTTP_AUTHORIZATION=f"Basic {basic}")
    assert refused.status_code in (401, 403) and "second factor" in refused.json()["detail"]


def test_staff_without_a_second_factor_are_sent_to_set_one_up_when_required(client, admin, settings):
    settings.SDWEB = {**settings.SDWEB, "STAFF_TWO_FACTOR": True}
    client.force_login(admin)
    response = client.get("/admin/generation/job/")
    assert response["Location"] == "/account/two-factor/?next=%2Fadmin%2Fgeneration%2Fjob%2F"
    assert client.get("/generate/").status_code == 200  # the studio itself stays open to them
    client.get("/account/two-factor/")
    device = TOTPDevice.objects.get(user=admin)
    client.post("/account/two-factor/", {"code": code(device)})
    assert client.get("/admin/generation/job/").status_code == 200
