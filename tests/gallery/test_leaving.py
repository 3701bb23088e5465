from django.contrib.auth.models import User
from django.core.files.storage import default_storage

from gallery.models import Image
from generation.jobs.models import Job
from generation.provenance.audit import pseudonym
from generation.provenance.models import PromptAudit


def test_deleting_my_account_removes_images_and_files_and_keeps_audit_rows_pseudonymised(client, alice, carol,
                                                                                       make_job):
    job = make_job(alice, prompt="alice's lighthouse")
    images = list(job.images.all())
    make_job(carol)
    client.force_login(alice)
    response = client.post("/account/delete/", {"password": "alice-password-1"})
    assert response.status_code == 302
    assert not User.objects.filter(username="alice").exists()
    assert not Job.objects.filter(pk=job.pk).exists() and not Image.objects.filter(owner_id=alice.pk).exists()
    for image in images:
        assert not default_storage.exists(image.png.name) and not default_storage.exists(image.thumbnail.name)
    row = PromptAudit.objects.get(job_id=job.pk)
    assert row.username == pseudonym(alice.pk) and row.username.startswith("deleted-")
    assert row.user is None and row.prompt == "alice's lighthouse" and row.image_ids == job.image_ids
    assert PromptAudit.objects.filter(username="carol").count() == 1  # others untouched
    assert client.get("/account/").status_code == 302  # signed out


def test_account_deletion_needs_the_password(client, alice, make_job):
    make_job(alice)
    client.force_login(alice)
    response = client.post("/account/delete/", {"password": "wrong"})
    assert response.status_code == 400 and "That password is not right." in response.content.decode()
    assert User.objects.filter(username="alice").exists() and Image.objects.count() == 2


def test_the_pseudonym_is_stable_per_account_and_differs_between_accounts():
    assert pseudonym(1) == pseudonym(1) != pseudonym(2)


def test_deleting_my_account_removes_my_uploaded_starting_images_but_not_anothers_same_file(client, alice, carol,
                                                                                            checkpoint):
    import io

    from PIL import Image as PILImage

    from generation.jobs.submit import job_submit
    from tests.support import params

    def upload(seed):
        out = io.BytesIO()
        PILImage.effect_noise((128, 128), seed).convert("RGB").save(out, "PNG")
        return out.getvalue()

    mine, both = upload(10), upload(20)
    job = job_submit(user=alice, params=params(checkpoint, init_image=mine))
    shared = job_submit(user=alice, params=params(checkpoint, init_image=both))
    job_submit(user=carol, params=params(checkpoint, init_image=both))  # the same file: one stored copy
    assert default_storage.exists(job.init_image) and default_storage.exists(shared.init_image)
    client.force_login(alice)
    client.post("/account/delete/", {"password": "alice-password-1"})
    assert not default_storage.exists(job.init_image)
    assert default_storage.exists(shared.init_image)  # carol's job still starts from it
