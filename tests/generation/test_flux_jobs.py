"""FLUX.1 checkpoints in the studio: registered from the files people have, their jobs submitted
through the form's checks, the REST API and the A1111 dialect, and made by the real worker."""

import base64
import io
import json
import re

import pytest
from PIL import Image as PILImage

from generation.credits.models import CreditEntry
from generation.engine import parse_parameters
from generation.jobs.models import Job
from generation.jobs.queue import job_claim
from generation.jobs.submit import Refused, job_submit
from generation.jobs.worker import job_run


@pytest.fixture
def flux(db, tiny_flux, settings):
    """A FLUX.1 [dev] transformer file and a [schnell] one, their text encoders found in the
    text-encoder folder, and the VAE each was given in the admin (its default VAE)."""
    from generation.library.checkpoints import checkpoint_register, vae_register

    settings.SDWEB = {**settings.SDWEB, "TEXT_ENCODERS_DIR": tiny_flux["flux-dev"]["text_encoders"]}
    ae = vae_register(name="ae.safetensors", source=str(tiny_flux["flux-dev"]["vae"]))
    checkpoints = {}
    for family, files in tiny_flux.items():
        checkpoint = checkpoint_register(name=family, source=str(files["transformer"]), config=str(files["config"]))
        checkpoint.default_vae = ae
        checkpoint.save()
        checkpoints[family] = checkpoint
    return checkpoints


def run(job):
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == Job.SUCCEEDED, job.error
    with job.images.first().png.open("rb") as file:
        return parse_parameters(PILImage.open(io.BytesIO(file.read())).info["parameters"])


def test_a_flux_file_registers_with_its_familys_size_and_steps(flux):
    dev, schnell = flux["flux-dev"], flux["flux-schnell"]
    assert (dev.family, dev.default_width, dev.default_steps) == ("flux-dev", 1024, 28)
    assert (schnell.family, schnell.default_steps) == ("flux-schnell", 4)
    assert dict(dev.model_ref().parts)["text_encoder_2"].endswith("t5xxl_fp16.safetensors")


def test_a_flux_dev_job_is_made_with_its_distilled_guidance_and_charged_once(alice, flux):
    job = job_submit(user=alice, params={"prompt": "a red house", "checkpoint": flux["flux-dev"], "width": 256,
                                         "height": 256, "steps": 3, "guidance_scale": 7, "distilled_guidance_scale": 2.5,
                                         "scheduler": "Euler", "seed": 3, "num_images": 1})
    parameters = run(job)
    assert parameters["Distilled CFG Scale"] == "2.5" and parameters["cfg_scale"] == 1.0
    assert parameters["model"] == "flux-dev" and job.credit_entries.filter(kind="charge").count() == 1


@pytest.mark.parametrize("params, field", [
    ({"negative_prompt": "blurry"}, "negative_prompt"),
    ({"width": 264}, "width"),
    ({"scheduler": "DPM++ 2M Karras"}, "scheduler"),
])
def test_what_flux_does_not_take_is_refused_at_submit_naming_the_field_and_charging_nothing(alice, flux, params,
                                                                                            field):
    before = CreditEntry.objects.count()
    with pytest.raises(Refused) as refused:
        job_submit(user=alice, params={"prompt": "a red house", "checkpoint": flux["flux-dev"], "width": 256,
                                       "height": 256, "steps": 3, "guidance_scale": 7, "scheduler": "Euler", "seed": 3,
                                       "num_images": 1, **params})
    assert refused.value.field == field and "FLUX.1" in str(refused.value)
    assert not Job.objects.exists() and CreditEntry.objects.count() == before


def test_the_rest_api_gives_schnell_its_own_steps_and_shows_the_distilled_guidance(api, flux):
    response = api.post("/api/v1/jobs/", {"prompt": "a blue sky", "checkpoint": "flux-schnell", "width": 256,
                                          "height": 256}, format="json")
    assert response.status_code == 201, response.data
    assert response.data["steps"] == 4 and response.data["distilled_guidance_scale"] == 3.5
    parameters = run(Job.objects.get())
    assert "Distilled CFG Scale" not in parameters and parameters["steps"] == 4
    refused = api.post("/api/v1/jobs/", {"prompt": "a blue sky", "checkpoint": "flux-schnell", "width": 256,
                                         "height": 256, "negative_prompt": "clouds"}, format="json")
    assert refused.status_code == 400 and "negative_prompt" in refused.data


@pytest.mark.django_db(transaction=True)
def test_the_a1111_dialect_takes_forges_distilled_cfg_scale(alice, flux, worker):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    payload = {"prompt": "a red house", "negative_prompt": "", "sampler_name": "Euler", "steps": 3, "cfg_scale": 7,
               "distilled_cfg_scale": 2.0, "width": 256, "height": 256,
               "override_settings": {"sd_model_checkpoint": flux["flux-dev"].title}}
    response = client.post("/sdapi/v1/txt2img", payload, format="json")
    assert response.status_code == 200, response.data
    info = json.loads(response.data["info"])
    assert info["distilled_cfg_scale"] == 2.0 and "Distilled CFG Scale: 2.0" in info["infotexts"][0]


def test_png_info_of_a_forge_flux_image_fills_the_distilled_guidance(client, alice, flux):
    from django.core.files.uploadedfile import SimpleUploadedFile
    from PIL.PngImagePlugin import PngInfo

    info, out = PngInfo(), io.BytesIO()
    info.add_text("parameters", "a red house\nSteps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
                                "Distilled CFG Scale: 2.5, Seed: 7, Size: 896x1152, Model: flux-dev")
    PILImage.new("RGB", (64, 64)).save(out, "PNG", pnginfo=info)
    client.force_login(alice)
    found = client.post("/generate/png-info/", {"image": SimpleUploadedFile("forge.png", out.getvalue())}).json()
    assert found["fields"]["distilled_guidance_scale"] == 2.5 and found["fields"]["checkpoint"] == flux["flux-dev"].pk
    assert "distilled guidance" in found["read"]


def test_the_models_scan_leaves_the_text_encoder_folder_alone(admin, flux, settings, tiny_flux, tmp_path):
    import shutil

    from generation.library.checkpoints import checkpoints_scan

    models = tmp_path / "models"
    shutil.copytree(tiny_flux["flux-dev"]["text_encoders"], models / "text_encoders")
    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": models, "TEXT_ENCODERS_DIR": models / "text_encoders"}
    found, skipped = checkpoints_scan()
    assert found == [] and skipped == {}


def test_a_flux_lora_from_the_library_goes_into_the_job_and_an_sd_lora_is_refused(alice, flux, tiny_flux, tmp_path,
                                                                                    addon_files):
    from diffusers import FluxPipeline

    from generation.engine.testflux import make_tiny_flux_loras
    from generation.library.addons import addon_register

    transformer = FluxPipeline.from_pretrained(tiny_flux["flux-dev"]["folder"]).transformer
    lora = addon_register(kind="lora", name="ink", source=str(make_tiny_flux_loras(transformer, tmp_path)["kohya"]))
    addon_register(kind="lora", name="sd-style", source=str(addon_files["lora"]))
    assert lora.get_family_display() == "FLUX.1"
    params = {"checkpoint": flux["flux-dev"], "width": 256, "height": 256, "steps": 2, "guidance_scale": 7,
              "scheduler": "Euler", "seed": 3, "num_images": 1}
    parameters = run(job_submit(user=alice, params={"prompt": "a red house <lora:ink:0.8>", **params}))
    assert parameters["Lora hashes"] == f"ink: {lora.sha256[:12]}"
    with pytest.raises(Refused, match="is for SD 1.x") as refused:
        job_submit(user=alice, params={"prompt": "a red house <lora:sd-style>", **params})
    assert refused.value.field == "prompt"


def test_two_users_flux_jobs_share_a_run_unless_their_guidance_differs(alice, carol, flux):
    from generation.jobs import worker
    from generation.jobs.queue import jobs_claim

    def submit(user, **fields):
        return job_submit(user=user, params={"prompt": "a red house", "checkpoint": flux["flux-dev"], "width": 256,
                                             "height": 256, "steps": 2, "guidance_scale": 7, "scheduler": "Euler",
                                             "seed": 3, "num_images": 1, **fields})

    jobs = [submit(alice), submit(carol, prompt="a blue sky"), submit(carol, distilled_guidance_scale=2)]
    batch = jobs_claim(worker="w", images=8)
    assert {job.pk for job in batch} == {jobs[0].pk, jobs[1].pk}
    worker.jobs_run(batch)
    for job in jobs[:2]:
        job.refresh_from_db()
        assert (job.status, job.batch_size) == ("succeeded", 2), job.error


def test_a_gguf_flux_file_found_by_the_scan_makes_a_job(alice, flux, tiny_flux, settings, tmp_path):
    from safetensors.torch import load_file

    from generation.engine.testflux import write_gguf
    from generation.library.checkpoints import checkpoint_register, checkpoints_scan

    models = tmp_path / "models"
    models.mkdir()
    write_gguf(load_file(tiny_flux["flux-schnell"]["transformer"]), models / "flux1-schnell-Q8_0.gguf")
    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": models}
    (found,), skipped = checkpoints_scan()
    assert (found.name, found.family, skipped) == ("flux1-schnell-Q8_0", "flux-schnell", {})
    found = checkpoint_register(name=found.name, source=found.source, config=str(tiny_flux["flux-schnell"]["config"]))
    found.default_vae = flux["flux-dev"].default_vae
    found.save()
    parameters = run(job_submit(user=alice, params={"prompt": "a red house", "checkpoint": found, "width": 256,
                                                    "height": 256, "steps": 2, "guidance_scale": 7,
                                                    "scheduler": "Euler", "seed": 3, "num_images": 1}))
    assert parameters["model"] == "flux1-schnell-Q8_0" and parameters["model_hash"] == found.short_hash


@pytest.mark.django_db(transaction=True)
def test_the_openai_dialect_makes_a_flux_image_and_names_size_when_flux_cant_take_it(alice, flux, worker):
    from django.test import Client

    from sdweb.shared.api_keys import api_key_create

    key = api_key_create(user=alice, name="openai")[1]

    def post(**body):
        return Client().post("/v1/images/generations", json.dumps({"prompt": "a red house", "model": "flux-schnell",
                                                                   **body}), content_type="application/json",
                             HTTP_AUTHORIZATION=f"Bearer {key}")

    made = post(size="256x256")
    assert made.status_code == 200, made.content
    png = PILImage.open(io.BytesIO(base64.b64decode(made.json()["data"][0]["b64_json"])))
    assert png.size == (256, 256) and "Model: flux-schnell" in png.info["parameters"]
    refused = post(size="264x264")
    assert refused.status_code == 400 and "multiple of 16" in refused.json()["error"]["message"]
    assert refused.json()["error"]["param"] == "size"


def test_a_vae_of_the_other_latent_kind_is_refused_at_submit_naming_the_field(alice, flux, checkpoint, tmp_path):
    from generation.engine.testmodel import make_tiny_vae
    from generation.library.checkpoints import vae_register

    sd_vae = vae_register(name="sd-vae.safetensors", source=str(make_tiny_vae("sd1", tmp_path / "sd-vae.safetensors")))
    assert (sd_vae.latent_channels, flux["flux-dev"].default_vae.latent_channels) == (4, 16)
    common = {"prompt": "a red house", "width": 256, "height": 256, "steps": 2, "guidance_scale": 7, "scheduler": "Euler",
              "seed": 3, "num_images": 1}
    for model, vae, message in ((flux["flux-dev"], "sd-vae.safetensors", "is for SD (4 latent channels)"),
                                (checkpoint, "ae.safetensors", "is for FLUX.1, SD 3.5 or Z-Image (16 latent channels)")):
        with pytest.raises(Refused, match=re.escape(message)) as refused:
            job_submit(user=alice, params={**common, "checkpoint": model, "vae": vae})
        assert refused.value.field == "vae"
    assert not Job.objects.exists()


def test_the_form_tells_the_page_each_vaes_latents_and_each_checkpoints_family(client, alice, flux):
    client.force_login(alice)
    page = client.get("/generate/").content.decode()
    ae = flux["flux-dev"].default_vae
    assert f'value="{ae.pk}" data-channels="16"' in page
    assert '"flux": "flux-dev"' in page and '"flux": "flux-schnell"' in page


def test_fetch_tokenizers_puts_the_wheels_tokenizers_where_flux_and_z_image_read_them(tiny_flux, tiny_zimage, settings,
                                                                                       tmp_path):
    """The wheel here is a stand-in built from the tiny tokenizers (the real one is downloaded from
    PyPI); Qwen3's tokenizer.json is gzipped in it, as in InvokeAI's."""
    import gzip
    import zipfile

    from django.core.management import CommandError, call_command

    from generation.engine.flux import t5_tokenizer
    from generation.engine.zimage import qwen3_tokenizer

    wheel = tmp_path / "invokeai-6.14.2-py3-none-any.whl"
    t5, qwen = tiny_flux["flux-dev"]["text_encoders"] / "t5_tokenizer", tiny_zimage["text_encoders"] / "qwen3_tokenizer"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            archive.write(t5 / name, "invokeai/backend/t5/tokenizer/" + name)
        for file in qwen.iterdir():  # the chat template beside them, as transformers now saves it
            name, data = file.name, file.read_bytes()
            if name == "tokenizer.json":
                name, data = "tokenizer.json.gz", gzip.compress(data)
            archive.writestr("invokeai/backend/qwen3/tokenizer/" + name, data)
    settings.SDWEB = {**settings.SDWEB, "TEXT_ENCODERS_DIR": tmp_path / "text_encoders"}
    call_command("fetch_tokenizers", "--wheel", str(wheel))
    fetched = t5_tokenizer(tmp_path / "text_encoders" / "t5_tokenizer")
    assert fetched("a red house").input_ids == t5_tokenizer(t5)("a red house").input_ids
    chat = [{"role": "user", "content": "a red house"}]
    assert qwen3_tokenizer(tmp_path / "text_encoders" / "qwen3_tokenizer").apply_chat_template(chat) == \
        qwen3_tokenizer(qwen).apply_chat_template(chat)
    (tmp_path / "empty.whl").write_bytes(b"PK\x05\x06" + bytes(18))
    with pytest.raises(CommandError, match="not a wheel holding 'invokeai/backend/t5/tokenizer/'"):
        call_command("fetch_tokenizers", "--wheel", str(tmp_path / "empty.whl"))


def test_the_admin_chooses_a_checkpoints_t5_file_and_a_missing_one_fails_the_job_by_name(alice, flux, tiny_flux, settings,
                                                                                       tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    texts = tmp_path / "text_encoders"
    shutil.copytree(tiny_flux["flux-dev"]["text_encoders"], texts)
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v
               for k, v in load_file(texts / "t5xxl_fp16.safetensors").items()}, texts / "t5xxl_fp8_e4m3fn.safetensors")
    settings.SDWEB = {**settings.SDWEB, "TEXT_ENCODERS_DIR": texts}
    checkpoint = flux["flux-dev"]
    assert dict(checkpoint.model_ref().parts)["text_encoder_2"].endswith("t5xxl_fp16.safetensors")  # fp16 first
    checkpoint.t5_file = "t5xxl_fp8_e4m3fn.safetensors"
    checkpoint.save()
    assert dict(checkpoint.model_ref().parts)["text_encoder_2"] == str(texts / "t5xxl_fp8_e4m3fn.safetensors")
    params = {"prompt": "a red house", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 2,
              "guidance_scale": 7, "scheduler": "Euler", "seed": 3, "num_images": 1}
    run(job_submit(user=alice, params=params))
    checkpoint.t5_file = "t5xxl_gone.safetensors"
    checkpoint.save()
    job = job_submit(user=alice, params=params)
    job_run(job_claim())
    job.refresh_from_db()
    assert job.status == Job.FAILED and "T5-XXL text encoder chosen for this FLUX file, t5xxl_gone.safetensors, is " \
                                         "missing" in job.error


@pytest.mark.django_db(transaction=True)
def test_the_a1111_dialect_takes_a_flux_controlnet_unit_as_webuiapi_sends_it(alice, flux, worker, tmp_path):
    """A FLUX.1 ControlNet downloaded as InstantX ships it (a diffusers folder), found by its folder;
    the unit in the ControlNet extension's shape; a control mode FLUX.1 doesn't have is refused by name."""
    from rest_framework.test import APIClient

    from generation.engine.testflux import make_tiny_flux_controlnet
    from generation.library.addons import addon_register
    from tests.generation.test_addons import unit_as_webuiapi_sends_it

    net = addon_register(kind="controlnet", name="flux-canny", source=str(make_tiny_flux_controlnet(tmp_path)["folder"]))
    assert net.get_family_display() == "FLUX.1"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Basic " + base64.b64encode(b"alice:alice-password-1").decode())
    payload = {"prompt": "a red house", "sampler_name": "Euler", "steps": 2, "width": 256, "height": 256,
               "override_settings": {"sd_model_checkpoint": flux["flux-dev"].title},
               "alwayson_scripts": {"ControlNet": {"args": [unit_as_webuiapi_sends_it(model=net.title)]}}}
    response = client.post("/sdapi/v1/txt2img", payload, format="json")
    assert response.status_code == 200, response.data
    info = parse_parameters(json.loads(response.data["info"])["infotexts"][0])
    assert info["ControlNet 0"].startswith(f"Module: canny, Model: {net.title}") and info["model"] == "flux-dev"
    refused = client.post("/sdapi/v1/txt2img", {**payload, "alwayson_scripts": {"ControlNet": {"args": [
        unit_as_webuiapi_sends_it(model=net.title, control_mode="My prompt is more important")]}}}, format="json")
    assert refused.status_code == 400 and "ontrol_mode must be 0 (Balanced) for FLUX.1" in str(refused.data)
