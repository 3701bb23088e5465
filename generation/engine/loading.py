"""Device and precision, loading a pipeline, and the process-wide pipeline cache."""

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

from .families import FAMILIES, family_config, file_family, read_header, vae_layout
from .flux import load_flux
from .parts import fit_memory
from .previews import fitted_latent_rgb
from .request import JobError, ModelRef, model_ref
from .sd3 import folder_sd3_family, load_sd3
from .sources import model_hash, model_name, resolve_source
from .tokenizer import clip_tokenizer
from .zimage import load_zimage


@dataclass
class LoadedModel:
    pipe: object  # a diffusers StableDiffusion(XL)Pipeline
    name: str
    hash: str
    family: str  # families.FAMILIES, or "sd" for an SD 1.x/2.x diffusers folder
    vae_config: str  # the folder whose vae/config.json describes its VAE
    device: torch.device
    dtype: torch.dtype
    size_bytes: int
    load_seconds: float
    latent_rgb: tuple | None = None  # fitted preview factors (previews.fitted_latent_rgb) where none are published
    parts: dict = dataclasses.field(default_factory=dict)  # FLUX.1, SD 3.5, Z-Image: {parts.part_key: module} it may share

    @property
    def xl(self) -> bool:
        return self.family.startswith("sdxl")

    @property
    def flux(self) -> bool:
        return self.family.startswith("flux")

    @property
    def sd3(self) -> bool:
        return self.family.startswith("sd35")

    @property
    def zimage(self) -> bool:
        return self.family.startswith("zimage")

    @property
    def group(self) -> str:
        """families.Family.group: "FLUX.1", "SD 3.5", "Z-Image", or "" for SD's UNets."""
        return FAMILIES[self.family].group if self.family in FAMILIES else ""

    @property
    def transformer(self) -> bool:
        return bool(self.group)


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


def plainly(error: Exception) -> str:
    """Why a file could not be loaded, for users: the engine's own words, else no library's."""
    return str(error) if isinstance(error, JobError) else "its weights don't fit its family's layout (staff see the details)"


def _load(ref: ModelRef, device: torch.device, dtype: torch.dtype, quantize: str = "", t5_device: str = "",
          shared: dict | None = None) -> LoadedModel:
    started = time.perf_counter()
    path = resolve_source(ref.source)
    name = ref.name or model_name(path, ref.source)
    parts = {}
    try:
        if path.is_file():
            pipe, family, parts = _load_single_file(path, ref, dtype, shared)
        else:
            pipe, family = _load_folder(path, dtype)
        vae_config = str(Path(ref.config).resolve() if ref.config else family_config(family)) if path.is_file() else str(path)
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise JobError(f"model {name!r} could not be loaded: {plainly(error)}") from error
    dtype = pipe.vae.dtype
    if dtype == torch.float16 and getattr(pipe.vae.config, "force_upcast", False):
        pipe.vae.to(torch.float32)  # SDXL's VAE overflows in float16: black images
    transformer = family in FAMILIES and FAMILIES[family].transformer
    if transformer:
        fit_memory(pipe, dtype, quantize)
    pipe.to(device)
    if transformer and t5_device:  # T5, or Z-Image's Qwen3: on the CPU between prompts ("offload") or for good
        getattr(pipe, FAMILIES[family].big_encoder).to("cpu")
    if device.type == "cuda" and hasattr(pipe, "unet"):  # convolutions run faster on NHWC tensors there
        for module in (pipe.unet, pipe.vae):
            module.to(memory_format=torch.channels_last)
    pipe.set_progress_bar_config(disable=True)
    own = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module) and m not in parts.values()]
    size = sum(module_bytes(m, device) for m in own)  # shared parts are counted once, by the cache
    return LoadedModel(
        pipe=pipe, name=name, hash=ref.hash or model_hash(path), family=family, vae_config=vae_config,
        device=device, dtype=dtype, size_bytes=size, load_seconds=time.perf_counter() - started,
        latent_rgb=fitted_latent_rgb(pipe.vae) if transformer else None, parts=parts,
    )


def module_bytes(module: torch.nn.Module, device: torch.device) -> int:
    """The bytes of `module`'s weights on `device`'s kind of memory (T5 kept on the CPU costs no GPU memory);
    a quantized weight's (torchao's int8: its int8 data and scales) as it is stored."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    def stored(tensor) -> int:
        if is_traceable_wrapper_subclass(tensor):
            return sum(stored(getattr(tensor, name)) for name in tensor.__tensor_flatten__()[0])
        return tensor.numel() * tensor.element_size()

    return sum(stored(p) for p in module.parameters() if p.device.type == device.type)


def _load_vae(ref: ModelRef, model: LoadedModel, dtype: torch.dtype) -> LoadedModel:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    started = time.perf_counter()
    path = resolve_source(ref.source)
    name = ref.name or path.name
    try:
        if not path.is_file():
            raise ValueError("a VAE is one .safetensors file")
        if vae_layout(read_header(path)) == "ldm":
            vae = AutoencoderKL.from_single_file(str(path), config=model.vae_config, subfolder="vae",
                                                 local_files_only=True, torch_dtype=dtype)
        else:
            vae = AutoencoderKL.from_config(AutoencoderKL.load_config(model.vae_config, subfolder="vae"))
            vae.load_state_dict(load_file(path))
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise JobError(f"VAE {name!r} could not be loaded: {plainly(error)}") from error
    vae.to(model.device, dtype).eval()
    return LoadedModel(pipe=vae, name=name, hash=ref.hash or model_hash(path), family="vae", vae_config="",
                       device=model.device, dtype=dtype, size_bytes=sum(p.numel() * p.element_size() for p in vae.parameters()),
                       load_seconds=time.perf_counter() - started)


def _load_folder(folder: Path, dtype: torch.dtype):
    import diffusers

    index = json.loads((folder / "model_index.json").read_text())
    kind = index.get("_class_name")
    if kind == "FluxPipeline":
        pipe = diffusers.FluxPipeline.from_pretrained(folder, dtype=_transformer_dtype(dtype), use_safetensors=True)
        return pipe, "flux-dev" if pipe.transformer.config.guidance_embeds else "flux-schnell"
    if kind in ("StableDiffusion3Pipeline", "ZImagePipeline"):
        family = folder_sd3_family(folder) if kind == "StableDiffusion3Pipeline" else "zimage-turbo"
        return getattr(diffusers, kind).from_pretrained(folder, dtype=_transformer_dtype(dtype), use_safetensors=True), family
    if kind not in ("StableDiffusionPipeline", "StableDiffusionXLPipeline"):
        raise JobError(f"it is a {kind}; only Stable Diffusion 1.x, 2.x, SDXL, SD 3.5, FLUX.1 and Z-Image pipelines are "
                       "supported")
    extra = ({"add_watermarker": False} if kind == "StableDiffusionXLPipeline"
             else {"safety_checker": None, "feature_extractor": None, "requires_safety_checker": False})
    pipe = getattr(diffusers, kind).from_pretrained(folder, dtype=dtype, use_safetensors=True, **extra)
    return pipe, "sdxl" if kind == "StableDiffusionXLPipeline" else "sd"


def _load_single_file(path: Path, ref: ModelRef, dtype: torch.dtype, shared: dict | None = None):
    """An LDM-layout .safetensors with the diffusers configs of its family, never the network:
    `config` must be an existing folder, or diffusers takes it as a hub id."""
    import diffusers

    family = ref.family or file_family(path)
    spec = FAMILIES[family]
    config = Path(ref.config).resolve() if ref.config else family_config(family)
    if not (config / "model_index.json").is_file():
        raise JobError(f"the config folder of {family} has no model_index.json")
    if spec.transformer:
        load = {"FLUX.1": load_flux, "SD 3.5": load_sd3, "Z-Image": load_zimage}[spec.group]
        pipe, parts = load(path, read_header(path), dict(ref.parts), config, _transformer_dtype(dtype), shared)
        return pipe, family, parts
    index = json.loads((config / "model_index.json").read_text())
    extra = {"add_watermarker": False} if spec.xl else {"safety_checker": None, "feature_extractor": None,
                                                         "requires_safety_checker": False}
    if (index.get("tokenizer") or [None])[0]:
        extra["tokenizer"] = clip_tokenizer("!" if family.startswith("sd2") else "<|endoftext|>")
    if (index.get("tokenizer_2") or [None])[0]:
        extra["tokenizer_2"] = clip_tokenizer("!")
    pipe = getattr(diffusers, spec.pipeline).from_single_file(
        str(path), config=str(config), local_files_only=True, torch_dtype=dtype, **extra)
    return pipe, family, {}


def _transformer_dtype(dtype: torch.dtype) -> torch.dtype:
    """FLUX, SD 3.5 and Z-Image run in bfloat16 where SD runs in float16 (T5's activations overflow it)."""
    return torch.bfloat16 if dtype == torch.float16 else dtype


class PipelineCache:
    """Loaded pipelines stay resident, least recently used first out past the byte budget."""

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._models: OrderedDict[tuple, LoadedModel] = OrderedDict()
        self._lock = threading.Lock()  # two threads asking for one model load it once
        self.hits = self.misses = 0
        self.load_seconds = 0.0
        self.quantize, self.t5_device = "none", ""  # parts.fit_memory, and where T5 (Qwen3) lives: "", "cpu", "offload"

    def get(self, model, device=None, dtype=None) -> LoadedModel:
        device = pick_device(device)
        dtype = pick_dtype(device, dtype)
        ref = model_ref(model)
        shared = {key: module for loaded in list(self._models.values()) if getattr(loaded, "device", None) == device
                  for key, module in getattr(loaded, "parts", {}).items()}  # text encoders and VAEs of their own files
        return self._cached(self.key(ref, device, dtype), lambda: _load(
            dataclasses.replace(ref, source=ref.source.strip()), device, dtype, self.quantize, self.t5_device, shared))

    def key(self, ref: ModelRef, device: torch.device, dtype: torch.dtype) -> tuple:
        return (ref.source.strip(), ref.family, ref.config, ref.parts, str(device), str(dtype), self.quantize,
                self.t5_device)

    def info(self) -> dict:
        return {
            "hits": self.hits, "misses": self.misses, "load_seconds": round(self.load_seconds, 3),
            "resident": [m.name for m in self._models.values()],
            "resident_bytes": self.resident_bytes(),
            "budget_bytes": self.budget_bytes,
        }

    def get_vae(self, vae, model: LoadedModel):
        """The VAE file `vae` (ModelRef or source) built to `model`'s VAE config (its scaling factor
        included), resident like a pipeline; in float32 where the model's own VAE is."""
        ref = model_ref(vae)
        dtype = model.pipe.vae.dtype
        key = ("vae", ref.source.strip(), model.vae_config, str(model.device), str(dtype))
        return self._cached(key, lambda: _load_vae(dataclasses.replace(ref, source=key[1]), model, dtype))

    def get_addon(self, kind: str, ref: ModelRef, device, dtype):
        """A LoRA, embedding, ControlNet or upscaler file (addons.load_addon) for a model on
        `device` in `dtype`, resident like a pipeline; keyed by the file and its hash, so a replaced
        file is read again."""
        from .addons import load_addon

        key = (kind, ref.source, ref.hash, ref.family, ref.config, str(device), str(dtype))
        return self._cached(key, lambda: load_addon(kind, ref, device, dtype))

    def _cached(self, key: tuple, load) -> LoadedModel:
        with self._lock:
            if key in self._models:
                self.hits += 1
                self._models.move_to_end(key)
                return self._models[key]
            loaded = load()
            self.misses += 1
            self.load_seconds += loaded.load_seconds
            self._models[key] = loaded
            budget = self.budget_bytes
            device = getattr(loaded, "device", None)  # add-ons have none: they follow their model
            if device is not None and device.type == "cuda":  # leave 40% of the card to a batch's activations
                budget = min(budget, int(0.6 * torch.cuda.get_device_properties(device).total_memory))
            evicted = False
            while len(self._models) > 1 and self.resident_bytes() > budget:
                self._models.popitem(last=False)
                evicted = True
            if evicted and torch.cuda.is_available():
                torch.cuda.empty_cache()
            return loaded

    def resident_bytes(self) -> int:
        """Bytes of everything resident, each module shared by several models (FLUX.1's T5) once."""
        parts = {id(module): module_bytes(module, loaded.device) for loaded in self._models.values()
                 for module in getattr(loaded, "parts", {}).values()}
        return sum(m.size_bytes for m in self._models.values()) + sum(parts.values())

    def resident_sources(self) -> list[str]:
        return [key[0] for key in list(self._models) if key[0] not in ("vae", "lora", "embedding", "controlnet", "upscaler")]

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


PIPELINES = PipelineCache(8 * 2**30)  # a worker sets its own budget before its first run


def load_pipeline(model: str | ModelRef, *, device=None, dtype=None) -> LoadedModel:
    """The pipeline for `model` (a ModelRef or a source), from the process-wide cache."""
    return PIPELINES.get(model, device, dtype)


def compile_unet(model: LoadedModel) -> None:
    """torch.compile the denoiser (UNet, or a FLUX.1, SD 3.5 or Z-Image transformer) of a cached model, once. The first
    run of each new shape compiles (tens of seconds on a GPU); after a second batch size the batch
    dimension is compiled as dynamic, so warming up with batch 1 and the largest batch covers the
    sizes between. LoRAs are merged into the weights in place (addons.applied_loras), which needs
    no recompilation."""
    name = "transformer" if model.transformer else "unet"
    if not isinstance(getattr(model.pipe, name), torch._dynamo.eval_frame.OptimizedModule):
        setattr(model.pipe, name, torch.compile(getattr(model.pipe, name)))
