"""The first outside review's findings, each replayed as the attacker did it: every one now meets a
refusal, a throttle or a clean 4xx, never a 5xx, a charge without a result or a silent success.
Three live beside what they test: the websocket origin (11) in tests/generation/test_live.py, the
prompt filter's look-alikes (18) in tests/generation/test_prompt_filter.py, and the PostgreSQL
replays of 14, 17 and 19 in tests/production/test_hostile.py."""

import base64
import hashlib
import io
import json
import os
import stat

import pytest
from django.conf import settings as django_settings
from django.contrib.auth.models import Permission, User
from django.core import mail
from django.core.cache import cache
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery.models import Image
from generation.accounts.models import StaffAction
from generation.credits.ledger import credits_grant
from generation.credits.models import CreditEntry
from generation.jobs.models import Job
from generation.provenance.models import PromptAudit
from sdweb.shared.api_keys import api_key_create
from sdweb.shared.throttle import client_ip


def basic(name: str, password: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(f"{name}:{password}".encode()).decode())
    return client


def sign_in(client, name, password, path="/accounts/login/", **extra):
    return client.post(path, {"username": name, "password": password}, **extra)


# 1-4, 13, 16: every place a password is checked --------------------------------------------------

def test_the_admin_sign_in_locks_after_repeated_wrong_passwords(client, admin):
    codes = [sign_in(client, "admin", f"wrong-{n}", "/admin/login/?next=/admin/").status_code for n in range(7)]
    assert codes == [200] * 5 + [429] * 2
    assert sign_in(client, "admin", "admin-password-1", "/admin/login/?next=/admin/").status_code == 429
    assert "_auth_user_id" not in client.session


def test_basic_auth_locks_after_repeated_wrong_passwords_before_hashing(alice, monkeypatch):
    codes = [basic("alice", f"wrong-{n}").get("/sdapi/v1/progress").status_code for n in range(5)]
    assert codes == [401] * 5
    checks = []
    monkeypatch.setattr(User, "check_password", lambda self, raw: checks.append(raw) or True)
    locked = basic("alice", "alice-password-1").get("/sdapi/v1/progress")
    assert locked.status_code == 429 and locked["Retry-After"] and checks == []  # no password was hashed


def test_weak_passwords_are_refused_at_sign_up_and_change(client, alice):
    response = client.post("/accounts/signup/", {"username": "dora", "password1": "1", "password2": "1"})
    assert response.status_code == 200 and not User.objects.filter(username="dora").exists()
    assert "too short" in response.content.decode()
    client.force_login(alice)
    response = client.post("/accounts/password_change/", {"old_password": "alice-password-1",
                                                           "new_password1": "short", "new_password2": "short"})
    assert response.status_code == 200 and "too short" in response.content.decode()
    assert User.objects.get(username="alice").check_password("alice-password-1")
    assert "at least 10 characters" in client.get("/accounts/signup/").content.decode()  # said up front


@pytest.mark.parametrize("spelling", [" carol", "carol\t", "ｃａｒｏｌ", "Carol"])
def test_the_lockout_holds_for_every_spelling_of_the_account_name(client, carol, spelling):
    for n in range(5):
        sign_in(client, "carol", f"wrong-{n}")
    assert sign_in(client, spelling, "carol-password-1").status_code == 429
    assert "_auth_user_id" not in client.session


def test_a_changed_password_ends_the_remembered_basic_auth_at_once(alice):
    old = basic("alice", "alice-password-1")
    assert old.get("/sdapi/v1/progress").status_code == 200  # checked, and remembered
    plain = "basic-auth:" + hashlib.sha256(b"alice\0alice-password-1").hexdigest()
    assert cache.get(plain) is None  # the remembered pair is keyed by the site's secret, not a bare hash
    alice.set_password("a-brand-new-passphrase")
    alice.save()
    assert old.get("/sdapi/v1/progress").status_code == 401
    assert basic("alice", "a-brand-new-passphrase").get("/sdapi/v1/progress").status_code == 200


def test_password_rechecks_on_account_deletion_and_change_are_throttled(client, alice):
    client.force_login(alice)
    for n in range(5):
        client.post("/account/delete/", {"password": f"wrong-{n}"})
    assert client.post("/account/delete/", {"password": "alice-password-1"}).status_code == 429
    assert User.objects.filter(username="alice").exists()
    cache.clear()
    for n in range(5):
        client.post("/accounts/password_change/", {"old_password": f"wrong-{n}", "new_password1": "another-long-pass-1",
                                                   "new_password2": "another-long-pass-1"})
    response = client.post("/accounts/password_change/", {"old_password": "alice-password-1",
                                                          "new_password1": "another-long-pass-1",
                                                          "new_password2": "another-long-pass-1"})
    assert response.status_code == 429 and User.objects.get(pk=alice.pk).check_password("alice-password-1")


# 5-8: staff powers, suspended users, reports and resets ---------------------------------------------

@pytest.fixture
def bare_staff(db):
    """A member of staff with no permissions at all."""
    return User.objects.create_user("sam", password="sam-password-1", is_staff=True)


def test_staff_without_permissions_cannot_publish_delete_watch_or_trace(client, alice, bare_staff, make_job):
    job = make_job(alice)
    image = job.images.first()
    client.force_login(bare_staff)
    assert client.post(f"/images/{image.hex_id}/visibility/", {"public": "1"}).status_code == 404
    assert client.post(f"/images/{image.hex_id}/delete/").status_code == 404
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/images/{image.hex_id}/").status_code == 404
    png = image.png.open("rb").read()
    assert client.post("/api/v1/trace", {"image": io.BytesIO(png)}).status_code == 403
    assert client.get("/staff/dashboard/").status_code == 403
    image.refresh_from_db()
    assert not image.is_public and not StaffAction.objects.exists()


def test_staff_with_permissions_leave_a_staff_action_for_each_power_they_use(client, alice, bare_staff, make_job):
    bare_staff.user_permissions.add(*Permission.objects.filter(codename__in=[
        "view_image", "change_image", "delete_image", "view_job", "trace_image"]))
    job = make_job(alice)
    first, second = job.images.order_by("index")
    client.force_login(bare_staff)
    bare_staff.user_permissions.remove(Permission.objects.get(codename="delete_image"))
    page = client.get(f"/images/{first.hex_id}/").content.decode()
    assert "Make public" in page and "Delete image" not in page  # only the buttons of powers held
    bare_staff.user_permissions.add(Permission.objects.get(codename="delete_image"))
    bare_staff = User.objects.get(pk=bare_staff.pk)  # permissions are cached on the instance
    client.force_login(bare_staff)
    assert client.get(f"/jobs/{job.pk}/").status_code == 200
    assert client.post(f"/images/{first.hex_id}/visibility/", {"public": "1"}).status_code == 302
    png = second.png.open("rb").read()
    assert client.post("/api/v1/trace", {"image": io.BytesIO(png)}).json()["found"] is True
    assert client.post(f"/images/{second.hex_id}/delete/").status_code == 302
    assert list(StaffAction.objects.order_by("created_at", "id").values_list("staff_name", "action")) == [
        ("sam", "publish image"), ("sam", "trace image"), ("sam", "delete image")]


def test_a_suspended_owner_cannot_publish_through_the_api(client, alice, admin, make_job):
    from gallery.services import user_suspend

    image = make_job(alice).images.first()
    user_suspend(user=alice, staff=admin, reason="spam")
    _, key = api_key_create(user=alice, name="k")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = api.patch(f"/api/v1/images/{image.hex_id}/", {"is_public": True}, format="json")
    assert response.status_code == 403 and "suspended" in response.json()["detail"]
    image.refresh_from_db()
    assert not image.is_public


def test_reports_are_throttled_per_address(client, shared, settings):
    _, url = shared
    codes = [client.post(url + "report/", {"reason": "x" * 900}).status_code for _ in range(12)]
    assert codes[:10] == [302] * 10 and codes[10:] == [429, 429]
    assert shared[0].reports.count() == 10


def test_password_reset_mails_are_throttled(client, alice):
    codes = [client.post("/accounts/password_reset/", {"email": "alice@example.com"}).status_code for _ in range(5)]
    assert codes == [302, 302, 302, 429, 429] and len(mail.outbox) == 3


# 9, 10, 12, 14, 15: hostile input -------------------------------------------------------------------

def test_trace_reads_only_png_jpeg_and_webp_within_a_pixel_cap(client, admin, monkeypatch):
    from PIL import EpsImagePlugin

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: pytest.fail("Ghostscript ran"))
    client.force_login(admin)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n%%EOF\n"
    response = client.post("/api/v1/trace", {"image": io.BytesIO(eps)})
    assert response.status_code == 400 and "PNG, JPEG or WebP" in response.json()["image"][0]
    big = io.BytesIO()
    PILImage.new("1", (8000, 8000)).save(big, format="PNG")  # ~200 KB on disk, 64 megapixels decoded
    response = client.post("/api/v1/trace", {"image": io.BytesIO(big.getvalue())})
    assert response.status_code == 400 and "megapixels" in response.json()["image"][0]


def test_a_huge_refused_prompt_is_audited_as_a_prefix_with_its_length_and_hash(alice, checkpoint):
    from generation.jobs.submit import Refused, job_submit
    from tests.support import params

    prompt = "a lighthouse " * 200_000  # 2.6 MB
    with pytest.raises(Refused):
        job_submit(user=alice, params=params(checkpoint, prompt=prompt))
    row = PromptAudit.objects.get()
    assert len(row.prompt) == 4000 and prompt.startswith(row.prompt)
    assert row.params["prompt_length"] == len(prompt)
    assert row.params["prompt_sha256"] == hashlib.sha256(prompt.encode()).hexdigest()


def test_a_signed_image_url_dies_when_staff_hide_the_image_and_is_never_cached(client, alice, admin, make_job):
    from gallery.services import image_hide
    from generation.dialects.openai import SIGNER

    image = make_job(alice).images.first()
    url = f"/v1/files/{SIGNER.sign_object({'image': image.hex_id, 'format': 'png'})}"
    response = client.get(url)
    assert response.status_code == 200 and response["Cache-Control"] == "private, no-store"
    image_hide(image=image, staff=admin)
    assert client.get(url).status_code == 404


def nested(depth: int) -> str:
    return '{"prompt": ' + "[" * depth + '"x"' + "]" * depth + "}"


@pytest.mark.parametrize("path", ["/api/v1/jobs/", "/sdapi/v1/txt2img", "/sdapi/v1/options", "/v1/images/generations"])
def test_json_nested_a_thousand_deep_is_a_400(alice, checkpoint, path):
    _, key = api_key_create(user=alice, name="k")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    for depth in (40, 1000, 100_000):
        response = api.post(path, nested(depth), content_type="application/json")
        assert response.status_code == 400, (depth, response.content[:200])
    assert not Job.objects.exists() and not CreditEntry.objects.filter(kind="charge").exists()


def test_a_scheduler_that_is_not_a_name_is_a_400_naming_it(alice, checkpoint):
    response = basic("alice", "alice-password-1").post("/sdapi/v1/txt2img", {"prompt": "x", "scheduler": ["karras"]},
                                                       format="json")
    assert response.status_code == 400 and response.json()["detail"].startswith("scheduler:")


def _through_asgi(path: str) -> dict:
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from channels.testing import HttpCommunicator

    from sdweb.asgi import application

    async def fetch():
        return await HttpCommunicator(application, "GET", path).get_response()

    with ThreadPoolExecutor(1) as pool:  # a loop of its own, whatever an earlier test left running here
        return pool.submit(asyncio.run, fetch()).result()


def test_a_static_path_that_climbs_out_is_a_400():
    response = _through_asgi("/static/../var/secret_key")
    assert response["status"] == 400 and b"secret" not in response["body"]


@pytest.mark.django_db
def test_a_static_file_that_is_not_there_is_the_not_found_page():
    response = _through_asgi("/static/no-such-file.css")  # was a 500: the page asked who was signed in
    assert response["status"] == 404 and b"Not found" in response["body"]


def test_partial_images_must_be_a_whole_number_and_nothing_is_charged(client, alice, checkpoint):
    _, key = api_key_create(user=alice, name="k")
    for value in (1.0, True, "1"):
        response = client.post("/v1/images/generations", json.dumps({"prompt": "a storm", "size": "256x256",
                                                                     "stream": True, "partial_images": value}),
                               content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 400 and response.json()["error"]["param"] == "partial_images"
    assert not Job.objects.exists()


# 17, 19: addresses and small leaks ------------------------------------------------------------------

def test_the_client_address_comes_from_trusted_proxies_only(rf, settings):
    import ipaddress

    forged = {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 10.0.0.7"}
    assert client_ip(rf.get("/", REMOTE_ADDR="127.0.0.1", **forged)) == "127.0.0.1"  # no proxy trusted
    settings.SDWEB = {**settings.SDWEB, "TRUSTED_PROXIES": [ipaddress.ip_network("127.0.0.1")]}
    assert client_ip(rf.get("/", REMOTE_ADDR="127.0.0.1", **forged)) == "10.0.0.7"  # the hop the proxy saw
    settings.SDWEB = {**settings.SDWEB, "TRUSTED_PROXIES": [ipaddress.ip_network("127.0.0.1"),
                                                           ipaddress.ip_network("10.0.0.0/8")]}
    assert client_ip(rf.get("/", REMOTE_ADDR="127.0.0.1", **forged)) == "6.6.6.6"
    garbage = rf.get("/", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="=cmd|calc!A0")
    assert client_ip(garbage) == "127.0.0.1"  # never stored as an address
    assert client_ip(rf.get("/", REMOTE_ADDR="not-an-ip")) is None


def test_sd_models_shows_no_server_paths(alice, checkpoint):
    models = basic("alice", "alice-password-1").get("/sdapi/v1/sd-models").json()
    assert models and all(not os.path.isabs(m["filename"]) and "/" not in m["filename"] for m in models)


def test_the_sqlite_database_is_readable_by_its_owner_only(tmp_path):
    from tests.sdweb.test_deploy import setting

    name = setting("settings.DATABASES['default']['NAME']", tmp_path, DATABASE_URL="")
    assert stat.S_IMODE(os.stat(name).st_mode) == 0o600


def test_the_page_showing_a_new_api_key_is_not_stored(client, alice):
    client.force_login(alice)
    response = client.post("/account/api-keys/", {"name": "laptop"})
    assert response.status_code == 200 and "sdw_" in response.content.decode()
    assert "no-store" in response["Cache-Control"]


def test_an_admin_cannot_overdraw_a_balance_without_saying_so(client, admin, alice):
    client.force_login(admin)
    url = f"/admin/generation/creditaccount/{alice.credits.pk}/change/"
    form = {"adjust_by": -400, "reason": "abuse", "entries-TOTAL_FORMS": "0", "entries-INITIAL_FORMS": "0"}
    refused = client.post(url, form)
    assert refused.status_code == 200 and "leave the balance at -300" in refused.content.decode()
    assert client.post(url, {**form, "allow_negative": "on"}).status_code == 302
    alice.credits.refresh_from_db()
    assert alice.credits.balance == -300
    assert "Delete" not in client.get(url).content.decode()


def test_api_image_urls_open_with_the_api_key(alice, checkpoint, make_job):
    job = make_job(alice)
    _, key = api_key_create(user=alice, name="k")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    images = api.get(f"/api/v1/jobs/{job.pk}/").json()["images"]
    for shown in images:
        assert shown["url"].startswith("http://testserver/api/v1/images/")  # absolute, as OpenAI's and A1111's
        response = api.get(shown["url"])
        assert response.status_code == 200 and response["Content-Type"] == "image/png"


def test_a_worker_uses_the_torch_threads_settings_give_it(settings):
    import torch

    from generation.jobs.engine_setup import engine_configure

    before = torch.get_num_threads()
    try:
        settings.SDWEB = {**settings.SDWEB, "TORCH_THREADS": 1}
        engine_configure()
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_new_accounts_still_start_with_their_credits(db):
    user = User.objects.create_user("fresh", password="a-long-pass-123")
    assert user.credits.balance == django_settings.SDWEB["STARTING_CREDITS"]
    credits_grant(user=user, amount=5, reason="x")
    assert Image.objects.count() == 0


def test_error_pages_are_the_sites_own_and_say_nothing_of_the_server(client, alice, rf):
    from django.views.defaults import server_error

    client.force_login(alice)
    missing = client.get("/images/0123456789abcdef/")
    assert missing.status_code == 404 and "Not found" in missing.content.decode()
    assert 'href="/explore/"' in missing.content.decode()
    broken = server_error(rf.get("/"))
    assert broken.status_code == 500 and "Something went wrong on our side" in broken.content.decode()
    assert "Traceback" not in broken.content.decode()
