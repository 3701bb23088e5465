import pytest

from generation.credits.models import CreditEntry
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.provenance.models import PromptAudit
from tests.support import assert_ledger_balanced, form_data, params


def test_an_accepted_submission_charges_once_queues_the_job_and_audits_it(client, alice, checkpoint):
    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, num_images=2), REMOTE_ADDR="10.1.2.3")
    job = Job.objects.get(user=alice)
    assert response.status_code == 302 and response["Location"] == f"/generate/?job={job.pk}"
    assert (job.status, job.seed, job.num_images, job.cost) == ("queued", 42, 2, 1)
    assert len(set(job.image_ids)) == 2
    assert list(CreditEntry.objects.filter(job=job).values_list("kind", "amount")) == [("charge", -1)]
    audit = PromptAudit.objects.get()
    assert (audit.decision, audit.username, audit.client_ip, audit.prompt) == ("accepted", "alice", "10.1.2.3",
                                                                              "a lighthouse at dusk")
    assert audit.job_id == job.pk and audit.image_ids == job.image_ids
    assert audit.checkpoint == "sdweb-test-tiny" and audit.params["steps"] == 4
    assert_ledger_balanced()


def test_a_random_seed_is_fixed_at_submit_so_a_retry_makes_the_same_images(alice, checkpoint):
    job = job_submit(user=alice, params=params(checkpoint, seed=-1))
    assert 0 <= job.seed <= 2**32 - 1


@pytest.mark.parametrize("overrides, field, message", [
    ({"width": 300}, "width", "multiple of 8"),
    ({"prompt": ""}, "prompt", "This field is required"),
    ({"prompt": "a cat AND a dog"}, "prompt", "AND"),
    ({"steps": 500}, "steps", "less than or equal to 150"),
    ({"num_images": 9}, "num_images", "less than or equal to 4"),
    ({"scheduler": "Euler z"}, "scheduler", "Select a valid choice"),
])
def test_bad_input_is_refused_next_to_its_field_and_costs_nothing(client, alice, checkpoint, overrides, field, message):
    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, **overrides))
    assert response.status_code == 400
    assert message in " ".join(response.context["form"].errors[field])
    assert not Job.objects.exists() and alice.credits.balance == 100
    assert_ledger_balanced()


def test_a_refusal_from_the_engine_is_audited_with_its_reason(alice, checkpoint):
    with pytest.raises(Refused) as refusal:
        job_submit(user=alice, params=params(checkpoint, prompt="portrait <lora:detail:1>"), client_ip="10.0.0.9")
    assert refusal.value.field == "prompt"
    audit = PromptAudit.objects.get()
    assert (audit.decision, audit.prompt, audit.client_ip) == ("refused", "portrait <lora:detail:1>", "10.0.0.9")
    assert "LoRA" in audit.reason and audit.job_id is None


def test_a_submission_costing_more_than_the_balance_is_refused_and_audited(client, bob, checkpoint):
    client.force_login(bob)
    response = client.post("/generate/", form_data(checkpoint))
    assert "costs 1 credits and your balance is 0" in response.content.decode()
    assert not Job.objects.exists()
    assert PromptAudit.objects.get().decision == "refused"
    assert_ledger_balanced()


def test_past_the_active_job_cap_a_submission_is_refused(alice, checkpoint, settings):
    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 2}
    job_submit(user=alice, params=params(checkpoint))
    job_submit(user=alice, params=params(checkpoint))
    with pytest.raises(Refused, match="2 jobs queued or running"):
        job_submit(user=alice, params=params(checkpoint))
    assert Job.objects.count() == 2
    assert list(PromptAudit.objects.order_by("id").values_list("decision", flat=True)) == [
        "accepted", "accepted", "refused"]
    assert alice.credits.balance == 98
    assert_ledger_balanced()


def test_a_disabled_checkpoint_cannot_be_used(alice, checkpoint):
    checkpoint.enabled = False
    checkpoint.save()
    with pytest.raises(Refused) as refusal:
        job_submit(user=alice, params=params(checkpoint))
    assert refusal.value.field == "checkpoint"


def test_the_form_shows_the_cost_settings_and_the_test_model_notice(client, alice, checkpoint):
    client.force_login(alice)
    page = client.get("/generate/").content.decode()
    assert 'data-cost-unit="7864320"' in page and 'data-balance="100"' in page
    assert "Test model: its images are noise" in page


def test_signed_out_visitors_are_sent_to_sign_in(client, checkpoint):
    response = client.post("/generate/", form_data(checkpoint))
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")
    assert not PromptAudit.objects.exists()


def test_after_submitting_the_studio_page_shows_the_job_live_and_keeps_its_settings(client, alice, checkpoint):
    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, prompt="a foggy pier", steps=7), follow=True)
    job = Job.objects.get()
    page = response.content.decode()
    assert f'data-socket="/ws/jobs/{job.pk}/"' in page and 'id="progress"' in page and 'id="preview"' in page
    form = response.context["form"]
    assert (form["prompt"].value(), form["steps"].value(), form["seed"].value()) == ("a foggy pier", 7, -1)


def test_the_studio_page_follows_the_latest_running_job(client, alice, checkpoint):
    job = job_submit(user=alice, params=params(checkpoint))
    client.force_login(alice)
    assert client.get("/generate/").context["job"] == job
    assert client.get("/generate/", {"job": "not-a-uuid"}).status_code == 200


def test_the_studio_page_follows_a_waiting_job_older_than_the_ten_newest(client, alice, checkpoint):
    waiting = job_submit(user=alice, params=params(checkpoint))
    for _ in range(10):  # newer, each finished (as if run) before the next: at most 10 may wait at once
        Job.objects.filter(pk=job_submit(user=alice, params=params(checkpoint)).pk).update(status=Job.SUCCEEDED)
    client.force_login(alice)
    page = client.get("/generate/")
    assert page.context["job"] == waiting and len(page.context["recent_jobs"]) == 10
    Job.objects.filter(pk=waiting.pk).update(status=Job.SUCCEEDED)
    assert client.get("/generate/").context["job"] is None


def test_the_page_watching_a_job_it_lists_reads_it_once_and_its_refund_only_once_it_ended(client, alice, checkpoint):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from generation.credits.ledger import credits_refund

    job = job_submit(user=alice, params=params(checkpoint))
    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/generate/", {"job": str(job.pk)})
    reads = [q["sql"] for q in queries.captured_queries]
    assert page.context["job"] == job and "refunded" not in page.content.decode()
    assert not any('FROM "generation_job"' in sql and job.pk.hex in sql for sql in reads)  # one of the 10 listed
    assert not any('"generation_creditentry"' in sql for sql in reads)
    Job.objects.filter(pk=job.pk).update(status=Job.FAILED)
    credits_refund(job=job, reason="failed")
    assert f"{job.cost} credit, refunded" in client.get("/generate/", {"job": str(job.pk)}).content.decode()


@pytest.mark.parametrize("overrides", [
    {"width": "1e400"}, {"width": "99999999999999999999999"}, {"seed": "99999999999999999999"},
    {"checkpoint": "abc"}, {"checkpoint": "999999"}, {"num_images": "-1"}, {"guidance_scale": "nan"},
    {"guidance_scale": "inf"}, {"prompt": "nul \x00 byte"}, {"steps": ""}, {"scheduler": ""},
    {"prompt": "x" * 5000}, {"negative_prompt": "a AND b"},
])
def test_junk_in_any_field_is_a_400_with_a_message_never_an_error(client, alice, checkpoint, overrides):
    client.force_login(alice)
    response = client.post("/generate/", {**form_data(checkpoint), **overrides})
    assert response.status_code == 400 and response.context["form"].errors
    assert not Job.objects.exists() and alice.credits.balance == 100


def test_a_refused_form_is_audited_with_the_checkpoints_name_not_its_id(client, alice, checkpoint):
    client.force_login(alice)
    client.post("/generate/", form_data(checkpoint, steps=0))
    assert PromptAudit.objects.get().checkpoint == "sdweb-test-tiny"


def test_the_form_shows_every_problem_in_one_round(client, alice, checkpoint):
    client.force_login(alice)
    response = client.post("/generate/", form_data(checkpoint, prompt="", width=300, height=260))
    errors = response.context["form"].errors
    assert set(errors) >= {"prompt", "width", "height"}, errors
    assert "multiple of 8" in errors["width"][0] and "multiple of 8" in errors["height"][0]


def test_png_info_reads_a_pngs_parameters_and_refuses_garbled_ones(client, alice, checkpoint):
    import io

    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    def png(parameters):
        info, out = PngInfo(), io.BytesIO()
        info.add_text("parameters", parameters)
        Image.new("RGB", (64, 64)).save(out, "PNG", pnginfo=info)
        return SimpleUploadedFile("found.png", out.getvalue())

    client.force_login(alice)
    good = client.post("/generate/png-info/", {"image": png(
        "a red door\nNegative prompt: blur\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 7, Size: 512x768, "
        "Model: sdweb-test-tiny")}).json()["fields"]
    assert good == {"prompt": "a red door", "negative_prompt": "blur", "steps": 12, "guidance_scale": 6.0, "seed": 7,
                    "width": 512, "height": 768, "scheduler": "Euler a", "checkpoint": checkpoint.pk}
    hires = client.post("/generate/png-info/", {"image": png(
        "a red door\nSteps: 12, Sampler: Euler a, CFG scale: 6, Seed: 7, Size: 512x768, Model: someone-elses-model, "
        "Clip skip: 2, VAE: missing-vae, Denoising strength: 0.45, Hires upscale: 1.5, Hires steps: 8, "
        "Hires upscaler: Lanczos")}).json()
    assert {k: hires["fields"][k] for k in ("clip_skip", "enable_hr", "hr_scale", "hr_second_pass_steps",
                                             "hr_upscaler", "hr_denoising_strength")} == {
        "clip_skip": 2, "enable_hr": True, "hr_scale": 1.5, "hr_second_pass_steps": 8, "hr_upscaler": "Lanczos",
        "hr_denoising_strength": 0.45}
    assert "checkpoint" not in hires["fields"] and hires["read"].startswith("Read prompt, negative prompt, steps, ")
    assert hires["read"].endswith("hires fix. Not used here: checkpoint 'someone-elses-model', VAE 'missing-vae'.")
    assert hires["parameters"].startswith("a red door\nSteps: 12")
    bad = client.post("/generate/png-info/", {"image": png("x\nSteps: many, Sampler: Euler, Seed: 1, Size: 2x2")})
    assert bad.status_code == 400 and "not in a form" in bad.json()["error"]
