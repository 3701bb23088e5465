"""Z-Image Turbo from the files people have: the transformer's file (Tongyi's layout, as ComfyUI's
diffusion_models hold it; safetensors or GGUF) with ComfyUI's qwen_3_4b text encoder and FLUX.1's
ae VAE beside it, or a diffusers folder (parts.py reads them); its prompt encoding and its run.

The transformer's names: the original layout <-> diffusers', renames read both ways (and fused
q/k/v split in three)."""

from pathlib import Path

from . import parts
from .parts import Layout, load_parts, unscaled
from .request import JobError

_RENAMES = (("final_layer.", "all_final_layer.2-1."), ("x_embedder.", "all_x_embedder.2-1."),
            (".attention.out.", ".attention.to_out.0."), (".attention.k_norm.", ".attention.norm_k."),
            (".attention.q_norm.", ".attention.norm_q."))
_QKV = (".attention.qkv.", (".attention.to_q.", ".attention.to_k.", ".attention.to_v."))

PREFIXES = {"transformer": "model.diffusion_model.", "text_encoder": "text_encoders.qwen3_4b.transformer.",
            "vae": "vae."}
MARKER = "layers.0.adaLN_modulation.0.weight"  # Z-Image's single-stream blocks (Lumina 2's have .1)


def _renamed(name: str, backwards: bool = False) -> str:
    for original, ours in _RENAMES:
        name = name.replace(ours, original) if backwards else name.replace(original, ours)
    return name


def to_diffusers(state: dict) -> dict:
    """An original-layout Z-Image transformer state dict (without a prefix) in diffusers' names."""
    out = {}
    for name, value in unscaled(state).items():
        if _QKV[0] in name:
            for ours, part in zip(_QKV[1], value.chunk(3)):
                out[_renamed(name.replace(_QKV[0], ours))] = part
        elif name != "norm_final.weight":  # (unused: the final layer has its own norm)
            out[_renamed(name)] = value
    return out


def to_original(state: dict) -> dict:
    """A diffusers ZImageTransformer2DModel state dict in the original names."""
    import torch

    out = {}
    for name, value in state.items():
        if _QKV[1][0] in name:
            out[_renamed(name.replace(_QKV[1][0], _QKV[0]), True)] = torch.cat(
                [state[name.replace(_QKV[1][0], part)] for part in _QKV[1]])
        elif not any(part in name for part in _QKV[1][1:]):
            out[_renamed(name, True)] = value
    return out


LAYOUT = Layout("Z-Image", PREFIXES, {"text_encoder": ("Qwen3 4B text encoder", "qwen_3_4b.safetensors"),
                                      "vae": ("VAE", "ae.safetensors (FLUX.1's)")}, to_diffusers)


def load_zimage(path: Path, whole: dict, files: dict, config: Path, dtype, shared: dict | None = None):
    """A ZImagePipeline from a Z-Image file (parts.load_parts; `files` may name tokenizer, the folder
    of Qwen3's tokenizer). Returns the pipeline and {part_key: module} of the parts it read from
    files of their own."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler

    modules, own_files = load_parts(LAYOUT, path, whole, files, config, dtype, shared)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(config / "scheduler"))
    pipe = diffusers.ZImagePipeline(**modules, tokenizer=qwen3_tokenizer(files.get("tokenizer")), scheduler=scheduler)
    return pipe, own_files


def qwen3_tokenizer(folder):
    """Qwen3's tokenizer (with its chat template) from `folder`, as transformers saves it."""
    from transformers import AutoTokenizer

    if not folder or not (Path(folder) / "tokenizer.json").is_file():
        raise JobError("Qwen3's tokenizer is missing: the operator puts it in the text-encoder folder with "
                       "manage.py fetch_tokenizers (README: Z-Image)")
    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def encode(pipe, prompt: str, negative: str, device) -> dict:
    """The prompt's and the negative prompt's token embeddings (Qwen3's second-to-last layer, each as
    long as its text: a list of one tensor each, as the pipeline takes them), on `device`; the text
    encoder runs where it lives (loading.PipelineCache.t5_device)."""
    import torch

    where = pipe.text_encoder.device
    with torch.no_grad():
        return {name: [e.to(device) for e in pipe._encode_prompt(prompt=[text], device=where, max_sequence_length=512)]
                for name, text in (("prompt_embeds", prompt), ("negative_prompt_embeds", negative))}


def denoise(model, request, generators, progress, embeds: dict, start=None):
    """A Z-Image run of `request`'s size, steps, scheduler and CFG over the images of `generators`,
    from text (`embeds` may hold its starting `latents`), a picture (img2img) or a picture and a mask
    (inpaint: `start`). Z-Image's pipelines count CFG from 0 (off) where A1111 counts from 1.
    Returns the latents and the pipeline."""
    from .pipelines import pipeline_for_run

    pipe = pipeline_for_run(model.pipe, request.scheduler, [g.initial_seed() for g in generators], request.mode)
    progress.previews.factors = model.latent_rgb
    pipe.scheduler.generators = generators  # Euler a's noise, from each image's own generator
    picture = {} if start is None else {"image": start.picture, "strength": request.denoising_strength} | (
        {"mask_image": start.hard_mask} if request.mask is not None else {})
    latents = pipe(width=request.width, height=request.height, num_inference_steps=request.steps,
                   guidance_scale=max(request.guidance_scale - 1, 0), generator=generators, output_type="latent",
                   callback_on_step_end=progress.on_step_end, **picture, **embeds).images
    return latents, pipe


def lora_targets(transformer) -> dict:
    """parts.lora_targets for Z-Image: the original layer names (diffusion_model.layers.0.attention.qkv,
    fused; Kohya's lora_unet_layers_0_attention_qkv) and diffusers' own."""
    import torch

    table = []
    for name, module in transformer.named_modules():
        if not isinstance(module, torch.nn.Linear) or name.endswith((".attention.to_k", ".attention.to_v")):
            continue
        if name.endswith(".attention.to_q"):
            base = name.removesuffix(".to_q")
            table.append((base + ".qkv", tuple(f"{base}.to_{x}" for x in "qkv"), False))
        else:
            table.append((_renamed(name + ".", backwards=True)[:-1], (name,), False))
    return parts.lora_targets(transformer, table, "lora_unet_")
