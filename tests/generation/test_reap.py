from datetime import timedelta

from django.core.management import call_command
from django.utils import timezone

from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import job_submit
from tests.support import assert_ledger_balanced, params, refunds


def test_reap_jobs_fails_exhausted_jobs_once_and_requeues_orphans(alice, checkpoint, settings, capsys):
    exhausted = job_submit(user=alice, params=params(checkpoint))
    orphan = job_submit(user=alice, params=params(checkpoint))
    past = timezone.now() - timedelta(seconds=1)
    Job.objects.filter(pk=exhausted.pk).update(status="running", attempts=settings.SDWEB["ATTEMPT_LIMIT"],
                                               lease_until=past)
    Job.objects.filter(pk=orphan.pk).update(status="running", attempts=1, lease_until=past)
    call_command("reap_jobs")
    assert "1 failed past the attempt limit, 1 sent back to the queue" in capsys.readouterr().out
    call_command("reap_jobs")
    exhausted.refresh_from_db()
    assert exhausted.status == "failed" and refunds(exhausted) == 1
    assert job_claim().pk == orphan.pk
    assert_ledger_balanced()


def test_healthz_reports_each_dependency(client, db, monkeypatch):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "broker": "ok", "channel_layer": "ok"}

    def broker_down():
        raise ConnectionRefusedError("no broker")

    monkeypatch.setattr("sdweb.views._probe_broker", broker_down)
    response = client.get("/healthz")
    assert response.status_code == 503 and response.json()["broker"] == "error: ConnectionRefusedError"
