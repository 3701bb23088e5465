"""The clients people already use, unchanged and with their default arguments, against a real
`manage.py up` process: AUTOMATIC1111's `webuiapi` and the OpenAI SDK."""

import base64
import io

import pytest
from PIL import Image as PILImage

from generation.engine import read_watermark
from tests.support import Studio


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    import torch

    from tests.support import esrgan_state

    studio = Studio(tmp_path_factory.mktemp("clients"))
    (studio.var_dir / "models" / "ESRGAN").mkdir(parents=True)
    torch.save(esrgan_state(), studio.var_dir / "models" / "ESRGAN" / "4x-Tiny.pth")  # copied in before the start
    studio.start()
    studio.key = studio.manage(
        "from django.contrib.auth.models import User; from sdweb.shared.api_keys import api_key_create; "
        "user = User.objects.create_user('alice', password='alice-password-1'); "
        "print(api_key_create(user=user, name='clients')[1])")
    yield studio
    studio.stop()


def test_webuiapi_with_its_default_arguments_makes_watermarked_images(studio):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    result = api.txt2img(prompt="a lighthouse at dusk", width=256, height=256, steps=4, batch_size=2)
    assert len(result.images) == 2 and result.images[0].size == (256, 256)
    assert result.info["sampler_name"] == "Euler a" and "eta" in result.info["ignored"]  # webuiapi sends eta 1.0
    assert read_watermark(result.images[0]) is not None


def test_the_openai_sdk_gets_images_and_its_errors_in_its_own_shapes(studio):
    import openai

    client = openai.OpenAI(api_key=studio.key, base_url=f"{studio.base}/v1", max_retries=0)
    result = client.images.generate(prompt="a storm at sea", size="256x256", n=1)
    png = PILImage.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert png.size == (256, 256) and read_watermark(png) is not None
    with pytest.raises(openai.BadRequestError) as refused:
        client.images.generate(prompt="a storm at sea", size="100x100")
    assert refused.value.body["param"] == "size"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(api_key="sdw_wrong", base_url=f"{studio.base}/v1", max_retries=0).images.generate(prompt="x")


def test_webuiapi_picks_an_sdxl_file_by_its_title_and_sees_a1111s_hashes(studio, tiny_families):
    import hashlib
    import shutil

    import webuiapi

    copied = studio.var_dir / "models" / "ponyXL.safetensors"
    shutil.copy(tiny_families["sdxl"]["file"], copied)
    # The tiny file needs its tiny configs; a real one uses the configs shipped for its family.
    studio.manage(f"from django.core.management import call_command; call_command('add_model', 'ponyXL', "
                  f"'{copied}', '--config', '{tiny_families['sdxl']['config']}')")
    short = hashlib.sha256(copied.read_bytes()).hexdigest()[:10]
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    assert f"ponyXL [{short}]" in api.util_get_model_names()
    api.util_set_model("ponyxl")  # webuiapi's own closest-name match, then POST options
    assert api.util_get_current_model() == f"ponyXL [{short}]"
    result = api.txt2img(prompt="a lighthouse", width=256, height=256, steps=3,
                         override_settings={"CLIP_stop_at_last_layers": 2})
    assert (result.info["sd_model_name"], result.info["sd_model_hash"], result.info["clip_skip"]) == ("ponyXL", short, 2)
    assert f"Model hash: {short}, Model: ponyXL, Clip skip: 2" in result.info["infotexts"][0]


def test_webuiapi_with_its_defaults_runs_a_flux_transformer_file_laid_out_as_comfyui_has_it(studio, tiny_flux):
    import shutil

    import webuiapi

    files, models = tiny_flux["flux-dev"], studio.var_dir / "models"
    shutil.copy(files["transformer"], models / "flux1-dev.safetensors")
    shutil.copytree(files["text_encoders"], models / "text_encoders")
    (models / "VAE").mkdir(exist_ok=True)
    shutil.copy(files["vae"], models / "VAE" / "ae.safetensors")
    studio.manage(f"from django.core.management import call_command; call_command('add_model', 'flux1-dev', "
                  f"'{models / 'flux1-dev.safetensors'}', '--config', '{files['config']}')")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    api.util_set_model("flux1-dev")
    result = api.txt2img(prompt="a red house", width=256, height=256, steps=3)  # Euler a, CFG 7: webuiapi's own
    infotext = result.info["infotexts"][0]
    assert "Sampler: Euler a, " in infotext and "CFG scale: 1, " in infotext and "Distilled CFG Scale: 3.5" in infotext
    assert result.info["sd_model_name"] == "flux1-dev" and read_watermark(result.images[0]) is not None
    api.util_set_model("sdweb-test-tiny")


def test_webuiapi_with_its_defaults_runs_a_z_image_turbo_file_laid_out_as_comfyui_has_it(studio, tiny_zimage):
    import shutil

    import webuiapi

    models = studio.var_dir / "models"
    shutil.copy(tiny_zimage["transformer"], models / "z_image_turbo_bf16.safetensors")
    shutil.copytree(tiny_zimage["text_encoders"], models / "text_encoders", dirs_exist_ok=True)  # qwen_3_4b, its tokenizer
    (models / "VAE").mkdir(exist_ok=True)
    shutil.copy(tiny_zimage["vae"], models / "VAE" / "ae.safetensors")  # FLUX.1's VAE
    studio.manage(f"from django.core.management import call_command; call_command('add_model', 'z-image-turbo', "
                  f"'{models / 'z_image_turbo_bf16.safetensors'}', '--config', '{tiny_zimage['config']}')")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    api.util_set_model("z-image-turbo")
    result = api.txt2img(prompt="a red house", width=256, height=256, steps=2, cfg_scale=1)
    infotext = result.info["infotexts"][0]
    assert "Sampler: Euler a, " in infotext and "CFG scale: 1, " in infotext
    assert result.info["sd_model_name"] == "z-image-turbo" and read_watermark(result.images[0]) is not None
    api.util_set_model("sdweb-test-tiny")


def test_webuiapi_with_its_defaults_runs_stabilitys_sd35_large_turbo_file(studio, tiny_sd3):
    import webuiapi

    from tests.support import install_sd35

    studio.manage(install_sd35(studio.var_dir / "models", tiny_sd3["sd35-large"], "sd3.5-turbo",
                               "sd3.5_large_turbo.safetensors"))
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    api.util_set_model("sd3.5-turbo")
    result = api.txt2img(prompt="a red house", negative_prompt="fog", width=256, height=256, steps=2)
    infotext = result.info["infotexts"][0]
    assert "Sampler: Euler a, " in infotext and "CFG scale: 7, " in infotext and "Negative prompt: fog" in infotext
    assert result.info["sd_model_name"] == "sd3.5-turbo" and read_watermark(result.images[0]) is not None
    api.util_set_model("sdweb-test-tiny")


def test_a_student_sees_and_uses_only_the_roles_checkpoints_in_webuiapi_and_the_openai_sdk(studio, tiny_families):
    """A role "students" may use the test model alone: an SDXL file beside it is neither listed
    nor usable through either client, refused naming the limit."""
    import shutil

    import openai
    import webuiapi

    copied = studio.var_dir / "models" / "bigXL.safetensors"
    shutil.copy(tiny_families["sdxl"]["file"], copied)
    key = studio.manage(
        f"from django.core.management import call_command; call_command('add_model', 'bigXL', '{copied}', "
        f"'--config', '{tiny_families['sdxl']['config']}'); "
        "from django.contrib.auth.models import Group, User; from generation.accounts.models import Role; "
        "from generation.library.models import Checkpoint; from sdweb.shared.api_keys import api_key_create; "
        "role = Role.objects.create(group=Group.objects.create(name='students'), max_side=512); "
        "role.checkpoints.add(Checkpoint.objects.get(name='sdweb-test-tiny')); "
        "user = User.objects.create_user('stu', password='stu-password-1'); user.groups.add(role.group); "
        "print(api_key_create(user=user, name='sdk')[1])")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("stu", "stu-password-1")
    assert [name.split(" [")[0] for name in api.util_get_model_names()] == ["sdweb-test-tiny"]
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt="a castle", width=256, height=256, steps=2, override_settings={"sd_model_checkpoint": "bigXL"})
    assert refused.value.args[0] == 403 and "bigXL is not among the checkpoints your role (students) may use" in (
        refused.value.args[1])
    with pytest.raises(RuntimeError) as refused:
        api.txt2img(prompt="a castle", width=768, height=768, steps=2)
    assert refused.value.args[0] == 403 and "at most 512 for your role (students)" in refused.value.args[1]
    client = openai.OpenAI(api_key=key, base_url=f"{studio.base}/v1", max_retries=0)
    assert [model.id for model in client.models.list()] == ["sdweb-test-tiny"]
    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.images.generate(model="bigXL", prompt="a castle", size="256x256")
    assert denied.value.body["param"] == "model" and "your role (students)" in denied.value.body["message"]


def test_webuiapi_img2img_with_and_without_a_mask_and_hires_fix_with_its_defaults(studio):
    import webuiapi

    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    start = PILImage.effect_noise((256, 256), 60).convert("RGB")
    mask = PILImage.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    plain = api.img2img(images=[start], prompt="a red door", width=256, height=256, steps=4)
    painted = api.img2img(images=[start], mask_image=mask, prompt="a red door", width=256, height=256, steps=4)
    assert plain.images[0].size == painted.images[0].size == (256, 256)
    assert "Mask blur: 4" in painted.info["infotexts"][0] and "Mask blur" not in plain.info["infotexts"][0]
    assert read_watermark(painted.images[0]) is not None
    hires = api.txt2img(prompt="a lighthouse", width=256, height=256, steps=4, enable_hr=True, hr_scale=1.5)
    assert hires.images[0].size == (384, 384) and "Hires upscaler: Latent" in hires.info["infotexts"][0]
    assert [u["name"] for u in api.get_upscalers()][:2] == ["None", "Lanczos"]
    assert api.extra_single_image(image=start, upscaling_resize=2).image.size == (512, 512)


def test_the_openai_sdk_edits_an_image_under_a_mask(studio):
    import openai

    client = openai.OpenAI(api_key=studio.key, base_url=f"{studio.base}/v1", max_retries=0)
    start, mask = io.BytesIO(), io.BytesIO()
    PILImage.effect_noise((256, 256), 60).convert("RGB").save(start, "PNG")
    transparent = PILImage.new("RGBA", (256, 256), (0, 0, 0, 255))
    transparent.paste((0, 0, 0, 0), (0, 0, 128, 128))
    transparent.save(mask, "PNG")
    result = client.images.edit(image=("start.png", start.getvalue(), "image/png"),
                                mask=("mask.png", mask.getvalue(), "image/png"), prompt="a window", n=1)
    png = PILImage.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert png.size == (256, 256) and read_watermark(png) is not None
    assert "Masked content: fill" in png.info["parameters"]


def test_webuiapi_uses_loras_embeddings_and_controlnet_units_as_it_sends_them(studio):
    import webuiapi

    studio.add_tiny_addons()
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    # An earlier test picked an SDXL model; these add-ons are SD 1.x.
    api.util_set_model(next(t for t in api.util_get_model_names() if t.startswith("sdweb-test-tiny [")), find_closest=False)
    assert [lora["name"] for lora in api.get_loras()] == ["tiny-style"]
    assert "tinyneg" in api.get_embeddings()["loaded"]
    models = api.controlnet_model_list()
    assert models == [next(m for m in models if m.startswith("tiny-canny ["))]
    assert "canny" in api.controlnet_module_list()
    square = PILImage.new("RGB", (256, 256), "white")
    square.paste((0, 0, 0), (64, 64, 192, 192))
    detected = api.controlnet_detect([square], module="canny")  # webuiapi's default thresholds: 64 and 64
    assert detected.images[0].convert("L").getextrema() == (0, 255)  # webuiapi decodes the maps itself
    result = api.txt2img(prompt="a lighthouse <lora:tiny-style:0.6>", negative_prompt="tinyneg", width=256, height=256,
                         steps=3, controlnet_units=[webuiapi.ControlNetUnit(image=square, module="canny", model=models[0])])
    infotext = result.info["infotexts"][0]
    assert 'Lora hashes: "tiny-style: ' in infotext and 'TI hashes: "tinyneg: ' in infotext
    assert f'ControlNet 0: "Module: canny, Model: {models[0]}, Weight: 1, Resize Mode: Resize and Fill' in infotext
    assert read_watermark(result.images[0]) is not None
    # webuiapi keeps the units in its mutable default and sends them again unless the server lists
    # the extension's "controlnet m2m" script (then it sends empty args): the next job has none.
    plain = api.txt2img(prompt="a lighthouse", width=256, height=256, steps=2)
    assert "ControlNet" not in plain.info["infotexts"][0]


def test_webuiapi_with_styles_prompt_editing_a_subseed_an_esrgan_upscaler_and_an_xyz_plot(studio):
    import webuiapi

    from generation.engine.metadata import parse_parameters

    studio.manage("from django.contrib.auth.models import User; from generation.jobs.styles import style_save; "
                  "print(style_save(user=User.objects.get(username='alice'), name='detailed', "
                  "prompt='highly detailed', negative_prompt='blurry'))")
    api = webuiapi.WebUIApi(host="127.0.0.1", port=studio.port)
    api.set_auth("alice", "alice-password-1")
    assert "4x-Tiny" in [u["name"] for u in api.get_upscalers()]  # registered when the studio started
    result = api.txt2img(prompt="a [fox:wolf:0.5]", styles=["detailed"], seed=11, subseed=5, subseed_strength=0.3,
                         width=256, height=256, steps=4, enable_hr=True, hr_scale=1.5, hr_upscaler="4x-Tiny",
                         hr_second_pass_steps=2)
    said = parse_parameters(result.info["infotexts"][0])
    assert result.images[0].size == (384, 384)
    assert (said["prompt"], said["negative_prompt"], said["seed"], said["subseed"], said["subseed_strength"]) == (
        "a [fox:wolf:0.5], highly detailed", "blurry", 11, 5, 0.3)
    assert (said["Hires upscaler"], said["Hires upscale"]) == ("4x-Tiny", "1.5")
    plot = api.txt2img(prompt="a lighthouse", width=256, height=256, steps=2, seed=3, script_name="x/y/z plot",
                       script_args=[4, "2, 3", [], 0, "", [], 0, "", [], True, True, False, False, 0, False, False])
    assert len(plot.images) == 3 and plot.images[0].width == 512  # the grid, then its two cells
    assert [parse_parameters(text)["steps"] for text in plot.info["infotexts"][1:]] == [2, 3]
