"""Steps every run takes, alone (run.py) or batched (batch.py): the add-ons loaded and checked, the
model's role checked, the prompts encoded, the latents decoded."""

import contextlib

import torch
from PIL import Image

from . import flux, sd3, zimage
from .addons import Addons
from .families import FAMILIES, refiner_problem, role_problem
from .loading import PIPELINES
from .parts import check_request
from .prompts import BREAK, embeddings_named, encode_prompts_many, encode_prompts_xl_many, parse_attention
from .request import JobError


def load_addons(request, model) -> Addons:
    """Read (or find in the cache) the request's add-on files, checked against `model`."""
    loras = [(PIPELINES.get_addon("lora", use.ref, model.device, model.dtype), use) for use in request.loras]
    embeddings, hashes = {}, {}
    named = embeddings_named((ref.name for ref in request.embeddings), request.prompt, request.negative_prompt)
    for ref in request.embeddings:
        if ref.name.lower() in named:
            vectors = PIPELINES.get_addon("embedding", ref, model.device, model.dtype).value
            if (len(vectors) == 2) != model.xl:  # SDXL's hold a set for each of its two text encoders
                raise JobError(f"embedding {ref.name!r} is for another family ("
                                 f"{'SDXL' if len(vectors) == 2 else 'SD 1.x/2.x'})")
            embeddings[ref.name] = vectors
            hashes[ref.name] = ref.hash
    controlnets = [(PIPELINES.get_addon("controlnet", unit.model, model.device, model.dtype), unit)
                   for unit in request.controlnets]
    return Addons(loras, embeddings, hashes, controlnets)


TILE_ABOVE_PIXELS = 1536 * 1536  # a bigger image is decoded in tiles, a bigger batch one image at a time


def decode(vae, image_processor, latents) -> list[Image.Image]:
    pixels = latents.shape[-2] * latents.shape[-1] * 4 ** (len(vae.config.block_out_channels) - 1)
    if hasattr(vae, "use_tiling"):  # the VAE's activations grow with the pixels: bound them (VRAM)
        vae.use_tiling, vae.use_slicing = pixels > TILE_ABOVE_PIXELS, pixels * len(latents) > TILE_ABOVE_PIXELS
    with torch.no_grad():
        # An SDXL VAE stays in float32 (loading.py); the latents follow it. FLUX's VAE also shifts them.
        latents = latents.to(vae.dtype) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", 0) or 0)
        decoded = vae.decode(latents, return_dict=False)[0]
        return to_pictures(image_processor, decoded)


def to_pictures(image_processor, decoded: torch.Tensor) -> list[Image.Image]:
    """The VAE's output as 8-bit pictures, as the pipelines' postprocess(output_type="pil") makes
    them, but made where they were decoded: the host copies a quarter of the bytes and does none of
    the float work (on a GPU this ran on the denoising thread while the GPU waited)."""
    pictures = image_processor.postprocess(decoded, output_type="pt")  # [0, 1], on the device
    pixels = (pictures.float() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(picture) for picture in pixels]


def check_roles(model, refiner, request) -> None:
    """Whether `model` (and `refiner`) can run `request`: its mode, and what FLUX.1 and SD 3.5 take."""
    if problem := role_problem(model.family, request.mode):
        raise JobError(f"model {model.name!r} {problem}")
    if refiner is not None and (problem := refiner_problem(model.family, refiner.family)):
        raise JobError(f"refiner {refiner.name!r} can't refine {model.name!r}: {problem}")
    if model.transformer:
        check_request(request, model.group)


def encode(pipe, model, request, embeddings=None) -> dict:
    """The prompt embeddings as the pipeline takes them."""
    return encode_many(pipe, model, [request], [embeddings])[0]


def encode_many(pipe, model, requests, embeddings) -> list[dict]:
    """encode for each request (and its embeddings), each text encoder run once for them all."""
    device, pairs = model.device, [(r.prompt, r.negative_prompt, e) for r, e in zip(requests, embeddings)]
    if model.transformer:
        with big_encoder_near(pipe, model):
            if model.flux:
                return [encode_flux(pipe, model, r.prompt) for r in requests]
            return [(sd3 if model.sd3 else zimage).encode(pipe, plain(r.prompt), plain(r.negative_prompt), device)
                    for r in requests]
    if not model.xl:
        # Clip skip changes SD 1.x's CLIP-L; SD 2.x keeps its trained layer, as in A1111 (one per run: the batch key).
        clip_skip = requests[0].clip_skip if pipe.text_encoder.config.hidden_act == "quick_gelu" else 1
        return [{"prompt_embeds": positive, "negative_prompt_embeds": negative} for positive, negative in
                encode_prompts_many(pipe.tokenizer, pipe.text_encoder, pairs, device, clip_skip=clip_skip)]
    encoders = [(pipe.tokenizer, pipe.text_encoder)] if pipe.text_encoder is not None else []
    return [{"prompt_embeds": positive, "negative_prompt_embeds": negative, "pooled_prompt_embeds": pooled,
             "negative_pooled_prompt_embeds": negative_pooled} for positive, negative, pooled, negative_pooled in
            encode_prompts_xl_many(encoders + [(pipe.tokenizer_2, pipe.text_encoder_2)], pairs, device)]


def encode_flux(pipe, model, prompt: str) -> dict:
    """FLUX's conditioning from the prompt's plain text."""
    return flux.encode(pipe, plain(prompt), 512 if model.family == "flux-dev" else 256, model.device)


@contextlib.contextmanager
def big_encoder_near(pipe, model):
    """With SDWEB_T5_DEVICE=offload, the large text encoder (T5, Qwen3) on the model's device for the
    prompts' encoding only, back on the CPU after: its GPU memory is the run's again."""
    encoder = getattr(pipe, FAMILIES[model.family].big_encoder)
    offloaded = PIPELINES.t5_device == "offload" and model.device.type != "cpu"
    if offloaded:
        encoder.to(model.device)
    try:
        yield
    finally:
        if offloaded:
            encoder.to("cpu")


def plain(prompt: str) -> str:
    """A prompt's text without A1111's attention brackets and BREAK (their weights are not applied to T5)."""
    return "".join(t if w != BREAK else " " for t, w in parse_attention(prompt))
