"""The public "was this made here?": anyone, no account, learns when and with which model; who made
it only for a shared image (their name only if they chose it); never a prompt or a private owner."""

import io
import json

import pytest
from PIL import Image as PILImage
from rest_framework.test import APIClient

from gallery.services import image_set_public, sharing_name_set
from tests.support import photo, photo_generate


@pytest.fixture
def made(alice, carol, make_job, monkeypatch):
    """Alice's two images (photo-like, as a real checkpoint's) and one of Carol's."""
    monkeypatch.setattr("generation.jobs.worker.generate", photo_generate)
    alices = make_job(alice, prompt="alice's secret prompt", num_images=2, width=512, height=512)
    carols = make_job(carol, prompt="carol's secret prompt", num_images=1, seed=40, width=512, height=512)
    return list(alices.images.order_by("index")), carols.images.get()


def jpeg_copy(image, quality=85) -> io.BytesIO:
    with image.png.open("rb") as file:
        picture = PILImage.open(file).convert("RGB")
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=quality)
    out.seek(0)
    out.name = "found.jpg"
    return out


def check(client, data) -> dict:
    response = client.post("/api/v1/verify", {"image": data})
    assert response.status_code == 200, response.content
    return response.json()


def test_anyone_learns_when_and_with_what_and_who_only_for_a_shared_image(made, alice, settings):
    (public, private), carols = made
    image_set_public(image=public, public=True, actor=alice)
    sharing_name_set(user=alice, shown=True)
    visitor = APIClient()  # no account
    answer = check(visitor, jpeg_copy(public))
    assert (answer["made_here"], answer["certainty"], answer["checkpoint"]) == (True, "certain", "sdweb-test-tiny")
    assert answer["shared"] == {"by": "alice", "share_slug": public.share_slug}
    hidden = check(visitor, jpeg_copy(private))
    assert hidden["made_here"] is True and hidden["shared"] is None
    sharing_name_set(user=alice, shown=False)
    assert check(visitor, jpeg_copy(public))["shared"] == {"by": None, "share_slug": public.share_slug}
    for answer in (hidden, check(visitor, jpeg_copy(carols))):
        said = json.dumps(answer)
        assert "secret prompt" not in said and "alice" not in said and "carol" not in said
    stranger = io.BytesIO()
    photo(999).save(stranger, format="JPEG")
    stranger.seek(0)
    stranger.name = "stranger.jpg"
    unknown = check(visitor, stranger)
    assert unknown["made_here"] is False and unknown["message"].startswith("No sign of this studio")


def test_the_page_answers_a_visitor_and_both_ways_are_throttled_per_address(made, client, settings):
    settings.SDWEB = {**settings.SDWEB, "VERIFY_PER_WINDOW": 2}
    (public, _), _ = made
    assert client.get("/verify/").status_code == 200
    page = client.post("/verify/", {"image": jpeg_copy(public)}).content.decode()
    assert "Made here" in page and "Its maker has not shared it." in page and "secret prompt" not in page
    gif = io.BytesIO(b"GIF89a not an image")
    gif.name = "bad.gif"
    bad = client.post("/verify/", {"image": gif})
    assert bad.status_code == 400 and "PNG, JPEG or WebP" in bad.content.decode()
    assert client.post("/verify/", {"image": jpeg_copy(public)}).status_code == 429
    api = APIClient()
    assert api.post("/api/v1/verify", {"image": jpeg_copy(public)}).status_code == 429  # the same address


def test_a_thumbnail_carries_the_mark_of_its_image(alice, make_job, monkeypatch):
    """The picture's own mark does not survive shrinking past half: the thumbnail gets its own."""
    from generation.engine.watermark import watermark_reading

    monkeypatch.setattr("generation.jobs.worker.generate", photo_generate)
    for image in make_job(alice, num_images=2, width=1024, height=576).images.all():
        with image.thumbnail.open("rb") as file:
            thumb = PILImage.open(io.BytesIO(file.read()))
        assert min(thumb.size) == 256 and thumb.format == "WEBP"
        assert watermark_reading(thumb).payload == image.id.to_bytes(8, "big")


def test_every_way_out_carries_the_mark_of_the_image_it_is(alice, client, make_job, monkeypatch):
    """The original (and its API download), the thumbnail, a larger copy, a plot's grid and the
    OpenAI dialect's JPEG and WebP copies, of photo-like pictures (flat areas carry the least mark)."""
    from generation.dialects.openai import encoded
    from generation.engine.watermark import watermark_reading
    from generation.jobs.models import Job
    from generation.jobs.queue import job_claim
    from generation.jobs.submit import job_submit
    from generation.jobs.worker import job_run

    def mark(file_field) -> bytes:
        with file_field.open("rb") as file:
            return watermark_reading(PILImage.open(io.BytesIO(file.read()))).payload

    monkeypatch.setattr("generation.jobs.worker.generate", photo_generate)
    image = make_job(alice, num_images=1, width=512, height=512).images.get()
    client.force_login(alice)
    download = client.get(f"/images/{image.hex_id}.png?download=1")
    assert watermark_reading(PILImage.open(io.BytesIO(b"".join(download.streaming_content)))).payload == (
        image.id.to_bytes(8, "big"))
    client.post(f"/images/{image.hex_id}/upscale/", {"upscale_by": "2", "upscaler": "Lanczos"})
    job_run(job_claim())
    larger = Job.objects.get(upscale_by=2).images.get()
    plot = job_submit(user=alice, params={"prompt": "a red fox", "checkpoint": image.job.checkpoint, "width": 256,
                                          "height": 256, "steps": 2, "plot": {"x": {"type": "CFG Scale",
                                                                                     "values": "4, 8"}}})
    job_run(job_claim())
    grid = plot.images.order_by("index").last()
    for made in (image, larger, grid):
        assert mark(made.png) == mark(made.thumbnail) == made.id.to_bytes(8, "big")
    for output_format in ("jpeg", "webp"):  # what the OpenAI dialect hands out, from the quiet mark
        copy = PILImage.open(io.BytesIO(encoded(image, output_format)))
        assert watermark_reading(copy).payload == image.id.to_bytes(8, "big")
