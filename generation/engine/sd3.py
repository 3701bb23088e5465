"""SD 3.5 (Large, Large Turbo, Medium) from the files people have: Stability's file (the MMDiT and its
VAE, with or without CLIP-L, CLIP-G and T5-XXL), ComfyUI's clip_l, clip_g and t5xxl files beside it,
GGUF transformers, diffusers folders (parts.py reads them); its prompt encoding and its run.

The transformer's names: Stability's layout <-> diffusers', one table read both ways."""

from pathlib import Path

from . import parts
from .parts import Layout, count_blocks, load_parts, swap_halves, t5_tokenizer, unscaled
from .request import JobError

# Stability's module -> the diffusers modules whose weights it holds, concatenated along the first axis.
_TOP = {
    "x_embedder.proj": ("pos_embed.proj",), "context_embedder": ("context_embedder",),
    "t_embedder.mlp.0": ("time_text_embed.timestep_embedder.linear_1",),
    "t_embedder.mlp.2": ("time_text_embed.timestep_embedder.linear_2",),
    "y_embedder.mlp.0": ("time_text_embed.text_embedder.linear_1",),
    "y_embedder.mlp.2": ("time_text_embed.text_embedder.linear_2",),
    "final_layer.linear": ("proj_out",),
    "final_layer.adaLN_modulation.1": ("norm_out.linear",),  # (shift, scale) here, (scale, shift) in diffusers
}
_BLOCK = {
    "x_block.attn.qkv": ("attn.to_q", "attn.to_k", "attn.to_v"),
    "context_block.attn.qkv": ("attn.add_q_proj", "attn.add_k_proj", "attn.add_v_proj"),
    "x_block.attn.proj": ("attn.to_out.0",), "context_block.attn.proj": ("attn.to_add_out",),
    "x_block.attn.ln_q": ("attn.norm_q",), "x_block.attn.ln_k": ("attn.norm_k",),
    "context_block.attn.ln_q": ("attn.norm_added_q",), "context_block.attn.ln_k": ("attn.norm_added_k",),
    "x_block.attn2.qkv": ("attn2.to_q", "attn2.to_k", "attn2.to_v"), "x_block.attn2.proj": ("attn2.to_out.0",),
    "x_block.attn2.ln_q": ("attn2.norm_q",), "x_block.attn2.ln_k": ("attn2.norm_k",),
    "x_block.mlp.fc1": ("ff.net.0.proj",), "x_block.mlp.fc2": ("ff.net.2",),
    "context_block.mlp.fc1": ("ff_context.net.0.proj",), "context_block.mlp.fc2": ("ff_context.net.2",),
    "x_block.adaLN_modulation.1": ("norm1.linear",), "context_block.adaLN_modulation.1": ("norm1_context.linear",),
}

PREFIXES = {"transformer": "model.diffusion_model.", "text_encoder": "text_encoders.clip_l.transformer.",
            "text_encoder_2": "text_encoders.clip_g.transformer.", "text_encoder_3": "text_encoders.t5xxl.transformer.",
            "vae": "first_stage_model."}
MARKER = "joint_blocks.0.x_block.attn.qkv.weight"  # an MMDiT (SD 3 and 3.5)


def _modules(blocks: int):
    """(Stability's module, diffusers' modules, are its halves swapped) of a transformer of `blocks`
    joint blocks: the last block's context half only conditions (its modulation is a final norm's)."""
    yield from ((name, ours, name == "final_layer.adaLN_modulation.1") for name, ours in _TOP.items())
    for i in range(blocks):
        for name, ours in _BLOCK.items():
            swapped = i == blocks - 1 and name == "context_block.adaLN_modulation.1"
            yield f"joint_blocks.{i}.{name}", tuple(f"transformer_blocks.{i}.{d}" for d in ours), swapped


def to_diffusers(state: dict) -> dict:
    """A Stability-layout MMDiT state dict (without a prefix) in diffusers' names; ComfyUI's scaled
    fp8 weights multiplied out."""
    state, out = unscaled(state), {}
    if "pos_embed" in state:
        out["pos_embed.pos_embed"] = state.pop("pos_embed")
    for name, ours, swapped in _modules(count_blocks(state, "joint_blocks.")):
        for suffix in ("weight", "bias"):
            if (value := state.pop(f"{name}.{suffix}", None)) is None:
                continue
            for part_name, part in zip(ours, (swap_halves(value) if swapped else value).chunk(len(ours))):
                out[f"{part_name}.{suffix}"] = part
    if state:
        raise JobError(f"this SD 3.5 file has tensors this studio doesn't know, e.g. {sorted(state)[0][:80]!r}")
    return out


def to_sai(state: dict) -> dict:
    """A diffusers SD3Transformer2DModel state dict in Stability's names."""
    import torch

    out = {"pos_embed": state["pos_embed.pos_embed"]}
    for name, ours, swapped in _modules(count_blocks(state, "transformer_blocks.")):
        for suffix in ("weight", "bias"):
            if f"{ours[0]}.{suffix}" in state:
                value = torch.cat([state[f"{part}.{suffix}"] for part in ours])
                out[f"{name}.{suffix}"] = swap_halves(value) if swapped else value
    return out


def sd3_family(header: dict, prefix: str, turbo: bool = False) -> str:
    """"sd35-large", "sd35-large-turbo" (the same tensors: `turbo`, from its file name) or "sd35-medium"
    for an MMDiT under `prefix` in `header`; JobError for SD 3 Medium, which is not offered."""
    if prefix + "joint_blocks.0.x_block.attn.ln_k.weight" not in header:
        raise JobError("this is an SD 3 Medium model: this studio runs SD 3.5 Large, Large Turbo and Medium, "
                       "not SD 3 (yet)")
    if prefix + "joint_blocks.0.x_block.attn2.qkv.weight" in header:
        return "sd35-medium"
    return "sd35-large-turbo" if turbo else "sd35-large"


LAYOUT = Layout("SD 3.5", PREFIXES, {
    "text_encoder": ("CLIP-L text encoder", "clip_l.safetensors"),
    "text_encoder_2": ("CLIP-G text encoder", "clip_g.safetensors"),
    "text_encoder_3": ("T5-XXL text encoder", "t5xxl_fp16.safetensors (or t5xxl_fp8_e4m3fn)"),
    "vae": ("VAE", "the SD 3.5 VAE (sd3.5_vae.safetensors)")}, to_diffusers)


def load_sd3(path: Path, whole: dict, files: dict, config: Path, dtype, shared: dict | None = None):
    """A StableDiffusion3Pipeline from an SD 3.5 file (parts.load_parts; `files` may name tokenizer_3,
    the folder of T5's tokenizer). Returns the pipeline and {part_key: module} of the parts it read
    from files of their own."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    from .tokenizer import clip_tokenizer

    modules, own_files = load_parts(LAYOUT, path, whole, files, config, dtype, shared)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(config / "scheduler"))
    pipe = diffusers.StableDiffusion3Pipeline(**modules, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"),
                                              tokenizer_3=t5_tokenizer(files.get("tokenizer_3")), scheduler=scheduler)
    return pipe, own_files


def encode(pipe, prompt: str, negative: str, device) -> dict:
    """The prompt's and the negative prompt's conditioning: CLIP-L's and CLIP-G's penultimate layers
    beside T5's tokens, and both CLIPs' pooled vectors, on `device`; T5 runs where it lives."""
    import torch

    out = {}
    with torch.no_grad():
        for name, text in (("", prompt), ("negative_", negative)):
            clip_l, pooled_l = pipe._get_clip_prompt_embeds(prompt=text, device=device, clip_model_index=0)
            clip_g, pooled_g = pipe._get_clip_prompt_embeds(prompt=text, device=device, clip_model_index=1)
            t5 = pipe._get_t5_prompt_embeds(prompt=text, max_sequence_length=256, device=pipe.text_encoder_3.device)
            clip = torch.cat([clip_l, clip_g], dim=-1)
            clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
            out[name + "prompt_embeds"] = torch.cat([clip, t5.to(device, clip.dtype)], dim=-2)
            out[name + "pooled_prompt_embeds"] = torch.cat([pooled_l, pooled_g], dim=-1)
    return out


def denoise(model, request, generators, progress, embeds: dict, start=None, sample_guidance=None):
    """An SD 3.5 run of `request`'s size, steps, scheduler and CFG over the images of `generators`, from
    text (`embeds` may hold its starting `latents`), a picture (img2img) or a picture and a mask
    (inpaint: `start`); a batch's CFG scale per sample in `sample_guidance` (pipelines.with_sample_guidance).
    Returns the latents and the pipeline."""
    from .pipelines import pipeline_for_run

    pipe = pipeline_for_run(model.pipe, request.scheduler, [g.initial_seed() for g in generators], request.mode,
                            per_sample_guidance=sample_guidance is not None)
    if sample_guidance is not None:
        pipe.sample_guidance = sample_guidance
    progress.previews.factors = model.latent_rgb
    pipe.scheduler.generators = generators  # Euler a's noise, from each image's own generator
    picture = {} if start is None else {"image": start.picture, "strength": request.denoising_strength} | (
        {"mask_image": start.hard_mask} if request.mask is not None else {})
    latents = pipe(width=request.width, height=request.height, num_inference_steps=request.steps,
                   guidance_scale=request.guidance_scale, generator=generators, output_type="latent",
                   callback_on_step_end=progress.on_step_end, **picture, **embeds).images
    return latents, pipe


def lora_targets(transformer) -> dict:
    """parts.lora_targets for SD 3.5: Stability's layer names (Kohya's lora_unet_joint_blocks_0_x_block_attn_qkv,
    ComfyUI's diffusion_model.joint_blocks.0.x_block.attn.qkv) and diffusers' own."""
    return parts.lora_targets(transformer, _modules(transformer.config.num_layers), "lora_unet_")



def folder_sd3_family(folder: Path) -> str:
    """The SD 3.5 family of a diffusers StableDiffusion3Pipeline folder (Large Turbo: by its name)."""
    import json

    config = Path(folder) / "transformer" / "config.json"
    if not config.is_file():
        raise JobError(f"model folder {Path(folder).name!r} holds a StableDiffusion3Pipeline without its "
                       "transformer/config.json")
    config = json.loads(config.read_text())
    if not config.get("qk_norm"):
        raise JobError("this is an SD 3 Medium model: this studio runs SD 3.5 Large, Large Turbo and Medium, "
                       "not SD 3 (yet)")
    if config.get("dual_attention_layers"):
        return "sd35-medium"
    return "sd35-large-turbo" if "turbo" in Path(folder).name.lower() else "sd35-large"
