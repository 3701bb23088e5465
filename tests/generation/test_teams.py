"""Teams (issue 31): a shared pool of credits and a gallery; joining by link or e-mail, leaving and
removal; fair share across teams and within them."""

import pytest
from django.core import mail
from django.test import Client

from gallery.models import Image
from generation.accounts import teams
from generation.accounts.models import StaffAction, Team, TeamMember
from generation.credits.ledger import credits_grant, team_credits_grant
from generation.credits.models import CreditAccount
from generation.jobs.models import Job
from generation.jobs.queue import job_cancel, jobs_claim
from generation.jobs.submit import Refused, job_submit
from tests.support import params


@pytest.fixture
def studio(db, alice, bob, admin):
    """The team "studio": alice owns it, bob is a member; 100 credits in its pool."""
    team = Team.objects.create(name="studio", slug="studio")
    TeamMember.objects.create(team=team, user=alice, role=TeamMember.OWNER)
    TeamMember.objects.create(team=team, user=bob)
    team_credits_grant(team=team, amount=100, reason="the term's credits", staff=admin)
    return team


def pool(team) -> int:
    return CreditAccount.objects.get(team=team).balance


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_a_team_job_spends_the_pool_and_its_images_are_the_teams(studio, alice, bob, carol, make_job):
    own = alice.credits.balance
    job = make_job(bob, team="studio", num_images=1)
    assert pool(studio) == 100 - job.cost and alice.credits.balance == own
    charge = CreditAccount.objects.get(team=studio).entries.get(kind="charge")
    assert charge.job == job and charge.job.user == bob and "bob" in charge.reason  # the ledger says who spent it
    image = Image.objects.get(job=job)
    assert image.team == studio
    for user, seen in ((alice, 200), (bob, 200), (carol, 404)):  # members see it; no one else does
        client = signed_in(user)
        assert client.get(f"/images/{image.hex_id}/").status_code == seen
        assert (image.hex_id in client.get("/teams/studio/gallery/").content.decode()) == (seen == 200)
    assert image.hex_id not in signed_in(bob).get("/gallery/").content.decode()  # not in the private gallery
    page = signed_in(alice).get("/teams/studio/").content.decode()
    assert "bob" in page and f"-{job.cost}" in page


def test_the_prompt_audit_names_the_team_that_paid(studio, bob, carol, checkpoint, admin):
    from generation.provenance.models import PromptAudit

    job = job_submit(user=bob, params=params(checkpoint, team="studio"))
    with pytest.raises(Refused):
        job_submit(user=carol, params=params(checkpoint, team="studio"))
    assert PromptAudit.objects.get(job_id=job.pk).params["team"] == "studio"
    assert PromptAudit.objects.get(username="carol").params["team"] == "studio"  # what was asked for
    listing = signed_in(admin).get("/admin/generation/promptaudit/").content.decode()
    assert '<td class="field-team">studio</td>' in listing


def test_the_chosen_team_pays_by_default_and_own_credits_on_request(studio, alice, checkpoint):
    from generation.accounts.models import UserSettings

    assert job_submit(user=alice, params=params(checkpoint)).team is None  # nothing chosen: her own
    UserSettings.objects.update_or_create(user=alice, defaults={"team": studio})
    assert job_submit(user=alice, params=params(checkpoint)).team == studio  # as A1111 and OpenAI clients submit
    assert job_submit(user=alice, params=params(checkpoint, team=teams.OWN_CREDITS)).team is None


def test_a_team_not_ones_own_is_refused_naming_the_field_and_charges_nothing(studio, carol, checkpoint):
    before = carol.credits.balance
    with pytest.raises(Refused, match="You are not a member of a team 'studio'") as refused:
        job_submit(user=carol, params=params(checkpoint, team="studio"))
    assert refused.value.field == "team" and not Job.objects.exists()
    assert carol.credits.balance == before and pool(studio) == 100
    response = signed_in(carol).post("/api/v1/jobs/", {**params(checkpoint, team="studio"), "checkpoint": checkpoint.name},
                                     content_type="application/json")
    assert response.status_code == 400 and "team" in response.json()


def test_an_empty_pool_refuses_saying_so_and_a_refund_goes_back_to_the_pool(studio, alice, bob, checkpoint, admin):
    team_credits_grant(team=studio, amount=-99, reason="spent elsewhere", staff=admin)
    with pytest.raises(Refused, match="and the team studio's pool is 1"):
        job_submit(user=bob, params=params(checkpoint, team="studio", width=512, height=512, steps=20))
    job = job_submit(user=bob, params=params(checkpoint, team="studio", steps=1))
    assert pool(studio) == 1 - job.cost
    job_cancel(user=bob, job_id=job.pk)
    assert pool(studio) == 1 and StaffAction.objects.filter(action="grant team credits").count() == 2


def test_the_studio_form_offers_the_teams_pools_with_their_balances(studio, bob, checkpoint):
    page = signed_in(bob).get("/generate/").content.decode()
    assert 'value="studio"' in page and 'data-balance="100"' in page and "Team studio" in page
    response = signed_in(bob).post("/generate/", {**params(checkpoint, team="studio"), "checkpoint": checkpoint.pk})
    assert response.status_code == 302 and Job.objects.get().team == studio


def test_a_removed_member_keeps_their_own_images_and_loses_the_teams(studio, alice, bob, make_job):
    credits_grant(user=bob, amount=50, reason="his own")
    mine, theirs = make_job(bob, num_images=1, team=teams.OWN_CREDITS), make_job(bob, num_images=1, team="studio")
    own, team_image = Image.objects.get(job=mine), Image.objects.get(job=theirs)
    response = signed_in(alice).post(f"/teams/studio/remove/{bob.pk}/")
    assert response.status_code == 302 and not TeamMember.objects.filter(user=bob).exists()
    client = signed_in(bob)
    assert client.get(f"/images/{own.hex_id}/").status_code == 200
    assert client.get(f"/images/{team_image.hex_id}/").status_code == 404
    assert client.get(f"/images/{team_image.hex_id}.png").status_code == 404
    assert [i["id"] for i in client.get("/api/v1/images/").json()["results"]] == [own.hex_id]
    assert client.get("/teams/studio/gallery/").status_code == 404
    assert signed_in(alice).get(f"/images/{team_image.hex_id}/").status_code == 200  # it stays the team's
    assert StaffAction.objects.filter(action="team leave", staff_name="alice", details="bob removed").exists()


def test_members_leave_but_the_last_owner_cant_and_only_owners_remove(studio, alice, bob):
    assert signed_in(bob).post(f"/teams/studio/remove/{alice.pk}/").status_code == 302
    assert TeamMember.objects.filter(user=alice).exists()  # a member can't remove anyone
    signed_in(alice).post("/teams/studio/leave/")
    assert TeamMember.objects.filter(user=alice, role="owner").exists()  # the team needs its owner
    signed_in(bob).post("/teams/studio/leave/")
    assert not TeamMember.objects.filter(user=bob).exists()
    assert StaffAction.objects.filter(action="team leave", details="bob left").exists()


def test_joining_by_link_and_a_renewed_link_kills_the_old_one(studio, alice, carol):
    signed_in(alice).post("/teams/studio/link/")
    old = Team.objects.get().invite_token
    assert old and old in signed_in(alice).get("/teams/studio/").content.decode()
    assert "Join the team studio" in signed_in(carol).get(f"/teams/join/{old}/").content.decode()
    signed_in(alice).post("/teams/studio/link/")
    assert signed_in(carol).post(f"/teams/join/{old}/").status_code == 403
    assert signed_in(carol).post(f"/teams/join/{Team.objects.get().invite_token}/").status_code == 302
    assert TeamMember.objects.get(user=carol).role == "member"
    assert teams.paying_team(carol, None) == studio  # her first team pays for her jobs from now on


def test_an_email_invitation_is_for_that_address_alone(studio, alice, bob, carol, django_user_model):
    carol.email = "carol@example.org"
    carol.save()
    signed_in(alice).post("/teams/studio/invite/", {"email": "Carol@Example.org"})
    assert signed_in(alice).post("/teams/studio/invite/", {"email": "not an address"}).status_code == 302
    [message] = mail.outbox
    link = next(word for word in message.body.split() if "/teams/join/" in word)
    path = link[link.index("/teams/join/"):]
    stranger = django_user_model.objects.create_user("dave", email="dave@example.org")
    assert signed_in(stranger).post(path).status_code == 403
    assert signed_in(bob).post("/teams/studio/invite/", {"email": "x@example.org"}).status_code == 302
    assert len(mail.outbox) == 1  # a member can't invite
    assert signed_in(carol).post(path).status_code == 302 and TeamMember.objects.filter(user=carol).exists()
    assert signed_in(carol).post(path).status_code == 403  # used


def test_fair_share_counts_a_team_as_one_party_and_its_members_fairly_within_it(studio, alice, bob, carol, checkpoint,
                                                                               settings):
    """Alice and Bob queue 6 team jobs each, Carol 6 of her own: Carol gets half the runs, not a
    third, and within the team Alice and Bob take turns."""
    settings.SDWEB = {**settings.SDWEB, "ACTIVE_JOB_CAP": 10}
    for seed in range(6):
        for user, team in ((alice, "studio"), (bob, "studio"), (carol, teams.OWN_CREDITS)):
            job_submit(user=user, params=params(checkpoint, seed=seed, team=team))
    order = [jobs_claim(images=1)[0] for _ in range(8)]
    assert sum(j.user_id == carol.pk for j in order) == 4
    team_jobs = [j.user_id for j in order if j.team_id]
    assert sorted(team_jobs) == sorted([alice.pk, alice.pk, bob.pk, bob.pk])


def test_a_deleted_teams_images_go_back_to_their_makers(studio, bob, make_job):
    image = Image.objects.get(job=make_job(bob, num_images=1, team="studio"))
    studio.delete()
    assert Image.objects.get(pk=image.pk).team is None
    assert image.hex_id in signed_in(bob).get("/gallery/").content.decode()


def test_staff_see_every_role_and_team_on_one_page(studio, admin, alice, django_user_model):
    from django.contrib.auth.models import Group

    from generation.accounts.models import Role

    Role.objects.create(group=Group.objects.create(name="students"), max_side=512, storage_mb=100)
    page = signed_in(admin).get("/staff/roles/").content.decode()
    assert "students" in page and "512" in page and "100 MB" in page and "studio" in page
    assert ">100</td>" in page  # the pool
    assert signed_in(alice).get("/staff/roles/").status_code == 302  # not staff
    helper = django_user_model.objects.create_user("helper", is_staff=True)
    assert signed_in(helper).get("/staff/roles/").status_code == 403  # staff without the permission
