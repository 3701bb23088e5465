"""FLUX.1 (dev and schnell) from the files people have: Black Forest Labs' transformer file (bfloat16,
fp8, scaled fp8 or GGUF), alone (with ComfyUI's clip_l, t5xxl and ae files beside it) or in one file
with them, read part by part straight into the model's memory (a whole FLUX file is 17-34 GB; it is
never read twice); its run, its memory options and its LoRAs' layer names.

The transformer's names: BFL's layout <-> diffusers', one table read both ways (the tests write
their tiny models with it; diffusers' own converter assumes the full-size width)."""

import functools
import json
from pathlib import Path

from .request import JobError

# BFL's module -> the diffusers modules whose weights it holds, concatenated along the first axis.
_TOP = {
    "img_in": ("x_embedder",), "txt_in": ("context_embedder",),
    "time_in.in_layer": ("time_text_embed.timestep_embedder.linear_1",),
    "time_in.out_layer": ("time_text_embed.timestep_embedder.linear_2",),
    "vector_in.in_layer": ("time_text_embed.text_embedder.linear_1",),
    "vector_in.out_layer": ("time_text_embed.text_embedder.linear_2",),
    "guidance_in.in_layer": ("time_text_embed.guidance_embedder.linear_1",),
    "guidance_in.out_layer": ("time_text_embed.guidance_embedder.linear_2",),
    "final_layer.linear": ("proj_out",),
    "final_layer.adaLN_modulation.1": ("norm_out.linear",),  # (shift, scale) in BFL, (scale, shift) in diffusers
}
_DOUBLE = {
    "img_mod.lin": ("norm1.linear",), "txt_mod.lin": ("norm1_context.linear",),
    "img_attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "txt_attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "img_attn.proj": ("attn.to_out.0",), "txt_attn.proj": ("attn.to_add_out",),
    "img_mlp.0": ("ff.net.0.proj",), "img_mlp.2": ("ff.net.2",),
    "txt_mlp.0": ("ff_context.net.0.proj",), "txt_mlp.2": ("ff_context.net.2",),
    "img_attn.norm.query_norm": ("attn.norm_q",), "img_attn.norm.key_norm": ("attn.norm_k",),
    "txt_attn.norm.query_norm": ("attn.norm_added_q",), "txt_attn.norm.key_norm": ("attn.norm_added_k",),
}
_SINGLE = {
    "linear1": ("attn.to_q", "attn.to_k", "attn.to_v", "proj_mlp"), "linear2": ("proj_out",),
    "modulation.lin": ("norm.linear",), "norm.query_norm": ("attn.norm_q",), "norm.key_norm": ("attn.norm_k",),
}
_SWAPPED = "final_layer.adaLN_modulation.1"

# Where each part sits in a whole file (ComfyUI's layout), and the names of the separate files.
PREFIXES = {"transformer": "model.diffusion_model.", "text_encoder": "text_encoders.clip_l.transformer.",
            "text_encoder_2": "text_encoders.t5xxl.transformer.", "vae": "vae."}
MARKER = "double_blocks.0.img_attn.norm.key_norm.scale"  # only a FLUX.1 transformer has it


def _modules(double: int, single: int):
    yield from _TOP.items()
    for i in range(double):
        yield from ((f"double_blocks.{i}.{b}", tuple(f"transformer_blocks.{i}.{d}" for d in ds)) for b, ds in _DOUBLE.items())
    for i in range(single):
        yield from ((f"single_blocks.{i}.{b}", tuple(f"single_transformer_blocks.{i}.{d}" for d in ds))
                    for b, ds in _SINGLE.items())


def _count(names, prefix: str) -> int:
    return 1 + max((int(n.split(".")[1]) for n in names if n.startswith(prefix)), default=-1)


def _swap_halves(tensor):
    import torch

    first, second = tensor.chunk(2)
    return torch.cat([second, first])


def to_diffusers(state: dict) -> dict:
    """A BFL-layout transformer state dict (without a prefix) in diffusers' names. ComfyUI's "scaled
    fp8" files keep each weight in float8 with a scale beside it: those are multiplied out."""
    state, out = dict(state), {}
    if state.pop("scaled_fp8", None) is not None:
        for key in [k for k in state if k.endswith((".scale_weight", ".scale_input"))]:
            scale = state.pop(key)
            if key.endswith(".scale_weight"):
                weight = key.removesuffix("scale_weight") + "weight"
                state[weight] = state[weight].float() * scale.float()
    hidden = state["img_in.weight"].shape[0]
    for bfl, ours in _modules(_count(state, "double_blocks."), _count(state, "single_blocks.")):
        for suffix in ("weight", "bias", "scale"):
            if (value := state.pop(f"{bfl}.{suffix}", None)) is None:
                continue
            value = _swap_halves(value) if bfl == _SWAPPED else value
            parts = value.split([hidden] * (len(ours) - 1) + [value.shape[0] - hidden * (len(ours) - 1)])
            for name, part in zip(ours, parts):
                out[f"{name}.{'weight' if suffix == 'scale' else suffix}"] = part
    if state:
        raise JobError(f"this FLUX file has tensors this studio doesn't know, e.g. {sorted(state)[0][:80]!r}")
    return out


def to_bfl(state: dict) -> dict:
    """A diffusers FluxTransformer2DModel state dict in BFL's names."""
    import torch

    out = {}
    for bfl, ours in _modules(_count(state, "transformer_blocks."), _count(state, "single_transformer_blocks.")):
        for suffix in ("weight", "bias"):
            if f"{ours[0]}.{suffix}" not in state:
                continue
            value = torch.cat([state[f"{name}.{suffix}"] for name in ours])
            out[f"{bfl}.{'scale' if bfl.endswith('_norm') else suffix}"] = _swap_halves(value) if bfl == _SWAPPED else value
    return out


def flux_family(header: dict, prefix: str) -> str:
    """"flux-dev" or "flux-schnell" for a FLUX.1 transformer (under `prefix` in `header`); JobError
    for FLUX.1's Fill and Depth models, which take more than noise."""
    if header.get(prefix + "img_in.weight", {"shape": [0, 64]})["shape"][-1] != 64:
        raise JobError("this is a FLUX.1 Fill or Depth model: this studio runs FLUX.1 [dev] and [schnell] "
                       "text-to-image models")
    return "flux-dev" if prefix + "guidance_in.in_layer.weight" in header else "flux-schnell"


def missing_parts(header: dict) -> list[str]:
    """The parts (besides the transformer) a FLUX file doesn't hold: they come from the text-encoder
    and VAE files beside it."""
    return [part for part, prefix in PREFIXES.items()
            if part != "transformer" and not any(k.startswith(prefix) for k in header)]


def load_flux(path: Path, whole: dict, parts: dict, config: Path, dtype, shared: dict | None = None):
    """A FluxPipeline from a FLUX file (`whole`: its tensor table; `parts` names the files of what it lacks: text_encoder,
    text_encoder_2, vae, and tokenizer_2, a folder holding T5's tokenizer), each module made on the
    meta device and given its tensors in `dtype`: nothing is initialised or held twice. A part read
    from a file of its own is taken from `shared` ({part_key: module}: another FLUX model's) when it
    is there. Returns the pipeline and {part_key: module} of the parts it read from such files."""
    import diffusers
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from .tokenizer import clip_tokenizer

    prefix = PREFIXES["transformer"] if any(k.startswith(PREFIXES["transformer"]) for k in whole) else ""
    sources = {part: (path, PREFIXES[part]) for part in PREFIXES if part != "transformer"}
    sources["transformer"] = (path, prefix)
    for part in missing_parts(whole):
        if not parts.get(part):
            raise JobError(f"this FLUX file has no {_PART_NAMES[part]}, and none was found beside it "
                           f"(the text-encoder folder needs {_PART_FILES[part]})")
        if not Path(parts[part]).is_file():
            raise JobError(f"the {_PART_NAMES[part]} chosen for this FLUX file, {Path(parts[part]).name}, is missing")
        sources[part] = (Path(parts[part]), "")

    if path.suffix.lower() == ".gguf":  # quantized blocks, widened layer by layer as they run
        from diffusers.models.model_loading_utils import load_gguf_checkpoint
        from diffusers.quantizers.gguf.utils import _replace_with_gguf_linear

        state = to_diffusers(load_gguf_checkpoint(str(path)))
        quantized = functools.partial(_replace_with_gguf_linear, compute_dtype=dtype, state_dict=state)
    else:
        state, quantized = to_diffusers(_tensors(*sources["transformer"])), None
    transformer = _built(lambda: FluxTransformer2DModel.from_config(FluxTransformer2DModel.load_config(
        config / "transformer")), state, dtype, quantized)
    vae_config = AutoencoderKL.load_config(config / "vae")
    makers = {
        "vae": lambda: _built(lambda: AutoencoderKL.from_config(vae_config),
                              convert_ldm_vae_checkpoint(_tensors(*sources["vae"]), vae_config), dtype),
        "text_encoder": lambda: _built(lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder")),
                                       _tensors(*sources["text_encoder"]), dtype),
        "text_encoder_2": lambda: _built(lambda: T5EncoderModel(T5Config.from_pretrained(config / "text_encoder_2")),
                                         _tensors(*sources["text_encoder_2"]), dtype)}
    modules, own_files = {}, {}
    for part, make in makers.items():
        file, prefix = sources[part]
        key = part_key(part, file, config, dtype) if file != path else None
        modules[part] = (shared or {}).get(key) or make()
        if key:
            own_files[key] = modules[part]
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(config / "scheduler"))
    pipe = diffusers.FluxPipeline(transformer=transformer, **modules, tokenizer=clip_tokenizer(),
                                  tokenizer_2=t5_tokenizer(parts.get("tokenizer_2")), scheduler=scheduler)
    return pipe, own_files


def part_key(part: str, file: Path, config: Path, dtype) -> tuple:
    """What makes two FLUX models' text encoder (or VAE) the same module: its file (by content:
    size and mtime), its config, its precision."""
    stat = Path(file).stat()
    config = json.loads((Path(config) / part / "config.json").read_text())
    return part, str(Path(file).resolve()), stat.st_size, stat.st_mtime, json.dumps(config, sort_keys=True), str(dtype)


_PART_NAMES = {"text_encoder": "CLIP-L text encoder", "text_encoder_2": "T5-XXL text encoder", "vae": "VAE"}
_PART_FILES = {"text_encoder": "clip_l.safetensors", "text_encoder_2": "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn)",
               "vae": "ae.safetensors"}


def denoise(model, request, generators, progress, embeds: dict, start=None):
    """A FLUX.1 run of `request`'s size, steps, scheduler and distilled guidance (no negative prompt,
    no CFG) over the images of `generators`, from text (`embeds` may hold its starting `latents`), a
    picture (img2img) or a picture and a mask (inpaint: `start`). Its latents come packed in 2x2
    patches: they are laid out again for the previews and the VAE. Returns the latents and the
    pipeline."""
    from diffusers import FluxPipeline

    from .pipelines import pipeline_for_run

    pipe = pipeline_for_run(model.pipe, request.scheduler, [g.initial_seed() for g in generators], request.mode)
    unpack = functools.partial(FluxPipeline._unpack_latents, height=request.height, width=request.width,
                               vae_scale_factor=pipe.vae_scale_factor)
    progress.previews.factors, progress.previews.unpack = model.latent_rgb, unpack
    pipe.scheduler.generators = generators  # Euler a's noise, from each image's own generator
    picture = {} if start is None else {"image": start.picture, "strength": request.denoising_strength} | (
        {"mask_image": start.hard_mask} if request.mask is not None else {})
    latents = pipe(width=request.width, height=request.height, num_inference_steps=request.steps,
                   guidance_scale=request.distilled_guidance_scale, generator=generators, output_type="latent",
                   callback_on_step_end=progress.on_step_end, **picture, **embeds).images
    return unpack(latents), pipe


def lora_targets(transformer) -> dict:
    """{every name a FLUX.1 LoRA file may give a layer: ([(module, first row, end row)], are the
    halves of its rows swapped)}: BFL's layer names (Kohya's lora_unet_double_blocks_0_img_attn_qkv,
    ComfyUI's diffusion_model.double_blocks.0.img_attn.qkv), whose fused layers span several of
    ours, and diffusers' own (PEFT's transformer.transformer_blocks.0.attn.to_q)."""
    import torch

    modules, config = dict(transformer.named_modules()), transformer.config
    targets = {}
    for bfl, ours in _modules(config.num_layers, config.num_single_layers):
        found = [modules.get(name) for name in ours]
        if not all(isinstance(m, torch.nn.Linear) for m in found):
            continue  # a norm, or guidance_in on [schnell]
        parts, rows = [], 0
        for module in found:
            parts.append((module, rows, rows + module.weight.shape[0]))
            rows += module.weight.shape[0]
        for alias in ("lora_unet_" + bfl.replace(".", "_"), "diffusion_model." + bfl, bfl):
            targets[alias] = (parts, bfl == _SWAPPED)
        for name, module in zip(ours, found):
            for alias in ("transformer." + name, "lora_transformer_" + name.replace(".", "_")):
                targets[alias] = ([(module, 0, module.weight.shape[0])], False)
    return targets


def encode(pipe, prompt: str, max_tokens: int, device) -> dict:
    """T5's token embeddings and CLIP-L's pooled vector of `prompt`, on `device`; T5 runs where it
    lives (the CPU, where GPU memory is short: loading.PipelineCache.t5_device)."""
    import torch

    with torch.no_grad():
        pooled = pipe._get_clip_prompt_embeds(prompt=prompt, device=device)
        embeds = pipe._get_t5_prompt_embeds(prompt=prompt, max_sequence_length=max_tokens,
                                            device=pipe.text_encoder_2.device)
    return {"prompt_embeds": embeds.to(device, pooled.dtype), "pooled_prompt_embeds": pooled}


FP8_KEPT = ("pos_embed", "x_embedder", "context_embedder", "^proj_out$")


def fit_memory(pipe, dtype, quantize: str) -> None:
    """`quantize`="fp8": the transformer's weights kept in float8 (half of bfloat16's memory: FLUX.1
    ~12 GB), each layer widened to `dtype` as it runs (diffusers' layerwise casting)."""
    import torch
    from diffusers.hooks import apply_layerwise_casting

    if quantize not in ("", "none", "fp8"):
        raise JobError(f"quantize must be none or fp8 (got {quantize!r})")
    if quantize == "fp8" and not any(hasattr(p, "quant_type") for p in pipe.transformer.parameters()):  # (GGUF is)
        # every linear layer but the first and last, the modulations too (diffusers' own skips them)
        apply_layerwise_casting(pipe.transformer, torch.float8_e4m3fn, dtype, skip_modules_pattern=FP8_KEPT)


def t5_tokenizer(folder):
    """T5's tokenizer from `folder` (tokenizer.json, as transformers saves it)."""
    from transformers import T5TokenizerFast

    if not folder or not (Path(folder) / "tokenizer.json").is_file():
        raise JobError("FLUX needs T5's tokenizer: the operator puts it in the text-encoder folder with "
                       "manage.py fetch_t5_tokenizer (README: FLUX.1)")
    return T5TokenizerFast.from_pretrained(str(folder), local_files_only=True)


def _tensors(path: Path, prefix: str) -> dict:
    """The tensors of `path` whose names start with `prefix`, without it."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as file:
        return {name[len(prefix):]: file.get_tensor(name) for name in file.keys() if name.startswith(prefix)}


def _built(make, state: dict, dtype, quantized=None):
    """The module `make()` builds, with exactly `state`'s weights (HF text encoders' files may carry a few
    extras: position ids, a projection FLUX doesn't use, a tied copy of the embeddings). `quantized`
    swaps in the layers that take GGUF's quantized blocks, which are kept as they are."""
    from accelerate import init_empty_weights

    with init_empty_weights():  # parameters on the meta device, buffers real
        model = make()
        if quantized:
            quantized(model)
    own = model.state_dict()
    if not any(k.startswith("text_model.") for k in own):  # transformers >= 5.6 dropped CLIP's prefix
        state = {k.removeprefix("text_model."): v for k, v in state.items()}
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


def config_folder(config) -> Path:
    """A FLUX config folder, checked to be one."""
    config = Path(config)
    index = config / "model_index.json"
    if not index.is_file() or json.loads(index.read_text()).get("_class_name") != "FluxPipeline":
        raise JobError("the config folder of a FLUX model must hold a FluxPipeline's model_index.json")
    return config
