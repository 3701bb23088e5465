from datetime import timedelta

from django.contrib.auth.models import User
from django.utils import timezone

from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import job_submit
from generation.tasks import run_next_job
from tests.support import assert_ledger_balanced, params, refunds


def test_a_user_at_the_cap_does_not_hold_back_another_users_job(alice, carol, checkpoint, settings):
    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 10}
    for _ in range(10):
        job_submit(user=alice, params=params(checkpoint))
    carols = job_submit(user=carol, params=params(checkpoint))
    first, second = job_claim(), job_claim()
    assert carols.pk in (first.pk, second.pk)
    # Then the policy alternates: the user with fewer recent starts goes first, oldest job first.
    assert first.user == alice and first.pk == Job.objects.filter(user=alice).order_by("created_at").first().pk


def test_among_equals_the_oldest_job_is_claimed_first(alice, checkpoint):
    jobs = [job_submit(user=alice, params=params(checkpoint)) for _ in range(3)]
    assert [job_claim().pk for _ in range(3)] == [j.pk for j in jobs]
    assert job_claim() is None


def test_a_claim_takes_a_lease_and_counts_the_attempt(alice, checkpoint, settings):
    job_submit(user=alice, params=params(checkpoint))
    job = job_claim()
    assert (job.status, job.attempts) == ("running", 1)
    assert timezone.now() + timedelta(seconds=settings.SDWEB["LEASE_SECONDS"] - 5) < job.lease_until


def test_a_second_delivery_of_the_same_message_finds_nothing_to_claim(alice, checkpoint):
    job_submit(user=alice, params=params(checkpoint))
    assert job_claim() is not None
    assert job_claim() is None
    assert run_next_job.apply().result is None


def expire_lease(job):
    Job.objects.filter(pk=job.pk).update(lease_until=timezone.now() - timedelta(seconds=1))


def test_a_job_whose_worker_died_is_claimed_again_and_finished(transactional_db, alice, checkpoint):
    job_submit(user=alice, params=params(checkpoint))
    orphan = job_claim()  # a worker took it, then its process died
    expire_lease(orphan)
    assert run_next_job.apply().result == str(orphan.pk)
    job = Job.objects.get(pk=orphan.pk)
    assert (job.status, job.attempts, job.images.count()) == ("succeeded", 2, 2)
    assert refunds(job) == 0 and User.objects.get(pk=alice.pk).credits.balance == 99
    assert_ledger_balanced()


def test_past_the_attempt_limit_a_job_fails_with_exactly_one_refund(transactional_db, alice, checkpoint, settings):
    job = job_submit(user=alice, params=params(checkpoint))
    Job.objects.filter(pk=job.pk).update(status="running", attempts=settings.SDWEB["ATTEMPT_LIMIT"])
    expire_lease(job)
    run_next_job.apply()
    run_next_job.apply()
    job.refresh_from_db()
    limit = settings.SDWEB["ATTEMPT_LIMIT"]
    assert (job.status, job.error) == ("failed", f"The worker stopped {limit} times; giving up.")
    assert refunds(job) == 1 and User.objects.get(pk=alice.pk).credits.balance == 100
    assert_ledger_balanced()


def test_the_embedded_server_start_makes_orphaned_running_jobs_claimable(alice, checkpoint):
    from generation.jobs.queue import jobs_recover_orphans

    job_submit(user=alice, params=params(checkpoint))
    job_submit(user=alice, params=params(checkpoint))
    running = job_claim()
    assert jobs_recover_orphans() == 2
    assert job_claim().pk == running.pk  # its lease no longer holds it


def test_among_equals_a_worker_takes_the_job_for_the_checkpoint_it_holds(alice, carol, checkpoint, tiny_families):
    from generation.library.checkpoints import checkpoint_register

    other = checkpoint_register(name="other", source=str(tiny_families["sd1"]["file"]),
                                config=str(tiny_families["sd1"]["config"]))
    older = job_submit(user=alice, params=params(checkpoint))
    newer = job_submit(user=carol, params=params(other))
    assert job_claim(held=frozenset({other.pk})).pk == newer.pk
    assert job_claim(held=frozenset({other.pk})).pk == older.pk


def test_a_held_checkpoint_never_beats_fairness(alice, carol, checkpoint, tiny_families):
    from generation.library.checkpoints import checkpoint_register

    other = checkpoint_register(name="other", source=str(tiny_families["sd1"]["file"]),
                                config=str(tiny_families["sd1"]["config"]))
    Job.objects.filter(pk=job_submit(user=alice, params=params(other)).pk).update(
        status="succeeded", started_at=timezone.now())  # alice started a job recently; carol did not
    alices = job_submit(user=alice, params=params(other))
    carols = job_submit(user=carol, params=params(checkpoint))
    assert job_claim(held=frozenset({other.pk})).pk == carols.pk
    assert job_claim(held=frozenset({other.pk})).pk == alices.pk


def test_the_worker_knows_which_checkpoints_it_holds(transactional_db, alice, carol, checkpoint, tiny_families,
                                                     monkeypatch):
    from generation.engine.loading import PIPELINES
    from generation.jobs import worker as run_service
    from generation.library.checkpoints import checkpoint_register

    other = checkpoint_register(name="other", source=str(tiny_families["sd1"]["file"]),
                                config=str(tiny_families["sd1"]["config"]))
    PIPELINES.clear()
    PIPELINES.get(other.model_ref())
    alices = job_submit(user=alice, params=params(checkpoint))
    carols = job_submit(user=carol, params=params(other))
    ran = []
    monkeypatch.setattr(run_service, "jobs_run", lambda jobs, **_: ran.append(jobs))  # which jobs are claimed
    assert run_service.job_run_next().pk == carols.pk and ran == [[carols], [alices]]  # and the next run at once
