"""Transformer models (FLUX.1, SD 3.5) from the files people have: one file holding everything, or
the transformer's file (safetensors or GGUF) with the text encoders and the VAE in files of their own
(ComfyUI's layout). Each module is made on the meta device and given its tensors once, in the
precision it runs in: nothing is initialised or held twice (a whole file is 17-34 GB). A text
encoder or VAE read from a file of its own is shared by every model that uses that file."""

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .request import JobError


@dataclass(frozen=True)
class Layout:
    """How a family's modules sit in its files."""
    label: str  # "FLUX", "SD 3.5"
    prefixes: dict  # part -> the prefix of its tensors in one whole file ("transformer" first)
    parts: dict  # part (besides the transformer) -> (what it is, the file that holds it), for messages
    to_diffusers: Callable  # the transformer's tensors, its maker's names -> diffusers'


def missing_parts(layout: Layout, header: dict) -> list[str]:
    """The parts (besides the transformer) a file doesn't hold: they come from files beside it."""
    return [part for part in layout.parts if not any(k.startswith(layout.prefixes[part]) for k in header)]


def load_parts(layout: Layout, path: Path, whole: dict, files: dict, config: Path, dtype, shared: dict | None):
    """The modules of a model of `layout` from `path` (`whole`: its tensor table) and `files`
    ({part: path} of what it lacks), built to the diffusers configs in `config`: {part: module}
    (the transformer included), and {part_key: module} of the parts read from files of their own,
    taken from `shared` (another model's) when they are there."""
    import diffusers
    import transformers
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    prefix = layout.prefixes["transformer"] if any(k.startswith(layout.prefixes["transformer"]) for k in whole) else ""
    sources = {part: (path, layout.prefixes[part]) for part in layout.parts} | {"transformer": (path, prefix)}
    for part in missing_parts(layout, whole):
        what, file = layout.parts[part]
        if not files.get(part):
            raise JobError(f"this {layout.label} file has no {what}, and none was found beside it "
                           f"(the text-encoder folder needs {file})")
        if not Path(files[part]).is_file():
            raise JobError(f"the {what} chosen for this {layout.label} file, {Path(files[part]).name}, is missing")
        sources[part] = (Path(files[part]), "")

    index = json.loads((config / "model_index.json").read_text())
    kind = getattr(diffusers, index["transformer"][1])
    if path.suffix.lower() == ".gguf":  # quantized blocks, widened layer by layer as they run
        from diffusers.models.model_loading_utils import load_gguf_checkpoint
        from diffusers.quantizers.gguf.utils import _replace_with_gguf_linear

        state = layout.to_diffusers(load_gguf_checkpoint(str(path)))
        quantized = functools.partial(_replace_with_gguf_linear, compute_dtype=dtype, state_dict=state)
    else:
        state, quantized = layout.to_diffusers(tensors(*sources["transformer"])), None
    modules = {"transformer": built(lambda: kind.from_config(kind.load_config(config / "transformer")), state, dtype,
                                    quantized)}

    def make(part: str, state: dict):
        if part == "vae":
            vae_config = AutoencoderKL.load_config(config / "vae")
            return built(lambda: AutoencoderKL.from_config(vae_config), convert_ldm_vae_checkpoint(state, vae_config), dtype)
        encoder = getattr(transformers, index[part][1])
        return built(lambda: encoder(encoder.config_class.from_pretrained(config / part)), state, dtype)

    own_files = {}
    for part in layout.parts:
        file, prefix = sources[part]
        key = part_key(part, file, config, dtype) if file != path else None
        modules[part] = (shared or {}).get(key) or make(part, tensors(file, prefix))
        if key:
            own_files[key] = modules[part]
    return modules, own_files


def count_blocks(names, prefix: str) -> int:
    """How many blocks `prefix`N. the tensor names hold."""
    return 1 + max((int(n.split(".")[1]) for n in names if n.startswith(prefix)), default=-1)


def swap_halves(tensor):
    """A modulation's (shift, scale) rows as (scale, shift), and back."""
    import torch

    first, second = tensor.chunk(2)
    return torch.cat([second, first])


def unscaled(state: dict) -> dict:
    """A transformer's tensors with ComfyUI's "scaled fp8" weights (each kept in float8 with a scale
    beside it) multiplied out."""
    state = dict(state)
    if state.pop("scaled_fp8", None) is not None:
        for key in [k for k in state if k.endswith((".scale_weight", ".scale_input"))]:
            scale = state.pop(key)
            if key.endswith(".scale_weight"):
                weight = key.removesuffix("scale_weight") + "weight"
                state[weight] = state[weight].float() * scale.float()
    return state


def part_key(part: str, file: Path, config: Path, dtype) -> tuple:
    """What makes two models' text encoder (or VAE) the same module: its file (by content: size and
    mtime), its config, its precision; not its place in the pipeline (FLUX.1's text_encoder_2 and
    SD 3.5's text_encoder_3 are one T5)."""
    stat = Path(file).stat()
    config = json.loads((Path(config) / part / "config.json").read_text())
    return str(Path(file).resolve()), stat.st_size, stat.st_mtime, json.dumps(config, sort_keys=True), str(dtype)


def t5_tokenizer(folder):
    """T5's tokenizer from `folder` (tokenizer.json, as transformers saves it)."""
    from transformers import T5TokenizerFast

    if not folder or not (Path(folder) / "tokenizer.json").is_file():
        raise JobError("T5's tokenizer is missing: the operator puts it in the text-encoder folder with "
                       "manage.py fetch_tokenizers (README: FLUX.1)")
    return T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)


def tensors(path: Path, prefix: str) -> dict:
    """The tensors of `path` whose names start with `prefix`, without it."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        return {name[len(prefix):]: file.get_tensor(name) for name in file.keys() if name.startswith(prefix)}


def built(make, state: dict, dtype, quantized=None):
    """The module `make()` builds, with exactly `state`'s weights (HF text encoders' files may carry a few
    extras: position ids, a projection FLUX doesn't use, a tied copy of the embeddings, a language
    model's head). `quantized`
    swaps in the layers that take GGUF's quantized blocks, which are kept as they are."""
    import torch
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device, buffers real
        model = make()
        if quantized:
            quantized(model)
    own = model.state_dict()
    for prefix in ("text_model.", "model."):  # CLIP's (dropped in transformers 5.6); a causal LM's (Qwen3's file)
        if not any(k.startswith(prefix) for k in own):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
    if "text_projection.weight" in own and "text_projection.weight" not in state:  # as ComfyUI reads such a CLIP-L
        state["text_projection.weight"] = torch.eye(*own["text_projection.weight"].shape)
    state = {k: v if hasattr(v, "quant_type") else v.to(dtype) for k, v in state.items() if k in own}
    missing = [k for k in own if k not in state and not k.endswith("position_ids") and k != "encoder.embed_tokens.weight"]
    if missing:
        raise JobError(f"the {type(model).__name__} weights lack {len(missing)} tensors, e.g. {missing[0][:80]!r}")
    for name in [k for k, v in state.items() if hasattr(v, "quant_type")]:  # (their shape is in bytes)
        module, _, attribute = name.rpartition(".")
        model.get_submodule(module)._parameters[attribute] = state.pop(name)
    model.load_state_dict(state, strict=False, assign=True)
    if "shared.weight" in own:  # T5: the encoder's embeddings are the shared ones
        model.encoder.embed_tokens = model.shared
    return model.eval().requires_grad_(False)


FP8_KEPT = ("pos_embed", "x_embedder", "context_embedder", "^proj_out$",
            "^t_embedder", "^cap_embedder")  # (Z-Image's timestep embedder reads its weights' type)


def fit_memory(pipe, dtype, quantize: str) -> None:
    """`quantize`="fp8": the transformer's weights kept in float8 (half of bfloat16's memory: FLUX.1
    ~12 GB), each layer widened to `dtype` as it runs (diffusers' layerwise casting); "int8": in int8
    with a scale per row (torchao's weight-only int8: as little memory, finer steps); "nf4":
    bitsandbytes' 4-bit NormalFloat (a quarter of bfloat16's memory, coarser). Every linear layer but
    the first and last, the modulations too (diffusers' own fp8 skips them). A GGUF transformer is
    quantized already: kept as it is."""
    import re

    import torch

    if quantize not in ("", "none", "fp8", "int8", "nf4"):
        raise JobError(f"quantize must be none, fp8, int8 or nf4 (got {quantize!r})")
    if quantize in ("", "none") or any(hasattr(p, "quant_type") for p in pipe.transformer.parameters()):
        return
    if quantize == "fp8":
        from diffusers.hooks import apply_layerwise_casting

        apply_layerwise_casting(pipe.transformer, torch.float8_e4m3fn, dtype, skip_modules_pattern=FP8_KEPT)
        return
    layers = [(name, module) for name, module in pipe.transformer.named_modules()
              if isinstance(module, torch.nn.Linear) and not any(re.search(pattern, name) for pattern in FP8_KEPT)]
    if quantize == "int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        chosen = {id(module) for _, module in layers}
        quantize_(pipe.transformer, Int8WeightOnlyConfig(), filter_fn=lambda module, name: id(module) in chosen)
        return
    import bitsandbytes as bnb

    for name, module in layers:  # each quantized as it is moved to its device
        layer = bnb.nn.Linear4bit(module.in_features, module.out_features, bias=module.bias is not None,
                                  compute_dtype=dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(module.weight.data, requires_grad=False, quant_type="nf4")
        layer.bias = module.bias
        pipe.transformer.set_submodule(name, layer.to(module.weight.device))


def lora_targets(transformer, table, kohya: str) -> dict:
    """{every name a LoRA file may give a layer: ([(module, first row, end row)], are the halves of
    its rows swapped)}, from `table` ((original name, (diffusers names, ...), swapped), ...: the
    original names, as Kohya (`kohya` + the name with underscores) and ComfyUI (diffusion_model.)
    write them, whose fused layers span several of ours) and diffusers' own (PEFT's
    transformer.transformer_blocks.0.attn.to_q)."""
    import torch

    modules, targets = dict(transformer.named_modules()), {}
    for original, ours, swapped in table:
        found = [modules.get(name) for name in ours]
        if not all(isinstance(m, torch.nn.Linear) for m in found):
            continue  # a norm, or a layer this model doesn't have
        parts, rows = [], 0
        for module in found:
            parts.append((module, rows, rows + module.out_features))  # (a quantized weight's shape may be packed)
            rows += module.out_features
        for alias in (kohya + original.replace(".", "_"), "diffusion_model." + original, original):
            targets[alias] = (parts, swapped)
        for name, module in zip(ours, found):
            for alias in ("transformer." + name, "lora_transformer_" + name.replace(".", "_")):
                targets[alias] = ([(module, 0, module.out_features)], False)
    return targets


def check_request(request, label: str) -> None:
    """ValueError naming the field for what a FLUX.1, SD 3.5 or Z-Image model (`label`) doesn't take
    here: a negative prompt (FLUX.1 runs no CFG), sizes that are not multiples of 16 pixels (their
    latents go in 2x2 patches), and what is not built for them yet."""
    from .schedulers import FLOW_SCHEDULERS, scheduler_spec

    flux, r = label.startswith("FLUX"), request
    unsupported = [
        ("negative_prompt", flux and r.negative_prompt.strip(), f"must be empty: {label} takes no negative prompt"),
        ("inpainting_fill", r.mode == "inpaint" and r.inpainting_fill > 1, f"must be 0 (fill) or 1 (original) for {label}"),
        ("hr_scale", r.enable_hr and any(side % 16 for side in r.hires_size()),
         f"must make a size of multiples of 16 for {label} (got {{}}x{{}})".format(*r.hires_size())),
        ("refiner", r.refiner, f"can't be used: {label} has no refiner"),
        ("controlnet", r.controlnets and not flux, f"is not supported for {label} yet"),
        ("controlnet", r.controlnets and (r.mask is not None or r.enable_hr),
         f"is not offered with inpainting or hires fix for {label} yet"),
        ("control_mode", any(unit.control_mode for unit in r.controlnets), f"must be 0 (Balanced) for {label}"),
        ("prompt", r.scheduled, f"uses prompt editing [from:to:when], not offered for {label} yet"),
        ("scheduler", scheduler_spec(r.scheduler).name not in FLOW_SCHEDULERS,
         f"must be {' or '.join(FLOW_SCHEDULERS)} for {label} (got {r.scheduler!r})"),
        *((field, getattr(r, field) % 16, f"must be a multiple of 16 for {label} (got {getattr(r, field)})")
          for field in ("width", "height"))]
    for field, used, why in unsupported:
        if used:
            raise ValueError(f"{field} {why}")
