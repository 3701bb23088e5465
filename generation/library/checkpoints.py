"""Registering checkpoints: single .safetensors files (told apart by their tensor names, hashed
once), diffusers folders and Hugging Face ids; and the models folder an operator drops files into."""

import json
import subprocess
import sys
from pathlib import Path

from django.conf import settings
from django.db import transaction

from generation.accounts.models import StaffEvent
from generation.accounts.staff import staff_action
from generation.engine.families import FAMILIES, file_family, file_sha256, read_header, vae_layout
from generation.engine.sd3 import folder_sd3_family
from generation.engine.sources import denoiser_weights, resolve_source
from generation.engine.testmodel import TEST_MODEL_NAME
from generation.library.addons import FOLDERS, printable
from generation.library.models import Checkpoint, Vae


def checkpoint_register(*, name: str, source: str, family: str = "", config: str = "", make_default: bool = False,
                        is_test_model: bool = False, progress=None) -> Checkpoint:
    """Register (or update) a checkpoint; ValueError names what is wrong with the file. A hub id
    is downloaded now. A file is hashed unless its size and mtime are what was hashed before;
    `progress(n)` is told each hashed block's size."""
    if not name or not printable(name):
        raise ValueError(f"name {name!r}: use visible characters (no control or bidi characters)")
    path = resolve_source(source)
    if path.is_file():
        found = file_family(path)
        family = _chosen_family(found, family)
        side = FAMILIES[family].side
    else:
        family, side = _folder_family(path, family)
    if config and not (Path(config) / "model_index.json").is_file():
        raise ValueError(f"config {Path(config).name!r} is not a diffusers config folder (no model_index.json)")
    hashed = path if path.is_file() else denoiser_weights(path)
    if hashed is None:
        raise ValueError(f"model folder {path.name!r} has no UNet or transformer weights (unet/*.safetensors)")
    stat, sha256 = _hashed_once(Checkpoint, name, source, hashed, progress)
    with transaction.atomic():
        checkpoint, _ = Checkpoint.objects.update_or_create(name=name, defaults=dict(
            source=str(source), family=family, config=str(config), default_width=side, default_height=side,
            default_steps=FAMILIES[family].steps if family in FAMILIES else 20,
            enabled=True, is_test_model=is_test_model, sha256=sha256, file_size=stat.st_size,
            file_mtime=stat.st_mtime))
        if make_default and checkpoint.role != "txt2img":
            raise ValueError(f"{checkpoint.name} is {FAMILIES[family].label}: it can't be the default checkpoint")
        if checkpoint.role == "txt2img" and (make_default or not Checkpoint.objects.filter(is_default=True).exists()):
            Checkpoint.objects.filter(is_default=True).exclude(pk=checkpoint.pk).update(is_default=False)
            Checkpoint.objects.filter(pk=checkpoint.pk).update(is_default=True)
    return Checkpoint.objects.get(pk=checkpoint.pk)


def vae_register(*, name: str, source: str, progress=None) -> Vae:
    """Register (or update) a VAE file, LDM or diffusers layout; ValueError says what else it is."""
    if not name or not printable(name):
        raise ValueError(f"name {name!r}: use visible characters (no control or bidi characters)")
    path = resolve_source(source)
    if not path.is_file():
        raise ValueError("a VAE is one .safetensors file")
    header = read_header(path)
    vae_layout(header)
    stat, sha256 = _hashed_once(Vae, name, source, path, progress)
    channels = (header.get("encoder.conv_out.weight") or {"shape": [8]})["shape"][0] // 2  # a mean and a variance each
    vae, _ = Vae.objects.update_or_create(name=name, defaults=dict(
        source=str(source), sha256=sha256, file_size=stat.st_size, file_mtime=stat.st_mtime, enabled=True,
        latent_channels=channels))
    return vae


def _hashed_once(model, name: str, source: str, path: Path, progress):
    """(stat, sha256): the stored hash while the file's size and mtime are what was hashed."""
    stat = path.stat()
    known = model.objects.filter(name=name, source=str(source), file_size=stat.st_size,
                                 file_mtime=stat.st_mtime).exclude(sha256="").first()
    return stat, known.sha256 if known else file_sha256(path, progress)


def _chosen_family(found: str, family: str) -> str:
    """The operator may only say what the tensor names can't tell: SD 2.x epsilon or v-prediction, SD
    3.5 Large or Large Turbo."""
    if not family or family == found or {family, found} in ({"sd2", "sd2-v"}, {"sd35-large", "sd35-large-turbo"}):
        return family or found
    raise ValueError(f"this file is {FAMILIES[found].label} ({found}), not {family}")


def _folder_family(folder: Path, family: str) -> tuple[str, int]:
    if not (folder / "model_index.json").is_file():
        raise ValueError(f"model folder {folder.name!r} is not a diffusers pipeline folder (no model_index.json)")
    index = json.loads((folder / "model_index.json").read_text())
    if (kind := index.get("_class_name")) == "FluxPipeline":
        if not (folder / "transformer" / "config.json").is_file():
            raise ValueError(f"model folder {folder.name!r} holds a FluxPipeline without its transformer/config.json")
        guided = json.loads((folder / "transformer" / "config.json").read_text()).get("guidance_embeds")
        return "flux-dev" if guided else "flux-schnell", 1024
    if kind == "StableDiffusion3Pipeline":
        return folder_sd3_family(folder), 1024
    if kind == "ZImagePipeline":
        return "zimage-turbo", 1024
    if kind not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise ValueError(f"model folder {folder.name!r} holds a {kind}: this studio runs SD 1.x, SD 2.x, SDXL, SD 3.5, "
                         "FLUX.1 and Z-Image pipelines")
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    found = "sdxl" if index.get("_class_name") == "StableDiffusionXLPipeline" else family or "sd1"
    return found, int(unet_config.get("sample_size", 64)) * 8


def checkpoints_scan(*, staff=None, progress_for=None) -> tuple[list, dict[str, str]]:
    """Register every .safetensors in the models folder, checkpoints named by their file name
    without the extension and VAEs by their file name, hashing only new or changed files.
    Returns (the checkpoints and VAEs, {file name: why it was not registered}); a scan by `staff`
    is a staff action."""
    found, skipped = [], {}
    root = Path(settings.SDWEB["MODELS_DIR"])
    addon_folders = [Path(settings.SDWEB[s]).resolve() for s in (*FOLDERS.values(), "TEXT_ENCODERS_DIR")]
    for path in sorted([*root.rglob("*.safetensors"), *root.rglob("*.gguf")]):
        inside = path.relative_to(root).parents
        if any(part.startswith(".") for part in path.relative_to(root).parts) or any(
                (root / folder / "model_index.json").is_file() for folder in inside) or any(
                path.resolve().is_relative_to(folder) for folder in addon_folders):
            continue  # hidden, a component of a diffusers folder, or an add-on
        progress = progress_for(path) if progress_for else None
        if _is_vae(path):
            if Vae.objects.filter(name=path.name[:100]).exclude(source=str(path)).exists():
                skipped[str(path.relative_to(root))] = f"a VAE called {path.name[:100]!r} already exists"
            else:
                found.append(vae_register(name=path.name[:100], source=str(path), progress=progress))
            continue
        existing = Checkpoint.objects.filter(source=str(path)).first()
        if existing is None and Checkpoint.objects.filter(name=path.stem[:100]).exists():
            skipped[str(path.relative_to(root))] = f"a checkpoint called {path.stem[:100]!r} already exists"
            continue
        try:
            found.append(checkpoint_register(
                name=existing.name if existing else path.stem[:100], source=str(path),
                family=existing.family if existing else "", config=existing.config if existing else "",
                progress=progress))
        except ValueError as error:
            skipped[str(path.relative_to(root))] = str(error)
    if staff is not None:
        staff_action(staff=staff, event=StaffEvent.SCAN_MODELS, target=root.name,
                     details=json.dumps({"registered": [c.name for c in found], "skipped": skipped}))
    return found, skipped


def _is_vae(path: Path) -> bool:
    try:
        vae_layout(read_header(path))
    except ValueError:
        return False
    return True


def checkpoint_ensure_test_model() -> Checkpoint:
    """Build the built-in test model if it is missing and register it."""
    folder = settings.SDWEB["MODELS_DIR"] / TEST_MODEL_NAME
    if not (folder / "model_index.json").is_file():
        # Built in a process of its own: a web process (manage.py up's) never loads torch. A plain
        # interpreter, not multiprocessing's spawn, which would run the caller's script again.
        subprocess.run([sys.executable, "-c", "import sys; from generation.engine.testmodel import make_test_model; "
                        "make_test_model(sys.argv[1])", str(folder)], check=True, cwd=settings.BASE_DIR)
    return checkpoint_register(name=TEST_MODEL_NAME, source=str(folder), is_test_model=True)
