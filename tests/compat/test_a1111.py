"""AUTOMATIC1111 clients against /sdapi/v1/, with the real embedded worker making the images."""

import base64
import io
import json

import pytest
from django.contrib.auth.hashers import check_password
from django.contrib.auth.models import User
from PIL import Image as PILImage
from rest_framework.test import APIClient

from generation.credits.models import CreditEntry
from generation.engine import parse_parameters, read_watermark
from generation.jobs.models import Job
from generation.jobs.submit import job_submit

pytestmark = pytest.mark.django_db(transaction=True)

# What A1111's API documents as the txt2img request body, defaults and all, as clients send it.
A1111_DEFAULT_PAYLOAD = {
    "prompt": "a lighthouse at dusk", "negative_prompt": "", "styles": [], "seed": -1, "subseed": -1,
    "subseed_strength": 0, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "sampler_name": "DPM++ 2M",
    "scheduler": "Karras", "batch_size": 2, "n_iter": 1, "steps": 3, "cfg_scale": 7, "width": 256, "height": 256,
    "restore_faces": None, "tiling": None, "do_not_save_samples": False, "do_not_save_grid": False, "eta": None,
    "denoising_strength": 0, "s_min_uncond": 0, "s_churn": 0, "s_tmax": None, "s_tmin": 0, "s_noise": 1,
    "override_settings": {}, "override_settings_restore_afterwards": True, "refiner_checkpoint": None,
    "refiner_switch_at": None, "disable_extra_networks": False, "firstpass_image": None, "comments": {},
    "enable_hr": False, "firstphase_width": 0, "firstphase_height": 0, "hr_scale": 2, "hr_upscaler": "Latent",
    "hr_second_pass_steps": 0, "hr_resize_x": 0, "hr_resize_y": 0, "hr_checkpoint_name": None,
    "hr_sampler_name": None, "hr_scheduler": None, "hr_prompt": "", "hr_negative_prompt": "",
    "force_task_id": None, "sampler_index": "Euler", "script_name": None, "script_args": [], "send_images": True,
    "save_images": False, "alwayson_scripts": {}, "infotext": None,
}


@pytest.fixture
def alice_a1111(alice, checkpoint):
    """Alice's A1111 client: her username and password as HTTP Basic, as `webuiapi` sends them."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    return client


def test_a1111s_full_default_payload_makes_watermarked_images_with_a1111_metadata(alice_a1111, worker):
    response = alice_a1111.post("/sdapi/v1/txt2img", A1111_DEFAULT_PAYLOAD, format="json")
    assert response.status_code == 200, response.data
    info = json.loads(response.data["info"])
    assert response.data["parameters"]["sampler_name"] == "DPM++ 2M"
    assert len(response.data["images"]) == 2 and info["all_seeds"] == [info["seed"], info["seed"] + 1]
    assert (info["sampler_name"], info["scheduler"], info["steps"], info["sd_model_name"]) == (
        "DPM++ 2M", "Karras", 3, "sdweb-test-tiny")
    assert {"enable_hr", "hr_scale", "eta", "s_noise", "alwayson_scripts"} <= set(info["ignored"])
    job = Job.objects.get()
    for k, encoded in enumerate(response.data["images"]):
        png = PILImage.open(io.BytesIO(base64.b64decode(encoded)))
        meta = parse_parameters(png.info["parameters"])
        assert (meta["seed"], meta["sampler"], meta["schedule_type"]) == (info["all_seeds"][k], "DPM++ 2M", "Karras")
        assert read_watermark(png) == job.image_ids[k].to_bytes(8, "big")
        assert png.info["parameters"] == info["infotexts"][k]
    assert CreditEntry.objects.filter(job=job, kind="charge").count() == 1
    assert job.images.count() == 2  # in the owner's gallery too


def test_styles_prompt_editing_a_variation_seed_and_an_esrgan_hires_upscaler_are_what_the_infotext_says(
        alice_a1111, alice, worker, esrgan_folder):
    from generation.jobs.styles import style_save
    from generation.library.addons import addons_scan

    addons_scan()
    style_save(user=alice, name="detailed", prompt="highly detailed", negative_prompt="blurry")
    response = alice_a1111.post("/sdapi/v1/txt2img", {
        **A1111_DEFAULT_PAYLOAD, "prompt": "a [fox:wolf:0.5]", "styles": ["detailed"], "seed": 11, "subseed": 5,
        "subseed_strength": 0.25, "enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "4x-Tiny",
        "hr_second_pass_steps": 2, "denoising_strength": 0.7}, format="json")
    assert response.status_code == 200, response.data
    pngs = [PILImage.open(io.BytesIO(base64.b64decode(encoded))) for encoded in response.data["images"]]
    assert [png.size for png in pngs] == [(384, 384)] * 2
    info = json.loads(response.data["info"])
    assert (info["prompt"], info["negative_prompt"], info["styles"]) == (
        "a [fox:wolf:0.5], highly detailed", "blurry", ["detailed"])
    assert (info["subseed"], info["all_subseeds"], info["subseed_strength"]) == (5, [5, 6], 0.25)
    meta = [parse_parameters(text) for text in info["infotexts"]]
    assert (meta[0]["prompt"], meta[0]["negative_prompt"]) == ("a [fox:wolf:0.5], highly detailed", "blurry")
    assert [(m["seed"], m["subseed"], m["subseed_strength"]) for m in meta] == [(11, 5, 0.25), (12, 6, 0.25)]
    assert [(m["Hires upscaler"], m["Hires upscale"]) for m in meta] == [("4x-Tiny", "1.5")] * 2
    assert [png.info["parameters"] for png in pngs] == info["infotexts"]


@pytest.mark.parametrize("change, field", [
    ({"enable_hr": True, "hr_scale": 8}, "hr_scale"), ({"styles": ["cinematic"]}, "styles"),
    ({"subseed_strength": 1.5}, "subseed_strength"),
    ({"alwayson_scripts": {"controlnet": {}}}, "alwayson_scripts"), ({"sampler_name": "DDPM"}, "sampler_name"),
    ({"override_settings": {"sd_vae": "other.pt"}}, "override_settings.sd_vae"), ({"width": 300}, "width"),
    ({"cfg_scale": 99}, "cfg_scale"), ({"batch_size": 0}, "batch_size"), ({"eta": 0.5}, "eta"),
    ({"cfgscale": 12}, "cfgscale"),  # a typo is named, not ignored
])
def test_a_value_that_would_change_the_result_is_a_400_naming_the_field(alice_a1111, change, field):
    response = alice_a1111.post("/sdapi/v1/txt2img", {**A1111_DEFAULT_PAYLOAD, **change}, format="json")
    assert response.status_code == 400 and field in response.data["detail"], response.data
    assert not Job.objects.exists()


def test_basic_auth_is_checked_once_then_remembered(alice_a1111, monkeypatch):
    checks = []
    monkeypatch.setattr("django.contrib.auth.base_user.check_password",
                        lambda *a, **k: checks.append(1) or check_password(*a, **k))
    for _ in range(3):
        assert alice_a1111.get("/sdapi/v1/progress").status_code == 200
    assert len(checks) == 1


def test_a_wrong_password_or_none_is_a_401(alice_a1111, checkpoint):
    stranger = APIClient()
    assert stranger.get("/sdapi/v1/sd-models").status_code == 401
    stranger.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:wrong").decode())
    assert stranger.get("/sdapi/v1/sd-models").status_code == 401


def test_progress_and_interrupt_see_only_the_callers_own_job(alice_a1111, carol, checkpoint):
    alice_user = User.objects.get(username="alice")
    other = carol
    params = {"prompt": "x", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 10,
              "guidance_scale": 7, "scheduler": "Euler a", "seed": 1, "num_images": 1}
    theirs = job_submit(user=other, params=params)
    Job.objects.filter(pk=theirs.pk).update(status="running", progress_step=3, progress_total=10)
    assert alice_a1111.get("/sdapi/v1/progress").data["state"]["job_count"] == 0
    alice_a1111.post("/sdapi/v1/interrupt")
    assert Job.objects.get(pk=theirs.pk).cancel_requested is False
    mine = job_submit(user=alice_user, params=params)
    Job.objects.filter(pk=mine.pk).update(status="running", progress_step=5, progress_total=10, preview=b"jpeg",
                                          started_at=mine.created_at)
    progress = alice_a1111.get("/sdapi/v1/progress").data
    assert progress["progress"] == 0.5 and progress["state"]["sampling_step"] == 5
    assert base64.b64decode(progress["current_image"]) == b"jpeg"
    alice_a1111.post("/sdapi/v1/interrupt")
    assert Job.objects.get(pk=mine.pk).cancel_requested is True


def test_models_samplers_schedulers_options_and_the_empty_lists(alice_a1111, checkpoint, tmp_path, test_model_folder):
    from generation.library.checkpoints import checkpoint_register

    checkpoint_register(name="second", source=test_model_folder)
    models = alice_a1111.get("/sdapi/v1/sd-models").data
    assert {m["model_name"] for m in models} == {"sdweb-test-tiny", "second"}
    assert models[0]["title"].endswith(f"[{models[0]['hash']}]") and len(models[0]["hash"]) == 10
    samplers = {s["name"]: s for s in alice_a1111.get("/sdapi/v1/samplers").data}
    assert {"Euler a", "DPM++ 2M", "DPM++ SDE", "UniPC", "PLMS"} <= set(samplers)
    assert [s["name"] for s in alice_a1111.get("/sdapi/v1/schedulers").data] == ["automatic", "uniform", "karras"]
    assert alice_a1111.get("/sdapi/v1/options").data["sd_model_checkpoint"].startswith("sdweb-test-tiny [")
    assert alice_a1111.post("/sdapi/v1/options", {"sd_model_checkpoint": "second [abc]"}, format="json").status_code == 200
    assert alice_a1111.get("/sdapi/v1/options").data["sd_model_checkpoint"].startswith("second [")
    assert alice_a1111.post("/sdapi/v1/options", {"sd_model_checkpoint": "nope"}, format="json").status_code == 400
    for name in ("loras", "sd-vae", "prompt-styles"):  # none yet
        assert alice_a1111.get(f"/sdapi/v1/{name}").data == []
    assert [u["name"] for u in alice_a1111.get("/sdapi/v1/upscalers").data] == ["None", "Lanczos", "Nearest"]
    assert "Latent (nearest-exact)" in [m["name"] for m in alice_a1111.get("/sdapi/v1/latent-upscale-modes").data]
    assert alice_a1111.get("/sdapi/v1/embeddings").data == {"loaded": {}, "skipped": {}}


def test_insufficient_credits_is_refused_before_any_work(alice_a1111, checkpoint):
    from generation.credits.ledger import credits_change

    credits_change(user=User.objects.get(username="alice"), kind="adjust", amount=-100, reason="spent")
    response = alice_a1111.post("/sdapi/v1/txt2img", A1111_DEFAULT_PAYLOAD, format="json")
    assert response.status_code == 402 and "balance is 0" in response.data["detail"]


def test_an_sdxl_file_with_refiner_and_clip_skip_as_a1111_clients_ask_for_them(alice_a1111, worker, tiny_families):
    from generation.library.checkpoints import checkpoint_register

    for family, name in (("sdxl", "ponyXL"), ("sdxl-refiner", "refinerXL")):
        files = tiny_families[family]
        checkpoint_register(name=name, source=str(files["file"]), config=str(files["config"]))
    models = {m["model_name"]: m for m in alice_a1111.get("/sdapi/v1/sd-models").data}
    pony = models["ponyXL"]
    assert (pony["filename"], pony["title"]) == ("sdxl.safetensors", f"ponyXL [{pony['hash']}]")
    assert pony["sha256"].startswith(pony["hash"]) and len(pony["sha256"]) == 64
    assert "/" not in json.dumps(list(models.values()))  # no server path in any answer
    payload = {**A1111_DEFAULT_PAYLOAD, "batch_size": 1, "refiner_checkpoint": models["refinerXL"]["title"],
               "refiner_switch_at": 0.8, "override_settings": {"sd_model_checkpoint": "sdxl.safetensors",
                                                               "CLIP_stop_at_last_layers": 2}}
    response = alice_a1111.post("/sdapi/v1/txt2img", payload, format="json")
    assert response.status_code == 200, response.data
    info = json.loads(response.data["info"])
    assert (info["sd_model_name"], info["sd_model_hash"], info["clip_skip"]) == ("ponyXL", pony["hash"], 2)
    infotext = info["infotexts"][0]
    assert f"Model hash: {pony['hash']}, Model: ponyXL, Clip skip: 2, Refiner: {models['refinerXL']['title']}, " \
           "Refiner switch at: 0.8" in infotext


def test_a_refiner_the_studio_does_not_have_is_a_400_naming_the_field(alice_a1111):
    response = alice_a1111.post("/sdapi/v1/txt2img", {**A1111_DEFAULT_PAYLOAD, "refiner_checkpoint": "nope [123]"},
                                format="json")
    assert response.status_code == 400 and "refiner_checkpoint" in response.data["detail"]


def b64(image: PILImage.Image) -> str:
    out = io.BytesIO()
    image.save(out, "PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


# webuiapi's img2img payload with its default arguments (only inpaint_full_res and its padding
# differ from A1111's own defaults).
IMG2IMG_PAYLOAD = {
    "resize_mode": 0, "denoising_strength": 0.75, "mask_blur": 4, "inpainting_fill": 0, "inpaint_full_res": True,
    "inpaint_full_res_padding": 0, "inpainting_mask_invert": 0, "initial_noise_multiplier": 1,
    "prompt": "a red door", "styles": [], "seed": 9, "subseed": -1, "subseed_strength": 0, "seed_resize_from_h": 0,
    "seed_resize_from_w": 0, "batch_size": 1, "n_iter": 1, "steps": 4, "cfg_scale": 7.0, "image_cfg_scale": 1.5,
    "width": 256, "height": 256, "restore_faces": False, "tiling": False, "do_not_save_samples": False,
    "do_not_save_grid": False, "negative_prompt": "", "eta": 1.0, "s_churn": 0, "s_tmax": 0, "s_tmin": 0,
    "s_noise": 1, "override_settings": {}, "override_settings_restore_afterwards": True, "sampler_name": "Euler a",
    "scheduler": "Automatic", "sampler_index": "Euler a", "include_init_images": False, "script_name": None,
    "script_args": [], "send_images": True, "save_images": False, "alwayson_scripts": {},
}


def test_img2img_with_and_without_a_mask_as_a1111_clients_send_it(alice_a1111, worker):
    start = PILImage.effect_noise((256, 256), 60).convert("RGB")
    mask = PILImage.new("L", (256, 256), 0)
    mask.paste(255, (96, 96, 160, 160))
    plain = alice_a1111.post("/sdapi/v1/img2img", {**IMG2IMG_PAYLOAD, "init_images": [b64(start)]}, format="json")
    masked = alice_a1111.post("/sdapi/v1/img2img", {**IMG2IMG_PAYLOAD, "init_images": [b64(start)], "mask": b64(mask)},
                              format="json")
    assert plain.status_code == masked.status_code == 200, (plain.data, masked.data)
    info = json.loads(masked.data["info"])
    assert info["denoising_strength"] == 0.75 and "image_cfg_scale" in info["ignored"]
    params = parse_parameters(info["infotexts"][0])
    assert (params["Denoising strength"], params["Mask blur"], params["Inpaint area"], params["Masked content"]) == (
        "0.75", "4", "Only masked", "fill")
    assert "Mask blur" not in json.loads(plain.data["info"])["infotexts"][0]
    assert [job.mode for job in Job.objects.order_by("created_at")] == ["img2img", "inpaint"]


def test_hires_fix_as_a1111_clients_ask_for_it(alice_a1111, worker):
    response = alice_a1111.post("/sdapi/v1/txt2img", {**A1111_DEFAULT_PAYLOAD, "batch_size": 1, "enable_hr": True,
                                                       "hr_scale": 1.5, "hr_second_pass_steps": 2,
                                                       "denoising_strength": 0.5}, format="json")
    assert response.status_code == 200, response.data
    png = PILImage.open(io.BytesIO(base64.b64decode(response.data["images"][0])))
    assert png.size == (384, 384)
    assert "Hires upscale: 1.5, Hires steps: 2, Hires upscaler: Latent" in png.info["parameters"]
    assert "Denoising strength: 0.5" in png.info["parameters"]


@pytest.mark.parametrize("change, field", [
    ({"init_images": ["not base64!"]}, "init_images"), ({"init_images": []}, "init_images"),
    ({"init_images": [base64.b64encode(b"GIF89a not really").decode()]}, "init_images"),
    ({"inpainting_mask_invert": 2}, "inpainting_mask_invert"), ({"resize_mode": 7}, "resize_mode"),
])
def test_a_bad_img2img_payload_is_a_400_naming_the_field(alice_a1111, change, field):
    body = {**IMG2IMG_PAYLOAD, "init_images": [b64(PILImage.new("RGB", (256, 256)))], **change}
    response = alice_a1111.post("/sdapi/v1/img2img", body, format="json")
    assert response.status_code == 400 and field in response.data["detail"], response.data
    assert not Job.objects.exists()
    assert alice_a1111.post("/sdapi/v1/txt2img", body, format="json").status_code == 400  # img2img has its own URL


def test_extras_upscales_any_image_charges_for_it_and_refuses_what_it_cant_do(alice_a1111, alice):
    start = PILImage.effect_noise((256, 128), 60).convert("RGB")
    body = {"resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0, "codeformer_visibility": 0,
            "codeformer_weight": 0, "upscaling_resize": 2, "upscaling_resize_w": 512, "upscaling_resize_h": 512,
            "upscaling_crop": True, "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
            "upscale_first": False, "image": b64(start)}
    response = alice_a1111.post("/sdapi/v1/extra-single-image", body, format="json")
    assert response.status_code == 200, response.data
    made = PILImage.open(io.BytesIO(base64.b64decode(response.data["image"])))
    assert made.size == (512, 256) and not made.info
    assert CreditEntry.objects.filter(kind="charge", reason__startswith="upscale ×2").count() == 1
    for change, field in (({"gfpgan_visibility": 1}, "gfpgan_visibility"), ({"upscaler_1": "R-ESRGAN 4x+"}, "upscaler_1"),
                          ({"upscaling_resize": 40}, "upscaling_resize"), ({"image": b64(start)[:60]}, "image")):
        refused = alice_a1111.post("/sdapi/v1/extra-single-image", {**body, **change}, format="json")
        assert refused.status_code == 400 and refused.data["detail"].startswith(field), refused.data
    assert CreditEntry.objects.filter(kind="charge").count() == 1
