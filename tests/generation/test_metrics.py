"""/metrics: refused without the token or an allowed address; its figures come from the database
and move when jobs run. The staff dashboard shows the same story."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from generation.jobs.models import Job
from generation.jobs.queue import job_cancel
from generation.jobs.submit import job_submit
from tests.support import params


@pytest.fixture
def metrics_token(settings):
    settings.SDWEB = {**settings.SDWEB, "METRICS_TOKEN": "scrape-me", "METRICS_ALLOW": []}


def scrape(client) -> dict:
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert response.status_code == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.content.decode()) for sample in family.samples}


def test_anonymous_or_wrong_token_callers_are_refused(client, db, metrics_token, settings):
    assert client.get("/metrics").status_code == 401
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess").status_code == 401
    settings.SDWEB = {**settings.SDWEB, "METRICS_ALLOW": ["127.0.0.1"]}
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 401


def test_counters_move_when_jobs_run(client, alice, checkpoint, make_job, metrics_token):
    before = scrape(client)
    make_job(alice, num_images=2)
    cancelled = job_submit(user=alice, params=params(checkpoint))
    job_cancel(user=alice, job_id=cancelled.pk)
    queued = job_submit(user=alice, params=params(checkpoint, prompt="waiting"))
    after = scrape(client)

    def moved(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert moved("sdweb_jobs", status="succeeded") == 1 and moved("sdweb_jobs", status="cancelled") == 1
    assert after[("sdweb_queue_depth", ())] == 1
    assert moved("sdweb_images_generated_total", checkpoint=checkpoint.name) == 2
    assert moved("sdweb_generation_seconds_count", phase="total") == 1
    assert moved("sdweb_generation_seconds_bucket", phase="denoise", le="+Inf") == 1
    assert moved("sdweb_queue_wait_seconds_count") == 1
    assert moved("sdweb_previews_sent_total") >= 1
    charged = sum(job.cost for job in Job.objects.all())
    assert moved("sdweb_credits_charged_total") == charged
    assert moved("sdweb_credits_refunded_total") == cancelled.cost
    assert after[("sdweb_gpu_seconds_per_image", ())] > 0
    assert queued.status == "queued"


def test_the_dashboard_is_for_staff_and_shows_the_days_figures(client, alice, admin, make_job):
    make_job(alice, num_images=2)
    client.force_login(alice)
    assert client.get("/staff/dashboard/").status_code == 302
    client.force_login(admin)
    page = client.get("/staff/dashboard/").content.decode()
    assert page.count('<dd class="images">2</dd>') == 2  # the 24-hour and the 7-day windows
    assert page.count('<g class="bar">') == 24 + 7
