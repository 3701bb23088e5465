import pytest
from django.core.management import call_command
from rest_framework.test import APIClient
from rest_framework.throttling import UserRateThrottle

from gallery.models import Image
from generation.credits.models import CreditEntry
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.worker import job_run
from generation.provenance.models import PromptAudit
from sdweb.models import ApiKey
from sdweb.shared.api_keys import api_key_create

BODY = {"prompt": "a lighthouse", "width": 256, "height": 256, "steps": 2, "num_images": 2, "seed": 5}


def run_queued():
    job_run(job_claim())


def test_a_job_submitted_through_the_api_is_charged_audited_run_and_in_the_gallery(api, alice):
    response = api.post("/api/v1/jobs/", BODY, format="json")
    assert response.status_code == 201, response.data
    job_id = response.data["id"]
    assert response.data["status"] == "queued" and response.data["checkpoint"] == "sdweb-test-tiny"
    assert PromptAudit.objects.get().decision == "accepted"
    run_queued()
    detail = api.get(f"/api/v1/jobs/{job_id}/").data
    assert detail["status"] == "succeeded" and len(detail["images"]) == 2
    assert detail["progress_step"] == detail["progress_total"] == 2
    assert Image.objects.filter(owner=alice).count() == 2
    assert CreditEntry.objects.filter(kind="charge", job_id=job_id).count() == 1
    png = api.get(f"/api/v1/images/{detail['images'][0]['id']}/download/")
    assert png["Content-Type"] == "image/png"


@pytest.mark.parametrize("changes, field", [({"width": 300}, "width"), ({"scheduler": "nope"}, "scheduler"),
                                            ({"prompt": "a AND b"}, "prompt"), ({"num_images": 9}, "num_images"),
                                            ({"checkpoint": "missing"}, "checkpoint"), ({"seed": -5}, "seed"),
                                            # settings a txt2img job doesn't use, but keeps and shows
                                            ({"resize_mode": 1000}, "resize_mode"), ({"hr_resize_y": -1}, "hr_resize_y"),
                                            ({"inpaint_full_res_padding": 1000}, "inpaint_full_res_padding")])
def test_a_bad_field_is_a_400_naming_it(api, changes, field):
    response = api.post("/api/v1/jobs/", {**BODY, **changes}, format="json")
    assert response.status_code == 400 and field in response.data
    assert not Job.objects.exists()


def test_every_bad_setting_is_named_in_one_answer(api):
    response = api.post("/api/v1/jobs/", {**BODY, "width": 300, "height": 100, "scheduler": "nope"}, format="json")
    assert response.status_code == 400 and {"width", "height", "scheduler"} <= set(response.data), response.data
    assert not Job.objects.exists()


def test_not_enough_credits_is_a_402(api, alice):
    from generation.credits.ledger import credits_change

    credits_change(user=alice, kind="adjust", amount=-100, reason="spent")
    response = api.post("/api/v1/jobs/", BODY, format="json")
    assert response.status_code == 402 and response.data["code"] == "insufficient_credits"


def test_an_idempotency_key_gives_the_same_job_and_one_charge(api, alice):
    first = api.post("/api/v1/jobs/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    again = api.post("/api/v1/jobs/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert (first.status_code, again.status_code) == (201, 200) and first.data["id"] == again.data["id"]
    assert CreditEntry.objects.filter(kind="charge").count() == 1
    other = api.post("/api/v1/jobs/", {**BODY, "prompt": "something else"}, format="json", HTTP_IDEMPOTENCY_KEY="k-1")
    assert other.status_code == 422 and other.data["code"] == "idempotency_mismatch"


def test_jobs_list_filters_by_status_and_paginates(api, alice):
    for _ in range(3):
        api.post("/api/v1/jobs/", BODY, format="json")
    run_queued()
    assert api.get("/api/v1/jobs/", {"status": "succeeded"}).data["count"] == 1
    page = api.get("/api/v1/jobs/", {"limit": 2})
    assert page.data["count"] == 3 and len(page.data["results"]) == 2 and page.data["next"]
    assert api.get("/api/v1/jobs/", {"created_after": "2999-01-01T00:00:00Z"}).data["count"] == 0
    assert api.get("/api/v1/jobs/", {"created_after": "not a date"}).status_code == 400


def test_cancelling_a_queued_job_through_the_api_refunds_it(api, alice):
    job_id = api.post("/api/v1/jobs/", BODY, format="json").data["id"]
    assert api.post(f"/api/v1/jobs/{job_id}/cancel/").data["status"] == "cancelled"
    assert CreditEntry.objects.filter(kind="refund", job_id=job_id).count() == 1


def test_images_can_be_made_public_and_deleted(api, alice):
    api.post("/api/v1/jobs/", BODY, format="json")
    run_queued()
    image = api.get("/api/v1/images/").data["results"][0]
    made_public = api.patch(f"/api/v1/images/{image['id']}/", {"is_public": True}, format="json").data
    assert made_public["is_public"] and made_public["share_url"].startswith("/s/")
    assert api.get("/api/v1/images/", {"public": "true"}).data["count"] == 1
    assert api.delete(f"/api/v1/images/{image['id']}/").status_code == 204
    assert api.get("/api/v1/images/").data["count"] == 1


def test_another_users_jobs_and_images_are_invisible(api, carol):
    api.post("/api/v1/jobs/", BODY, format="json")
    run_queued()
    job = Job.objects.get()
    image = job.images.first()
    _, raw = api_key_create(user=carol, name="carol")
    stranger = APIClient()
    stranger.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    for url in (f"/api/v1/jobs/{job.pk}/", f"/api/v1/images/{image.hex_id}/", f"/api/v1/images/{image.hex_id}/download/"):
        assert stranger.get(url).status_code == 404, url
    assert stranger.post(f"/api/v1/jobs/{job.pk}/cancel/").status_code == 404
    assert stranger.get("/api/v1/jobs/").data["count"] == 0


def test_no_or_a_bad_or_a_revoked_key_is_a_401(alice, checkpoint):
    client = APIClient()
    assert client.get("/api/v1/jobs/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer sdw_not-a-key")
    response = client.get("/api/v1/jobs/")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    key, raw = api_key_create(user=alice, name="old")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/credits/").data == {"balance": 100}
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2026-01-01T00:00:00Z")
    assert client.get("/api/v1/credits/").status_code == 401


def test_keys_are_made_and_revoked_on_the_account_page_and_stored_only_as_a_hash(client, alice):
    client.force_login(alice)
    page = client.post("/account/api-keys/", {"name": "my bot"}).content.decode()
    raw = __import__("re").search(r'<code id="new-key">(sdw_[\w-]+)</code>', page).group(1)
    key = ApiKey.objects.get(user=alice)
    assert key.name == "my bot" and raw not in (key.digest, key.prefix) and raw.startswith(key.prefix)
    assert raw not in client.get("/account/").content.decode()  # shown once
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/credits/").status_code == 200
    client.post(f"/account/api-keys/{key.pk}/revoke/")
    assert api.get("/api/v1/credits/").status_code == 401


def test_create_api_key_prints_a_working_key(alice, capsys):
    call_command("create_api_key", "alice", "--name", "ops")
    raw = capsys.readouterr().out.strip()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert api.get("/api/v1/credits/").data == {"balance": 100}


def test_session_auth_needs_the_csrf_token(alice, checkpoint):
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(alice)
    assert client.get("/api/v1/credits/").status_code == 200
    assert client.post("/api/v1/jobs/", BODY, format="json").status_code == 403


def test_a_throttled_caller_gets_429_with_retry_after(api, monkeypatch):
    monkeypatch.setattr(UserRateThrottle, "THROTTLE_RATES", {"user": "2/min"})
    statuses = [api.get("/api/v1/credits/").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    assert int(api.get("/api/v1/credits/")["Retry-After"]) > 0


def test_quote_checkpoints_schedulers_and_ledger(api):
    assert api.get("/api/v1/quote/", {"width": 512, "height": 512, "steps": 30, "num_images": 4}).data == {
        "cost": 4, "balance": 100}
    assert api.get("/api/v1/quote/", {"width": "x"}).status_code == 400
    img2img = {"width": 512, "height": 512, "steps": 30, "num_images": 4, "from_image": True, "denoising_strength": 0.5}
    assert api.get("/api/v1/quote/", img2img).data["cost"] == 2  # 15 of the 30 steps run
    hires = {"width": 512, "height": 512, "steps": 30, "num_images": 1, "enable_hr": True, "hr_scale": 2,
             "denoising_strength": 0.5}
    assert api.get("/api/v1/quote/", hires).data["cost"] == 3  # 30 steps at 512², then 15 at 1024² (2 credits)
    assert [c["name"] for c in api.get("/api/v1/checkpoints/").data] == ["sdweb-test-tiny"]
    assert {"name": "DPM++ 2M Karras", "sampler": "DPM++ 2M", "schedule_type": "Karras"} in api.get(
        "/api/v1/schedulers/").data
    assert api.get("/api/v1/credits/ledger/").data["results"][0]["kind"] == "grant"


def test_the_schema_validates_and_the_docs_work_offline_under_our_csp(client, db):
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and "script-src 'self'" in docs["Content-Security-Policy"]
    assert "<script>" not in docs.content.decode()  # the initialising script is a file too
    assert "/static/drf_spectacular_sidecar/" in docs.content.decode()


@pytest.mark.parametrize("key", ["", "   "])
def test_a_blank_idempotency_key_is_no_key(api, key):
    for _ in range(2):
        assert api.post("/api/v1/jobs/", BODY, format="json", HTTP_IDEMPOTENCY_KEY=key).status_code == 201
    assert Job.objects.count() == 2


def test_an_overlong_idempotency_key_is_refused_by_name(api):
    response = api.post("/api/v1/jobs/", BODY, format="json", HTTP_IDEMPOTENCY_KEY="k" * 201)
    assert response.status_code == 400 and "Idempotency-Key" in response.data


def test_a_huge_page_limit_is_capped_not_an_error(api, alice):
    response = api.get("/api/v1/credits/ledger/", {"offset": -12188, "limit": 28318526686381935836528640})
    assert response.status_code == 200 and len(response.json()["results"]) == 1  # the starting grant
