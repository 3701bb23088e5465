"""OpenAI Images API clients against /v1/images/generations, with the real embedded worker."""

import asyncio
import base64
import io
import json
import time

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.core.files.storage import default_storage
from django.test import AsyncClient, Client
from PIL import Image as PILImage

from generation.credits.ledger import credits_change
from generation.credits.models import CreditEntry
from generation.engine import parse_parameters, read_watermark
from generation.jobs import live
from generation.jobs.models import Job
from sdweb.shared.api_keys import api_key_create

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def key(alice, checkpoint):
    return api_key_create(user=alice, name="openai")[1]


def post(key, **body):
    return Client().post("/v1/images/generations", json.dumps(body), content_type="application/json",
                         HTTP_AUTHORIZATION=f"Bearer {key}")


def test_b64_json_images_carry_our_metadata_and_watermark(key, worker):
    response = post(key, prompt="a red kite over the sea", n=2, size="256x256")
    assert response.status_code == 200, response.content
    body = response.json()
    assert len(body["data"]) == 2 and body["data"][0]["revised_prompt"] == "a red kite over the sea"
    job = Job.objects.get()
    for k, item in enumerate(body["data"]):
        png = PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))
        assert png.format == "PNG" and read_watermark(png) == job.image_ids[k].to_bytes(8, "big")
        assert parse_parameters(png.info["parameters"])["prompt"] == "a red kite over the sea"
    assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1 and job.images.count() == 2


def test_jpeg_output_keeps_the_watermark(key, worker):
    item = post(key, prompt="a quiet street", size="256x256", output_format="jpeg").json()["data"][0]
    jpeg = PILImage.open(io.BytesIO(base64.b64decode(item["b64_json"])))
    assert jpeg.format == "JPEG" and read_watermark(jpeg) == Job.objects.get().image_ids[0].to_bytes(8, "big")


def test_a_url_works_without_credentials_until_it_expires(key, worker, monkeypatch):
    url = post(key, prompt="a quiet street", size="256x256", response_format="url").json()["data"][0]["url"]
    path = url.split("testserver", 1)[1]
    assert Client().get(path)["Content-Type"] == "image/png"
    later = time.time() + 3601
    monkeypatch.setattr("django.core.signing.time.time", lambda: later)
    assert Client().get(path).status_code == 404
    assert Client().get(path[:-3] + "abc").status_code == 404  # tampered


@pytest.mark.parametrize("body, status, param, code", [
    ({"prompt": "x", "size": "huge"}, 400, "size", None),
    ({"prompt": "x", "size": "300x256"}, 400, "size", None),
    ({"prompt": ""}, 400, "prompt", None),
    ({"prompt": "x", "n": 9}, 400, "n", None),
    ({"prompt": "x", "response_format": "gif"}, 400, "response_format", None),
    ({"prompt": "x", "model": "no-such-model"}, 400, "model", "model_not_found"),
    ({"prompt": "x", "stream": True, "n": 2}, 400, "n", None),
])
def test_bad_fields_get_openais_error_object(key, body, status, param, code):
    response = post(key, **body)
    error = response.json()["error"]
    assert response.status_code == status and error["param"] == param and error["code"] == code
    assert error["type"] == "invalid_request_error" and error["message"]
    assert not Job.objects.exists()


def test_a_bad_key_is_a_401(checkpoint):
    response = post("sdw_wrong", prompt="x")
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"


def test_running_out_of_credits_is_429_insufficient_quota(key, alice):
    credits_change(user=alice, kind="adjust", amount=-100, reason="spent")
    response = post(key, prompt="x", size="256x256")
    assert response.status_code == 429 and response.json()["error"]["code"] == "insufficient_quota"


def test_too_many_requests_is_429_rate_limit_exceeded(key, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {"user": "1/min"}}
    post(key, prompt="x", size="bad")
    response = post(key, prompt="x", size="bad")
    assert response.status_code == 429 and response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response["Retry-After"] == "60"


@pytest.mark.parametrize("endpoint", ["generations", "edits"])
def test_streaming_sends_a_partial_image_while_the_job_runs_then_the_final_one(key, worker, endpoint):
    async def scenario():
        live.use_event_loop(asyncio.get_running_loop())  # as `manage.py up` serves: events on the server's loop
        try:
            return await stream()
        finally:
            live.use_event_loop(None)

    async def stream():
        if endpoint == "generations":
            response = await AsyncClient().post(
                "/v1/images/generations", json.dumps({"prompt": "a storm", "size": "256x256", "stream": True,
                                                      "partial_images": 2}),
                content_type="application/json", headers={"Authorization": f"Bearer {key}"})
        else:
            start = PILImage.effect_noise((256, 256), 60).convert("RGBA")
            start.paste((0, 0, 0, 0), (64, 64, 192, 192))
            response = await AsyncClient().post(
                "/v1/images/edits", {"prompt": "a storm", "stream": "true", "partial_images": "2",
                                     "image": png_file(start, "start.png")}, headers={"Authorization": f"Bearer {key}"})
        assert response["Content-Type"] == "text/event-stream"
        events, buffer = [], b""
        async for chunk in response.streaming_content:
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                name = block.split(b"\n")[0].removeprefix(b"event: ").decode()
                data = json.loads(block.split(b"data: ", 1)[1])
                status = await sync_to_async(lambda: Job.objects.get().status)()
                events.append((name, data, status))
        return events

    events = async_to_sync(scenario)()
    partials = [(data, status) for name, data, status in events if name == "image_generation.partial_image"]
    assert partials and partials[0][1] == "running"  # it arrived while the job was still running
    assert [d["partial_image_index"] for d, _ in partials] == list(range(len(partials)))
    name, final, _ = events[-1]
    assert name == "image_generation.completed"
    assert PILImage.open(io.BytesIO(base64.b64decode(final["b64_json"]))).format == "PNG"


def test_an_sdxl_file_by_name_makes_its_image_and_size_auto_is_its_own_size(key, alice, worker, tiny_families):
    from generation.dialects.openai import _spec
    from generation.library.checkpoints import checkpoint_register

    files = tiny_families["sdxl"]
    xl = checkpoint_register(name="juggernaut-xl", source=str(files["file"]), config=str(files["config"]))
    assert (_spec({"prompt": "x", "model": "juggernaut-xl"}, alice)["params"]["width"], xl.default_height) == (1024, 1024)
    response = post(key, prompt="a red kite", model="juggernaut-xl", size="256x256")
    assert response.status_code == 200, response.content
    png = PILImage.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    parameters = parse_parameters(png.info["parameters"])
    assert (parameters["model"], parameters["model_hash"]) == ("juggernaut-xl", xl.short_hash)


def png_file(image: PILImage.Image, name: str):
    out = io.BytesIO()
    image.save(out, "PNG")
    out.seek(0)
    out.name = name
    return out


def edit(key, **fields):
    return Client().post("/v1/images/edits", fields, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_an_edit_repaints_where_the_mask_is_transparent(key, worker):
    start = PILImage.effect_noise((256, 256), 60).convert("RGB")
    mask = PILImage.new("RGBA", (256, 256), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (64, 64, 192, 192))  # transparent: repaint
    response = edit(key, prompt="a window", image=png_file(start, "start.png"), mask=png_file(mask, "mask.png"), n="2")
    assert response.status_code == 200, response.content
    job = Job.objects.get()
    assert (job.mode, job.num_images, job.width, job.height) == ("inpaint", 2, 256, 256)  # size auto: the image's
    with default_storage.open(job.mask) as stored:
        repaint = PILImage.open(stored).convert("L")
    assert repaint.getpixel((128, 128)) == 255 and repaint.getpixel((10, 10)) == 0
    png = PILImage.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    assert read_watermark(png) == job.image_ids[0].to_bytes(8, "big")


def test_an_edit_without_a_mask_uses_the_images_transparency(key, worker):
    start = PILImage.effect_noise((256, 256), 60).convert("RGBA")
    start.paste((0, 0, 0, 0), (0, 0, 128, 256))
    assert edit(key, prompt="a window", image=png_file(start, "s.png"), size="256x256").status_code == 200
    assert Job.objects.get().mode == "inpaint"


@pytest.mark.parametrize("files, param, message", [
    ({}, "image", "image is required"),
    ({"image": ("opaque", (256, 256))}, "image", "transparent pixels"),
    ({"image": ("rgb", (256, 256)), "mask": ("rgba", (128, 128))}, "mask", "starting image's size"),
    ({"image": ("junk", None)}, "image", "PNG, JPEG or WebP"),
])
def test_a_bad_edit_is_openais_400_naming_the_param_and_charges_nothing(key, alice, files, param, message):
    made = {}
    for name, (kind, size) in files.items():
        if kind == "junk":
            made[name] = io.BytesIO(b"%!PS-Adobe-3.0 EPSF-3.0")
            made[name].name = "x.eps"
        else:
            image = PILImage.new("RGBA" if kind == "rgba" else "RGB", size)
            made[name] = png_file(image, f"{name}.png")
    response = edit(key, prompt="a window", **made)
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and message in error["message"], error
    assert not Job.objects.exists() and alice.credits.balance == 100
