"""Roles (issue 31, first part): what a group's members may use and how much, checked in the one
submit path, so the page, the REST API and the A1111 and OpenAI dialects refuse alike and list only
what the role allows."""

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from generation.credits.models import CreditAccount, CreditEntry
from generation.jobs.models import Job
from generation.jobs.submit import Refused, job_submit
from generation.jobs.validation import RefusalCode


@pytest.fixture
def students(db, alice, checkpoint, tiny_families):
    """A role "students": only the tiny test model, 2 jobs at once, 256 px, 10 steps, 2 images, 50
    credits a month; alice is one. Another checkpoint (SD 1.x) exists for others."""
    from generation.accounts.models import Role
    from generation.library.checkpoints import checkpoint_register

    other = checkpoint_register(name="sd15", source=str(tiny_families["sd1"]["file"]))
    group = Group.objects.create(name="students")
    role = Role.objects.create(group=group, active_jobs=2, max_side=256, max_steps=10, max_images=2, monthly_credits=50)
    role.checkpoints.add(checkpoint)
    alice.groups.add(group)
    return {"role": role, "allowed": checkpoint, "other": other}


def params(checkpoint, **fields):
    return {"prompt": "a red house", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 4,
            "guidance_scale": 7, "scheduler": "Euler a", "seed": 1, "num_images": 1, **fields}


@pytest.mark.parametrize("fields, field, words", [
    ({"use": "other"}, "checkpoint", "sd15 is not among the checkpoints your role (students) may use"),
    ({"width": 512}, "width", "width may be at most 256 for your role (students); got 512"),
    ({"steps": 20}, "steps", "steps may be at most 10 for your role (students)"),
    ({"num_images": 3}, "num_images", "num_images may be at most 2 for your role (students)"),
    ({"enable_hr": True, "hr_scale": 2.0}, "hr_scale", "at most 256"),
])
def test_what_the_role_does_not_allow_is_refused_naming_the_limit_and_charges_nothing(alice, carol, students, fields,
                                                                                       field, words):
    before = alice.credits.balance
    checkpoint = students["other"] if fields.pop("use", None) else students["allowed"]
    with pytest.raises(Refused, match=words.replace("(", r"\(").replace(")", r"\)")) as refused:
        job_submit(user=alice, params=params(checkpoint, **fields))
    assert refused.value.field == field and not Job.objects.exists()
    assert CreditAccount.objects.get(user=alice).balance == before
    if field != "hr_scale":  # (the engine's own limit, a 400, names it)
        assert refused.value.code == RefusalCode.ROLE_LIMIT
    job_submit(user=carol, params=params(checkpoint, **fields))  # in no role: the site's limits


def test_the_roles_active_job_cap_and_most_generous_role_win(alice, students):
    from generation.accounts.models import Role

    for _ in range(2):
        job_submit(user=alice, params=params(students["allowed"]))
    with pytest.raises(Refused, match="You already have 2 jobs queued or running") as refused:
        job_submit(user=alice, params=params(students["allowed"]))
    assert refused.value.code == RefusalCode.ACTIVE_JOB_CAP
    staff = Role.objects.create(group=Group.objects.create(name="teachers"), active_jobs=5)  # every checkpoint
    alice.groups.add(staff.group)
    job_submit(user=alice, params=params(students["other"], width=512))


def test_rest_a1111_and_openai_list_and_refuse_alike(alice, students, api):
    listed = [c["name"] for c in api.get("/api/v1/checkpoints/").json()]
    assert listed == ["sdweb-test-tiny"]
    refused = api.post("/api/v1/jobs/", {"prompt": "x", "checkpoint": "sd15", "width": 256, "height": 256},
                       format="json")
    assert refused.status_code == 403 and "students" in refused.json()["detail"]
    a1111 = Client(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    assert [m["model_name"] for m in a1111.get("/sdapi/v1/sd-models").json()] == ["sdweb-test-tiny"]
    sent = a1111.post("/sdapi/v1/txt2img", json.dumps({"prompt": "x", "width": 512, "height": 256, "steps": 2}),
                      content_type="application/json")
    assert sent.status_code == 403 and "width may be at most 256" in sent.json()["detail"]
    from sdweb.shared.api_keys import api_key_create

    key = api_key_create(user=alice, name="openai")[1]
    openai = Client().post("/v1/images/generations", json.dumps({"prompt": "x", "model": "sd15", "size": "256x256"}),
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert openai.status_code == 403 and openai.json()["error"]["param"] == "model"


def test_the_generate_page_offers_only_the_roles_checkpoints(client, alice, students):
    client.force_login(alice)
    page = client.get("/generate/").content.decode()
    assert "sdweb-test-tiny" in page and ">sd15<" not in page and "sd15 [" not in page
    students["allowed"].__class__.objects.filter(pk=students["allowed"].pk).update(enabled=False)
    response = client.get("/generate/")  # nothing left to offer: the site's default is not picked instead
    assert response.status_code == 200 and "checkpoint" not in response.context["form"].initial


def test_the_roles_monthly_credits_are_granted_once_a_month_up_to_it(alice, students):
    from generation.credits.ledger import credits_topup_if_due

    CreditAccount.objects.filter(user=alice).update(balance=5, last_topup_at=None)
    entry = credits_topup_if_due(user=alice)
    assert (entry.amount, entry.reason) == (45, "monthly grant of the role")
    assert credits_topup_if_due(user=alice) is None
    CreditAccount.objects.filter(user=alice).update(balance=0, last_topup_at=timezone.now() - timedelta(days=29))
    assert credits_topup_if_due(user=alice) is None
    CreditAccount.objects.filter(user=alice).update(last_topup_at=timezone.now() - timedelta(days=31))
    assert credits_topup_if_due(user=alice).amount == 50
    assert CreditEntry.objects.filter(account__user=alice, kind=CreditEntry.TOPUP).count() == 2


def test_a_roles_add_on_lists_narrow_blocks_and_uploads_alike(alice, carol, students, library, addon_files):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from generation.library.addons import addon_upload
    from generation.library.selectors import addons_for

    role = students["role"]
    role.addons.add(library["embedding"])  # its library: the embedding only
    role.own_addons = False
    role.save()
    lora = params(students["allowed"], prompt="a house <lora:tiny-style:0.8>")
    with pytest.raises(Refused, match="LoRA 'tiny-style' is not among the add-ons your role \\(students\\) may use") as refused:
        job_submit(user=alice, params=lora)
    assert refused.value.field == "prompt" and refused.value.code == RefusalCode.ROLE_LIMIT
    assert {a.name for a in addons_for(alice)} == {"tinyneg"}
    with pytest.raises(ValueError, match="your role \\(students\\) may not upload add-ons"):
        addon_upload(user=alice, kind="lora", name="mine", file=SimpleUploadedFile("mine.safetensors",
                                                                                   addon_files["lora"].read_bytes()))
    role.blocked_addons.add(library["embedding"])  # blocked beats allowed
    assert not addons_for(alice).exists()
    job_submit(user=carol, params=lora)  # in no role: the whole library
    assert {a.name for a in addons_for(carol)} == {"tiny-style", "tinyneg", "tiny-canny"}


def test_a_roles_largest_upscale_factor_holds_for_hires_fix_and_upscale(alice, students, make_job):
    students["role"].max_upscale = 1.5
    students["role"].max_side = 1024
    students["role"].save()
    image = make_job(alice, num_images=1, steps=2).images.get()
    with pytest.raises(Refused, match="hr_scale may be at most 1.5 for your role \\(students\\); got 2") as refused:
        job_submit(user=alice, params=params(students["allowed"], enable_hr=True, hr_scale=2.0))
    assert refused.value.code == RefusalCode.ROLE_LIMIT
    job_submit(user=alice, params=params(students["allowed"], enable_hr=True, hr_scale=1.5))
    with pytest.raises(Refused, match="upscale_by may be at most 1.5"):
        job_submit(user=alice, params={"init_image": image, "upscale_by": 2.0, "upscaler": "Lanczos"})
    from generation.dialects.a1111_extras import extras_upscale  # A1111's Extras tab, paid at once

    with pytest.raises(Refused, match="upscale_by may be at most 1.5"):
        extras_upscale(user=alice, data=image.png.open("rb").read(), scale=2.0, upscaler="Lanczos")


def test_a_full_storage_quota_refuses_new_jobs_and_uploads_until_room_is_made(alice, students, make_job, addon_files):
    from django.core.files.uploadedfile import SimpleUploadedFile

    from gallery.models import Image
    from gallery.services import images_delete
    from generation.library.addons import addon_upload

    students["role"].storage_mb = 1
    students["role"].save()
    image = make_job(alice, num_images=1, steps=2).images.get()
    assert image.stored_bytes > 0  # its PNG and thumbnail, measured as stored
    Image.objects.filter(pk=image.pk).update(stored_bytes=2**20)  # as if it were a megabyte
    before = CreditAccount.objects.get(user=alice).balance
    with pytest.raises(Refused, match="Your storage is full: 1.0 MB of your 1 MB") as refused:
        job_submit(user=alice, params=params(students["allowed"]))
    assert refused.value.code == RefusalCode.STORAGE_FULL and CreditAccount.objects.get(user=alice).balance == before
    with pytest.raises(ValueError, match="file: Your storage is full"):
        addon_upload(user=alice, kind="lora", name="mine", file=SimpleUploadedFile("mine.safetensors",
                                                                                   addon_files["lora"].read_bytes()))
    images_delete(images=[Image.objects.get(pk=image.pk)], actor=alice)
    job_submit(user=alice, params=params(students["allowed"]))


def test_jobs_under_way_hold_room_for_their_images_until_they_end(alice, students):
    from generation.jobs.queue import job_cancel

    students["role"].storage_mb, students["role"].active_jobs = 1, 10
    students["role"].save()
    jobs = [job_submit(user=alice, params=params(students["allowed"], seed=s)) for s in range(4)]  # a quarter MB each
    with pytest.raises(Refused, match="1.0 MB of your 1 MB are taken by your images, add-ons and jobs under way") as full:
        job_submit(user=alice, params=params(students["allowed"], seed=5))
    assert full.value.code == RefusalCode.STORAGE_FULL
    job_cancel(user=alice, job_id=jobs[0].pk)
    job_submit(user=alice, params=params(students["allowed"], seed=5))


def test_a_role_changed_between_two_page_loads_counts_from_the_next_and_each_load_reads_the_roles_once(
        client, alice, students):
    """The studio page asks for the user's allowance a dozen times (its lists, its limits): one
    read of the roles per request, and a role changed meanwhile shows on the next page."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    client.force_login(alice)
    with CaptureQueriesContext(connection) as queries:
        page = client.get("/generate/").content.decode()
    assert 'data-max-side="256"' in page
    assert sum('FROM "generation_role"' in q["sql"] for q in queries.captured_queries) == 1
    students["role"].max_side = 512
    students["role"].save()
    assert 'data-max-side="512"' in client.get("/generate/").content.decode()
