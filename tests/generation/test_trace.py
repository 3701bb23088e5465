"""Trace an image to the job that made it: from its watermark, or failing that the similarity
index, or failing that its metadata."""

import io

import pytest
from django.core.management import call_command
from PIL import Image as PILImage
from PIL import ImageOps

from gallery.services import images_delete
from generation.engine import read_png_marking, save_png, watermark_reading
from generation.engine.fingerprint import fingerprint
from generation.engine.watermark import embed_legacy_watermark
from generation.provenance.models import ImageFingerprint
from sdweb.accounts import account_delete
from tests.support import photo, photo_generate


@pytest.fixture
def photos(monkeypatch):
    """Jobs make photo-like pictures: to a perceptual hash the test model's noise all looks alike."""
    monkeypatch.setattr("generation.jobs.worker.generate", photo_generate)


@pytest.fixture
def jobs(alice, carol, make_job, photos):
    """Several jobs of two users; the one to find is in the middle."""
    made = [make_job(user, prompt=f"picture {n} by {user}", num_images=2, seed=n, width=512, height=512)
            for n, user in enumerate([alice, carol, alice, carol, alice])]
    return made


def upload(image_file, name="found.png"):
    data = image_file.getvalue() if isinstance(image_file, io.BytesIO) else image_file
    out = io.BytesIO(data)
    out.name = name
    return out


def stored_png(image) -> bytes:
    with image.png.open("rb") as f:
        return f.read()


def resaved(png: bytes, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    PILImage.open(io.BytesIO(png)).convert("RGB").save(out, format=fmt, **options)
    return out.getvalue()


def trace(client, data, name="found.png"):
    return client.post("/api/v1/trace", {"image": upload(data, name)})


def blurred(png: bytes) -> bytes:
    """A copy whose watermark is gone but which still looks the same: a 64 px thumbnail blown back
    up to full size and saved as JPEG."""
    picture = PILImage.open(io.BytesIO(png)).convert("RGB")
    out = io.BytesIO()
    picture.resize((64, 64), PILImage.LANCZOS).resize(picture.size, PILImage.BICUBIC).save(out, format="JPEG")
    assert watermark_reading(PILImage.open(io.BytesIO(out.getvalue()))) is None
    return out.getvalue()


def cropped(png: bytes) -> bytes:
    picture = PILImage.open(io.BytesIO(png))
    out = io.BytesIO()
    picture.crop((picture.width // 5, 0, picture.width, picture.height)).save(out, format="JPEG", quality=75)
    return out.getvalue()


@pytest.mark.parametrize("copy", ["png", "png re-saved", "jpeg q90 4:4:4", "jpeg q75 4:2:0", "20 % cropped, jpeg"])
def test_trace_finds_the_right_job_among_many(client, admin, jobs, copy):
    target = jobs[3].images.order_by("index")[1]
    png = stored_png(target)
    data = {"png": png, "png re-saved": resaved(png, "PNG"),
            "jpeg q90 4:4:4": resaved(png, "JPEG", quality=90, subsampling=0),
            "jpeg q75 4:2:0": resaved(png, "JPEG", quality=75), "20 % cropped, jpeg": cropped(png)}[copy]
    client.force_login(admin)
    result = trace(client, data).json()
    assert result["found"] and result["method"] == "watermark", result
    assert (result["image_id"], result["job_id"], result["owner"]) == (target.hex_id, str(jobs[3].pk), "carol")
    assert result["prompt"] == "picture 3 by carol" and result["checkpoint"] == jobs[3].checkpoint.name
    assert result["read"]["c2pa"]["present"] == (copy == "png")  # re-saved copies lose the manifest
    assert result["read"]["watermark_scheme"] == "luma tile" and result["confidence"] > 0.6


TURNED = {"mirrored": lambda im: ImageOps.mirror(im), "turned 5°": lambda im: im.rotate(5, resample=PILImage.BICUBIC),
          "turned -10°, JPEG": lambda im: im.rotate(-10, resample=PILImage.BICUBIC),
          "a quarter of the area": lambda im: im.crop((128, 128, 384, 384))}


@pytest.mark.parametrize("copy", TURNED)
def test_turned_mirrored_and_small_copies_trace_to_their_job_and_a_forged_one_does_not(client, admin, alice, make_job,
                                                                                       copy):
    """The test model's noise, which the perceptual hashes can't compare after such edits: the
    picture turned back as the watermark was read is matched against the stored image's pixels."""
    from generation.engine import embed_watermark

    image = make_job(alice, num_images=1, width=512, height=512).images.get()
    edit = TURNED[copy]
    client.force_login(admin)
    result = trace(client, resaved(png_of(edit(PILImage.open(io.BytesIO(stored_png(image))).convert("RGB"))),
                                   "JPEG" if "JPEG" in copy else "PNG", quality=90)).json()
    assert result["found"] and (result["method"], result["image_id"]) == ("watermark", image.hex_id), result
    assert "the picture is part of the stored image" in result["message"] or "matches the stored" in result["message"]
    forged = edit(embed_watermark(photo(3, 512), image.watermark_payload))
    refused = trace(client, png_of(forged)).json()
    assert not refused["found"] and "doesn't match it" in refused["message"], refused


def png_of(picture) -> bytes:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def test_when_the_watermark_is_gone_the_similarity_index_finds_the_job_and_says_so(client, admin, carol, jobs):
    target = jobs[1].images.order_by("index")[0]
    copy = blurred(stored_png(target))
    images_delete(images=[target])
    account_delete(user=carol)  # the index, like the audit, outlives the image and the account
    client.force_login(admin)
    result = trace(client, copy, "copy.jpg").json()
    assert result["found"] and result["method"] == "similarity", result
    assert (result["image_id"], result["job_id"]) == (target.hex_id, str(jobs[1].pk))
    assert result["distance"] <= 20 and "the watermark was not readable" in result["message"]
    assert not result["image_exists"] and [c["image_id"] for c in result["candidates"]] == [target.hex_id]


def test_identical_pictures_from_two_jobs_are_both_listed_as_candidates(client, admin, alice, carol, make_job, photos):
    twins = [make_job(user, prompt="the same twice", num_images=1, seed=99, width=512, height=512)
             for user in (alice, carol)]
    client.force_login(admin)
    result = trace(client, blurred(stored_png(twins[1].images.get()))).json()
    assert result["method"] == "similarity" and "1 more image(s) are within the threshold" in result["message"]
    assert {c["job_id"] for c in result["candidates"]} == {str(job.pk) for job in twins}
    page = client.post("/admin/generation/promptaudit/trace/", {"image": upload(blurred(stored_png(
        twins[0].images.get())))}).content.decode()
    assert 'id="trace-candidates"' in page and str(twins[0].pk) in page and str(twins[1].pk) in page


def test_an_image_marked_with_the_old_watermark_is_still_traced(client, admin, jobs):
    target = jobs[4].images.first()
    old = io.BytesIO()  # an image made before this watermark: the old mark, same id, its own picture
    picture = photo(8, 256)
    ImageFingerprint.objects.filter(image_id=target.pk).update(**vars(fingerprint(picture)))
    embed_legacy_watermark(picture, target.watermark_payload).save(old, format="PNG")
    client.force_login(admin)
    result = trace(client, old).json()
    assert result["found"] and result["method"] == "watermark" and result["job_id"] == str(jobs[4].pk), result
    assert result["read"]["watermark_scheme"] == "legacy dwtDctSvd"


def test_images_made_before_the_similarity_index_are_added_by_a_command(client, admin, jobs):
    target = jobs[0].images.first()
    ImageFingerprint.objects.all().delete()
    client.force_login(admin)
    assert trace(client, blurred(stored_png(target))).json()["method"] is None
    out = io.StringIO()
    call_command("fingerprint_images", stdout=out)
    assert out.getvalue().strip() == "fingerprinted 10 image(s)"
    assert trace(client, blurred(stored_png(target))).json()["job_id"] == str(jobs[0].pk)


def test_trace_still_works_after_the_image_and_the_account_are_deleted(client, admin, carol, jobs):
    target = jobs[1].images.first()
    png = resaved(stored_png(target), "JPEG", quality=90, subsampling=0)
    images_delete(images=[target])
    account_delete(user=carol)
    client.force_login(admin)
    result = trace(client, png, "copy.jpg").json()
    assert result["found"] and result["job_id"] == str(jobs[1].pk) and result["prompt"] == "picture 1 by carol"
    assert not result["image_exists"] and not result["account_exists"]
    assert result["owner"].startswith("deleted-")


def test_without_a_watermark_it_says_so_and_falls_back_to_the_metadata(client, admin, jobs):
    target = jobs[2].images.first()
    original = PILImage.open(io.BytesIO(stored_png(target)))
    assert read_png_marking(original) == {"ai_generated": True, "image_id": target.hex_id}
    unmarked = io.BytesIO()  # the same metadata on pixels without the watermark
    save_png(PILImage.new("RGB", (256, 256), "gray"), unmarked, original.info["parameters"], target.hex_id)
    client.force_login(admin)
    result = trace(client, unmarked).json()
    assert result["found"] and result["method"] == "metadata" and result["job_id"] == str(jobs[2].pk), result
    assert result["read"]["watermark"] is None

    bare = io.BytesIO()
    PILImage.new("RGB", (256, 256), "gray").save(bare, format="PNG")
    result = trace(client, bare).json()
    assert not result["found"] and result["method"] is None and "No watermark" in result["message"]
    assert "no stored image is similar" in result["message"]


def test_the_admin_trace_page_shows_the_job_and_refuses_non_staff(client, admin, alice, jobs):
    target = jobs[0].images.first()
    client.force_login(admin)
    page = client.post("/admin/generation/promptaudit/trace/", {"image": upload(stored_png(target))}).content.decode()
    assert str(jobs[0].pk) in page and "picture 0 by alice" in page and "Watermark read (scheme luma tile" in page
    assert "Found by</th><td>watermark" in page
    assert client.post("/admin/generation/promptaudit/trace/", {"image": upload(b"not an image")}).status_code == 400
    client.force_login(alice)
    assert trace(client, stored_png(target)).status_code == 403
    assert client.get("/admin/generation/promptaudit/trace/").status_code == 302
