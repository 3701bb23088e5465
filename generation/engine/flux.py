"""FLUX.1 (dev and schnell) from the files people have: Black Forest Labs' transformer file (bfloat16,
fp8, scaled fp8 or GGUF), alone (with ComfyUI's clip_l, t5xxl and ae files beside it) or in one file
with them, read part by part straight into the model's memory (a whole FLUX file is 17-34 GB; it is
never read twice); its run, its memory options and its LoRAs' layer names.

The transformer's names: BFL's layout <-> diffusers', one table read both ways (the tests write
their tiny models with it; diffusers' own converter assumes the full-size width)."""

import functools
from pathlib import Path

from . import parts
from .parts import Layout, built, count_blocks, load_parts, swap_halves, t5_tokenizer, unscaled
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


def to_diffusers(state: dict) -> dict:
    """A BFL-layout transformer state dict (without a prefix) in diffusers' names. ComfyUI's "scaled
    fp8" files keep each weight in float8 with a scale beside it: those are multiplied out."""
    state, out = unscaled(state), {}
    hidden = state["img_in.weight"].shape[0]
    for bfl, ours in _modules(count_blocks(state, "double_blocks."), count_blocks(state, "single_blocks.")):
        for suffix in ("weight", "bias", "scale"):
            if (value := state.pop(f"{bfl}.{suffix}", None)) is None:
                continue
            value = swap_halves(value) if bfl == _SWAPPED else value
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
    for bfl, ours in _modules(count_blocks(state, "transformer_blocks."), count_blocks(state, "single_transformer_blocks.")):
        for suffix in ("weight", "bias"):
            if f"{ours[0]}.{suffix}" not in state:
                continue
            value = torch.cat([state[f"{name}.{suffix}"] for name in ours])
            out[f"{bfl}.{'scale' if bfl.endswith('_norm') else suffix}"] = swap_halves(value) if bfl == _SWAPPED else value
    return out


def flux_family(header: dict, prefix: str) -> str:
    """"flux-dev" or "flux-schnell" for a FLUX.1 transformer (under `prefix` in `header`); JobError
    for FLUX.1's Fill and Depth models, which take more than noise."""
    if header.get(prefix + "img_in.weight", {"shape": [0, 64]})["shape"][-1] != 64:
        raise JobError("this is a FLUX.1 Fill or Depth model: this studio runs FLUX.1 [dev] and [schnell] "
                       "text-to-image models")
    return "flux-dev" if prefix + "guidance_in.in_layer.weight" in header else "flux-schnell"


LAYOUT = Layout("FLUX", PREFIXES, {
    "text_encoder": ("CLIP-L text encoder", "clip_l.safetensors"),
    "text_encoder_2": ("T5-XXL text encoder", "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn)"),
    "vae": ("VAE", "ae.safetensors")}, to_diffusers)


def load_flux(path: Path, whole: dict, files: dict, config: Path, dtype, shared: dict | None = None):
    """A FluxPipeline from a FLUX file (`whole`: its tensor table; `files` names the files of what it
    lacks, and tokenizer_2, a folder holding T5's tokenizer: parts.load_parts). Returns the pipeline
    and {part_key: module} of the parts it read from files of their own."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .tokenizer import clip_tokenizer

    modules, own_files = load_parts(LAYOUT, path, whole, files, config, dtype, shared)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(config / "scheduler"))
    pipe = diffusers.FluxPipeline(**modules, tokenizer=clip_tokenizer(), tokenizer_2=t5_tokenizer(files.get("tokenizer_2")),
                                  scheduler=scheduler)
    return pipe, own_files


def denoise(model, request, generators, progress, embeds: dict, start=None, controlnets=()):
    """A FLUX.1 run of `request`'s size, steps, scheduler and distilled guidance (no negative prompt,
    no CFG) over the images of `generators`, from text (`embeds` may hold its starting `latents`), a
    picture (img2img) or a picture and a mask (inpaint: `start`), guided by `controlnets` ((loaded
    add-on, ControlUnit), ...). Its latents come packed in 2x2 patches: they are laid out again for
    the previews and the VAE. Returns the latents and the pipeline."""
    import torch
    from diffusers import FluxPipeline

    from .pipelines import pipeline_for_run

    control = _control(request, start, controlnets) if controlnets else {}
    task = ("controlnet-img2img" if start else "controlnet") if controlnets else request.mode
    pipe = pipeline_for_run(model.pipe, request.scheduler, [g.initial_seed() for g in generators], task,
                            **({"controlnet": control.pop("controlnet")} if controlnets else {}))
    unpack = functools.partial(FluxPipeline._unpack_latents, height=request.height, width=request.width,
                               vae_scale_factor=pipe.vae_scale_factor)
    progress.previews.factors, progress.previews.unpack = model.latent_rgb, unpack
    pipe.scheduler.generators = generators  # Euler a's noise, from each image's own generator
    picture = {} if start is None else {"image": start.picture, "strength": request.denoising_strength} | (
        {"mask_image": start.hard_mask} if request.mask is not None else {})
    drawing = generators
    if controlnets and start is None and "latents" not in embeds:
        # The starting noise as without ControlNet (its map's VAE pass draws first from what it is given)
        from diffusers.utils.torch_utils import randn_tensor

        shape = (len(generators), pipe.transformer.config.in_channels // 4, request.height // 8, request.width // 8)
        noise = randn_tensor(shape, generator=generators, device=model.device, dtype=model.dtype)
        embeds = {**embeds, "latents": pipe._pack_latents(noise, *shape)}
        drawing = [torch.Generator().manual_seed(g.initial_seed()) for g in generators]
    latents = pipe(width=request.width, height=request.height, num_inference_steps=request.steps,
                   guidance_scale=request.distilled_guidance_scale, generator=drawing, output_type="latent",
                   callback_on_step_end=progress.on_step_end, **picture, **control, **embeds).images
    return unpack(latents), pipe


UNION_CANNY = 0  # the mode of InstantX's and Shakker-Labs' union ControlNets our edge maps are read in


def _control(request, start, controlnets) -> dict:
    """The pipeline arguments of ControlNet units: each one's map at the run's size, weight and
    steps; a union ControlNet reads edge maps (every preprocessor here makes one) in its Canny mode."""
    from diffusers import FluxMultiControlNetModel

    from .controlmaps import unit_map

    nets, units = [loaded.value for loaded, _ in controlnets], [unit for _, unit in controlnets]
    width, height = start.picture.size if start else (request.width, request.height)
    modes = [UNION_CANNY if net.config.num_mode else None for net in nets]
    return {"controlnet": nets[0] if len(nets) == 1 else FluxMultiControlNetModel(nets),
            "control_image": [unit_map(unit, width, height) for unit in units] if len(units) > 1 else
            unit_map(units[0], width, height), "control_mode": modes if len(nets) > 1 else modes[0],
            "controlnet_conditioning_scale": [u.weight for u in units] if len(units) > 1 else units[0].weight,
            "control_guidance_start": [u.guidance_start for u in units],
            "control_guidance_end": [u.guidance_end for u in units]}


def load_controlnet(path: Path, dtype):
    """A FLUX.1 ControlNet in diffusers' layout (InstantX's, Shakker-Labs' union): a folder with its
    config.json, or its .safetensors alone, whose config is read from its tensors (names and shapes)
    (every real one has FLUX.1's 128-wide attention heads, whose rotary axes are 16, 56, 56)."""
    from diffusers import FluxControlNetModel
    from safetensors.torch import load_file

    if path.is_dir():
        return FluxControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True).eval()
    state = load_file(path)
    hidden, head = state["x_embedder.weight"].shape[0], state["transformer_blocks.0.attn.norm_q.weight"].shape[0]
    mode = state.get("controlnet_mode_embedder.weight")
    config = dict(patch_size=1, in_channels=state["x_embedder.weight"].shape[1],
                  num_layers=count_blocks(state, "transformer_blocks."),
                  num_single_layers=count_blocks(state, "single_transformer_blocks."), attention_head_dim=head,
                  num_attention_heads=hidden // head, joint_attention_dim=state["context_embedder.weight"].shape[1],
                  pooled_projection_dim=state["time_text_embed.text_embedder.linear_1.weight"].shape[1],
                  guidance_embeds="time_text_embed.guidance_embedder.linear_1.weight" in state,
                  axes_dims_rope=[head // 8, head * 7 // 16, head * 7 // 16],
                  num_mode=None if mode is None else mode.shape[0])
    return built(lambda: FluxControlNetModel.from_config(config), state, dtype)


def lora_targets(transformer) -> dict:
    """parts.lora_targets for FLUX.1: BFL's layer names (Kohya's lora_unet_double_blocks_0_img_attn_qkv,
    ComfyUI's diffusion_model.double_blocks.0.img_attn.qkv) and diffusers' own."""
    config = transformer.config
    return parts.lora_targets(transformer, ((bfl, ours, bfl == _SWAPPED) for bfl, ours in
                                            _modules(config.num_layers, config.num_single_layers)), "lora_unet_")


def encode(pipe, prompt: str, max_tokens: int, device) -> dict:
    """T5's token embeddings and CLIP-L's pooled vector of `prompt`, on `device`; T5 runs where it
    lives (the CPU, where GPU memory is short: loading.PipelineCache.t5_device)."""
    import torch

    with torch.no_grad():
        pooled = pipe._get_clip_prompt_embeds(prompt=prompt, device=device)
        embeds = pipe._get_t5_prompt_embeds(prompt=prompt, max_sequence_length=max_tokens,
                                            device=pipe.text_encoder_2.device)
    return {"prompt_embeds": embeds.to(device, pooled.dtype), "pooled_prompt_embeds": pooled}
