import pytest
from django.core.management import CommandError, call_command

from generation.library.models import Checkpoint


def test_add_model_registers_a_local_folder_with_its_native_size(db, test_model_folder, capsys):
    call_command("add_model", "tiny", test_model_folder, "--default")
    checkpoint = Checkpoint.objects.get(name="tiny")
    assert (checkpoint.source, checkpoint.is_default, checkpoint.default_width) == (test_model_folder, True, 256)
    assert "Registered tiny" in capsys.readouterr().out


def test_a_diffusers_folder_of_a_family_not_run_here_is_refused_naming_its_pipeline(db, tmp_path):
    folder = tmp_path / "Qwen-Image"
    (folder / "transformer").mkdir(parents=True)
    (folder / "model_index.json").write_text('{"_class_name": "QwenImagePipeline"}')
    with pytest.raises(CommandError, match="holds a QwenImagePipeline: this studio runs SD 1.x, SD 2.x, SDXL, SD 3.5, "
                                           "FLUX.1 and Z-Image"):
        call_command("add_model", "qwen", str(folder))
    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusion3Pipeline"}')
    with pytest.raises(CommandError, match="StableDiffusion3Pipeline without its transformer/config.json"):
        call_command("add_model", "sd35", str(folder))
    (folder / "model_index.json").write_text('{"_class_name": "FluxPipeline"}')
    with pytest.raises(CommandError, match="FluxPipeline without its transformer/config.json"):
        call_command("add_model", "flux", str(folder))
    assert not Checkpoint.objects.exists()


def test_only_one_checkpoint_is_the_default(db, test_model_folder):
    call_command("add_model", "first", test_model_folder)
    call_command("add_model", "second", test_model_folder, "--default")
    assert list(Checkpoint.objects.filter(is_default=True).values_list("name", flat=True)) == ["second"]


@pytest.mark.parametrize("source, message", [
    ("/models/v1-5-pruned.ckpt", "pickle"),
    ("/no/such/folder", "unknown model"),
])
def test_add_model_refuses_what_it_cannot_use(db, source, message):
    with pytest.raises(CommandError, match=message):
        call_command("add_model", "bad", source)
    assert not Checkpoint.objects.exists()


def test_an_uncached_hub_model_offline_is_a_clear_error(db, monkeypatch, tmp_path):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CommandError, match="not in the local Hugging Face cache"):
        call_command("add_model", "sd15", "someorg/some-model")


def register(name, files, **fields):
    from generation.library.checkpoints import checkpoint_register

    return checkpoint_register(name=name, source=str(files["file"]), config=str(files["config"]), **fields)


def test_add_model_registers_a_single_file_with_its_family_size_and_a1111_hash(db, tiny_families, capsys):
    import hashlib

    files = tiny_families["sdxl"]
    call_command("add_model", "juggernaut", str(files["file"]), "--config", str(files["config"]), "--default")
    checkpoint = Checkpoint.objects.get(name="juggernaut")
    sha256 = hashlib.sha256(files["file"].read_bytes()).hexdigest()
    assert (checkpoint.family, checkpoint.default_width, checkpoint.is_default) == ("sdxl", 1024, True)
    assert (checkpoint.sha256, checkpoint.title) == (sha256, f"juggernaut [{sha256[:10]}]")
    out, err = capsys.readouterr()
    assert f"Registered juggernaut [{sha256[:10]}]: SDXL, the default" in out and "hashing sdxl.safetensors" in err


def test_a_file_is_hashed_once_and_again_only_when_it_changes(db, tiny_families, tmp_path, monkeypatch):
    import shutil

    from generation.library import checkpoints

    hashed = []
    real = checkpoints.file_sha256
    monkeypatch.setattr(checkpoints, "file_sha256", lambda path, progress=None: hashed.append(path) or real(path))
    file = tmp_path / "model.safetensors"
    shutil.copy(tiny_families["sd1"]["file"], file)
    for _ in range(2):
        register("model", {"file": file, "config": tiny_families["sd1"]["config"]})
    assert len(hashed) == 1
    file.touch()
    register("model", {"file": file, "config": tiny_families["sd1"]["config"]})
    assert len(hashed) == 2


@pytest.mark.parametrize("family, message", [
    ("sdxl-refiner", "SDXL refiner: it can't be the default"), ("sd1-inpaint", "inpainting: it can't be the default"),
])
def test_a_refiner_or_inpainting_model_is_registered_but_never_the_default(db, tiny_families, family, message):
    with pytest.raises(ValueError, match=message):
        register("helper", tiny_families[family], make_default=True)
    register("helper", tiny_families[family])
    assert Checkpoint.objects.get(name="helper").is_default is False


def test_the_family_told_from_the_file_wins_except_for_sd2_v_prediction(db, tiny_families):
    with pytest.raises(ValueError, match=r"SD 1.x \(sd1\), not sdxl"):
        register("wrong", tiny_families["sd1"], family="sdxl")
    assert register("sd21", tiny_families["sd2"], family="sd2-v").family == "sd2-v"


def test_add_model_refuses_a_lora_naming_what_it_is(db, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file({"lora_unet_mid_block_attentions_0_proj_in.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "x.safetensors")
    with pytest.raises(CommandError, match="looks like a LoRA"):
        call_command("add_model", "x", str(tmp_path / "x.safetensors"))
    assert not Checkpoint.objects.exists()


def test_scan_models_registers_the_models_folder_and_says_what_it_skipped(db, tiny_families, settings, tmp_path,
                                                                           test_model_folder, capsys):
    import shutil

    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": tmp_path}
    shutil.copy(tiny_families["sd1"]["file"], tmp_path / "dreamshaper.safetensors")
    (tmp_path / "sdxl").mkdir()
    shutil.copy(tiny_families["sdxl"]["file"], tmp_path / "sdxl" / "pony.safetensors")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    shutil.copytree(test_model_folder, tmp_path / "a-diffusers-folder")  # its component files are no checkpoints
    call_command("scan_models")
    assert {c.name: c.family for c in Checkpoint.objects.all()} == {"dreamshaper": "sd1", "pony": "sdxl"}
    out = capsys.readouterr().out
    assert "skipped broken.safetensors: broken.safetensors is not a safetensors file" in out
    assert "2 checkpoint(s) in" in out and str(tmp_path) not in out


def test_scan_models_never_repoints_a_checkpoint_of_the_same_name(db, tiny_families, settings, tmp_path, checkpoint):
    import shutil

    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": tmp_path}
    shutil.copy(tiny_families["sd1"]["file"], tmp_path / "sdweb-test-tiny.safetensors")
    from generation.library.checkpoints import checkpoints_scan

    found, skipped = checkpoints_scan()
    assert found == [] and "already exists" in skipped["sdweb-test-tiny.safetensors"]
    assert Checkpoint.objects.get(name="sdweb-test-tiny").source == checkpoint.source


def test_staff_with_the_permission_scan_the_models_folder_from_the_admin(db, client, admin, carol, tiny_families,
                                                                         settings, tmp_path):
    import shutil

    from django.contrib.auth.models import Permission

    from generation.accounts.models import StaffAction

    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": tmp_path}
    shutil.copy(tiny_families["sd1"]["file"], tmp_path / "anything-v5.safetensors")
    carol.is_staff = True
    carol.save()
    client.force_login(carol)
    assert client.post("/admin/generation/checkpoint/scan/").status_code == 403
    carol.user_permissions.add(Permission.objects.get(codename="add_checkpoint"),
                               Permission.objects.get(codename="view_checkpoint"))
    assert "Scan the models folder" in client.get("/admin/generation/checkpoint/").content.decode()
    response = client.post("/admin/generation/checkpoint/scan/", follow=True)
    assert Checkpoint.objects.get(name="anything-v5").family == "sd1"
    assert "1 checkpoint(s) in the models folder: anything-v5 [" in response.content.decode()
    action = StaffAction.objects.get(action="scan models")
    assert action.staff == carol and "anything-v5" in action.details


def test_scan_models_registers_a_vae_file_as_a_vae(db, settings, tmp_path):
    from generation.engine.testmodel import make_tiny_vae
    from generation.library.models import Vae

    settings.SDWEB = {**settings.SDWEB, "MODELS_DIR": tmp_path}
    (tmp_path / "VAE").mkdir()
    make_tiny_vae("sdxl", tmp_path / "VAE" / "sdxl_vae.safetensors")
    call_command("scan_models")
    assert Vae.objects.get().name == "sdxl_vae.safetensors" and not Checkpoint.objects.exists()


def test_upgrading_hashes_the_checkpoints_registered_before_hashes_were_stored(db, tiny_families, test_model_folder):
    import hashlib
    from importlib import import_module
    from pathlib import Path

    from django.apps import apps

    old = [Checkpoint.objects.create(name="folder", source=test_model_folder),
           Checkpoint.objects.create(name="file", source=str(tiny_families["sd1"]["file"])),
           Checkpoint.objects.create(name="hub", source="someorg/some-model")]
    import_module("generation.migrations.0004_single_file_checkpoints").hash_existing(apps, None)
    unet = Path(test_model_folder, "unet", "diffusion_pytorch_model.safetensors")
    assert [Checkpoint.objects.get(pk=c.pk).sha256 for c in old] == [
        hashlib.sha256(unet.read_bytes()).hexdigest(),
        hashlib.sha256(tiny_families["sd1"]["file"].read_bytes()).hexdigest(), ""]
