"""Device and precision, loading a pipeline, and the process-wide pipeline cache."""

import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .sources import model_hash, model_name, resolve_source


@dataclass
class LoadedModel:
    pipe: object  # diffusers.StableDiffusionPipeline
    name: str
    hash: str
    folder: Path
    device: torch.device
    dtype: torch.dtype
    size_bytes: int
    load_seconds: float


def pick_device(device: str | None = None) -> torch.device:
    """`device`, else CUDA when present, else the CPU."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """`dtype`, else float16 on CUDA and float32 on the CPU."""
    dtype = dtype or ("float16" if device.type == "cuda" else "float32")
    if isinstance(dtype, torch.dtype):
        return dtype
    allowed = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16,
               "bf16": torch.bfloat16, "float32": torch.float32, "fp32": torch.float32}
    if dtype not in allowed:
        raise ValueError(f"dtype must be one of float16, bfloat16, float32 (got {dtype!r})")
    return allowed[dtype]


def _load(source: str, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from diffusers import StableDiffusionPipeline

    started = time.perf_counter()
    folder = resolve_source(source)
    index = json.loads((folder / "model_index.json").read_text())
    if index.get("_class_name") != "StableDiffusionPipeline":
        raise ValueError(
            f"model {source!r} is a {index.get('_class_name')}; only Stable Diffusion 1.x and 2.x "
            "pipelines are supported yet"
        )
    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            folder, dtype=dtype, use_safetensors=True,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"model {source!r} could not be read: {error}") from error
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    size = sum(p.numel() * p.element_size() for m in (pipe.unet, pipe.vae, pipe.text_encoder) for p in m.parameters())
    return LoadedModel(
        pipe=pipe, name=model_name(folder, source), hash=model_hash(folder), folder=folder,
        device=device, dtype=dtype, size_bytes=size, load_seconds=time.perf_counter() - started,
    )


class PipelineCache:
    """Loaded pipelines stay resident, least recently used first out past the byte budget."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # two threads asking for one model load it once
        self.hits = self.misses = 0
        self.load_seconds = 0.0

    def get(self, source: str, device=None, dtype=None) -> LoadedModel:
        device = pick_device(device)
        dtype = pick_dtype(device, dtype)
        key = (str(source).strip(), str(device), str(dtype))
        with self._lock:
            if key in self._models:
                self.hits += 1
                self._models.move_to_end(key)
                return self._models[key]
            loaded = _load(key[0], device, dtype)
            self.misses += 1
            self.load_seconds += loaded.load_seconds
            self._models[key] = loaded
            while len(self._models) > 1 and sum(m.size_bytes for m in self._models.values()) > self.budget_bytes:
                self._models.popitem(last=False)
            return loaded

    def info(self) -> dict:
        return {
            "hits": self.hits, "misses": self.misses, "load_seconds": round(self.load_seconds, 3),
            "resident": [m.name for m in self._models.values()],
            "resident_bytes": sum(m.size_bytes for m in self._models.values()),
            "budget_bytes": self.budget_bytes,
        }

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


PIPELINES = PipelineCache(8 * 2**30)  # a worker sets its own budget before its first run


def load_pipeline(source: str, *, device=None, dtype=None) -> LoadedModel:
    """The pipeline for `source`, from the process-wide cache (loaded on first use)."""
    return PIPELINES.get(source, device, dtype)
