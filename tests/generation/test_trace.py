"""Trace an image to the job that made it, from its watermark (or, failing that, its metadata)."""

import io

import pytest
from PIL import Image as PILImage

from gallery.services import account_delete, images_delete
from generation.engine import read_png_marking, save_png


@pytest.fixture
def jobs(alice, carol, make_job):
    """Several jobs of two users; the one to find is in the middle."""
    made = [make_job(user, prompt=f"picture {n} by {user}", num_images=2, seed=n)
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


@pytest.mark.parametrize("copy", ["png", "png re-saved", "jpeg q90 4:4:4"])
def test_trace_finds_the_right_job_among_many(client, admin, jobs, copy):
    target = jobs[3].images.order_by("index")[1]
    png = stored_png(target)
    data = {"png": png, "png re-saved": resaved(png, "PNG"),
            "jpeg q90 4:4:4": resaved(png, "JPEG", quality=90, subsampling=0)}[copy]
    client.force_login(admin)
    result = trace(client, data).json()
    assert result["found"] and result["method"] == "watermark", result
    assert (result["image_id"], result["job_id"], result["owner"]) == (target.hex_id, str(jobs[3].pk), "carol")
    assert result["prompt"] == "picture 3 by carol" and result["checkpoint"] == jobs[3].checkpoint.name
    assert result["read"]["c2pa"]["present"] == (copy == "png")  # re-saved copies lose the manifest


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


def test_the_admin_trace_page_shows_the_job_and_refuses_non_staff(client, admin, alice, jobs):
    target = jobs[0].images.first()
    client.force_login(admin)
    page = client.post("/admin/generation/promptaudit/trace/", {"image": upload(stored_png(target))}).content.decode()
    assert str(jobs[0].pk) in page and "picture 0 by alice" in page and "Watermark read." in page
    assert client.post("/admin/generation/promptaudit/trace/", {"image": upload(b"not an image")}).status_code == 400
    client.force_login(alice)
    assert trace(client, stored_png(target)).status_code == 403
    assert client.get("/admin/generation/promptaudit/trace/").status_code == 302
