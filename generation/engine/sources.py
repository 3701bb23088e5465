"""Where a model's files are, what it is called and its hash: no torch, so the web side can use it."""

import json
import re
from pathlib import Path

from .families import file_sha256
from .request import JobError

PICKLE_SUFFIXES = {".ckpt", ".bin", ".pt", ".pth", ".pkl"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# Only what a diffusers pipeline needs: never pickles, fp16 twins or single-file checkpoints.
_HUB_PATTERNS = ["model_index.json", "*/*.json", "*/*.txt", "*/*.model", "*/*.safetensors"]
_HUB_IGNORE = ["*.fp16.*", "*non_ema*", "*.ckpt", "*.bin", "safety_checker/*"]


def resolve_source(source: str) -> Path:
    """Where `source` is: a .safetensors (or FLUX.1 .gguf) file, a diffusers folder on disk, or a hub id (downloaded);
    JobError names it without the folders around it."""
    source = str(source).strip()
    path = Path(source).expanduser()
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise JobError(
            f"model {path.name!r} is a pickle checkpoint ({path.suffix}); sdweb never loads those because "
            "unpickling can run arbitrary code. Convert it to a diffusers folder with safetensors weights."
        )
    if path.suffix.lower() in (".safetensors", ".gguf"):
        if not path.is_file():
            raise JobError(f"model file {path.name!r} does not exist")
        return path
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise JobError(f"model folder {path.name!r} has no model_index.json: it is not a diffusers pipeline folder")
        return path
    if path.exists() or not _HUB_ID.match(source):
        raise JobError(f"unknown model {path.name!r}: give a diffusers folder on disk or a Hugging Face id like org/name")
    return _download(source)


def _download(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download

    try:
        # Shows a progress bar; a second call finds everything in the normal HF cache.
        return Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, ignore_patterns=_HUB_IGNORE))
    except Exception as error:
        raise ValueError(
            f"model {repo_id!r} is not in the local Hugging Face cache and could not be downloaded "
            f"({type(error).__name__}). On a machine without internet, copy the model's diffusers folder "
            "onto this machine and use that folder's path as the model."
        ) from error


def model_hash(folder: Path) -> str:
    """First 10 hex digits of the SHA-256 of the single file, or of a diffusers folder's UNet
    weights, as A1111 shows a hash."""
    if folder.is_file():
        return file_sha256(folder)[:10]
    weights = denoiser_weights(folder)
    if weights is None:
        raise ValueError(f"model folder {folder.name!r} has no UNet or transformer weights (unet/*.safetensors)")
    return file_sha256(weights)[:10]


def denoiser_weights(folder: Path) -> Path | None:
    """The (first) weights file of a diffusers folder's UNet, or of its transformer (FLUX)."""
    return next(iter(sorted((folder / "unet").glob("*.safetensors")) or sorted(
        (folder / "transformer").glob("*.safetensors"))), None)


def model_name(folder: Path, source: str) -> str:
    if folder.is_file():
        return folder.stem
    info = folder / "sdweb.json"
    if info.is_file():
        return json.loads(info.read_text())["name"]
    return source.rstrip("/").split("/")[-1] if _HUB_ID.match(source) else folder.name
