"""generate(): one txt2img run, written as the steps it takes."""

import dataclasses
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from .families import FAMILIES
from .loading import PIPELINES, load_pipeline
from .metadata import format_parameters, save_png
from .previews import PreviewSettings, PreviewThrottle, encode_preview, latents_to_rgb, load_taesd
from .prompts import encode_prompts, encode_prompts_xl
from .request import GenerationRequest, Limits, model_ref
from .schedulers import make_scheduler
from .watermark import PAYLOAD_BYTES, embed_watermark


class GenerationCancelled(Exception):
    """should_cancel() said stop; nothing half-made is returned."""


@dataclass
class GenerationResult:
    request: GenerationRequest  # with the seed that was used
    images: list[Image.Image]  # only images cleared by the safety checker
    seeds: list[int]  # one per image above
    indexes: list[int]  # each image's position in the batch (0..num_images-1)
    flagged: list[int] = field(default_factory=list)  # batch positions withheld as unsafe
    model_name: str = ""
    model_hash: str = ""
    refiner: str = ""  # "name [hash]"
    vae: tuple | None = None  # (file name, hash) of a VAE file used instead of the checkpoint's own
    timings: dict = field(default_factory=dict)  # seconds

    def parameters(self, k: int) -> str:
        """The A1111-style infotext of image k."""
        r = self.request
        return format_parameters(
            prompt=r.prompt, negative_prompt=r.negative_prompt, steps=r.steps, scheduler=r.scheduler,
            guidance_scale=r.guidance_scale, seed=self.seeds[k], width=r.width, height=r.height,
            model_hash=self.model_hash, model_name=self.model_name, extra=self._extra(),
        )

    def _extra(self) -> dict:
        """What A1111 adds after the model, when it differs from the default."""
        extra = {"VAE hash": self.vae[1], "VAE": self.vae[0]} if self.vae else {}
        if self.request.clip_skip > 1:
            extra["Clip skip"] = self.request.clip_skip
        if self.refiner:
            extra |= {"Refiner": self.refiner, "Refiner switch at": self.request.refiner_switch_at}
        return extra

    def save_png(self, k: int, fp, image_id: str = "") -> None:
        save_png(self.images[k], fp, self.parameters(k), image_id)


def generate(
    request: GenerationRequest,
    *,
    on_preview=None,
    should_cancel=None,
    watermark_payloads: list[bytes] | None = None,
    preview: PreviewSettings | None = None,
    checker=None,
    device=None,
    dtype=None,
    limits: Limits | None = None,
) -> GenerationResult:
    """Turn `request` into images. `on_preview(step, total_steps, image_bytes)` gets throttled
    previews; `should_cancel()` is asked every step and stops the run with GenerationCancelled;
    `watermark_payloads` holds one 8-byte payload per image; `checker` is an ImageChecker, or None
    for no check."""
    timings, started = {}, time.perf_counter()
    should_cancel = should_cancel or (lambda: False)
    preview = preview or PreviewSettings()

    # 1. Check the input before any work.
    request.validate(limits)
    if watermark_payloads is not None and (
        len(watermark_payloads) != request.num_images
        or any(not isinstance(p, bytes) or len(p) != PAYLOAD_BYTES for p in watermark_payloads)
    ):
        raise ValueError(f"watermark_payloads must hold one {PAYLOAD_BYTES}-byte payload per image")
    seeds = request.seeds()
    request = dataclasses.replace(request, seed=seeds[0])

    # 2. Load the model, and the refiner if one is asked for (a cache hit costs nothing).
    tick = time.perf_counter()
    model = load_pipeline(request.model, device=device, dtype=dtype)
    refiner = load_pipeline(request.refiner, device=device, dtype=dtype) if request.refiner else None
    vae = PIPELINES.get_vae(request.vae, model) if request.vae else None
    _check_roles(model, refiner)
    timings["load"] = time.perf_counter() - tick
    pipe = _pipeline_for_run(model.pipe, request.scheduler, seeds)

    # 3. Encode the prompts, A1111 weights and long prompts included.
    tick = time.perf_counter()
    embeds = _encode(pipe, model, request)
    timings["text_encode"] = time.perf_counter() - tick

    # 4. Denoise, sending previews and honouring cancel at every step; the refiner takes over
    # at its switch point with the same generators.
    taesd = load_taesd(preview.taesd, model.device, model.dtype) if preview.taesd and on_preview else None
    throttle = PreviewThrottle(preview.min_interval)
    cancelled, steps_before = False, 0

    def on_step_end(pipe, i, t, tensors):
        nonlocal cancelled
        if should_cancel():
            cancelled = pipe._interrupt = True  # the pipeline skips every later step
        elif on_preview is not None and throttle.should_send(steps_before + i + 1, request.steps):
            on_preview(steps_before + i + 1, request.steps,
                       encode_preview(latents_to_rgb(tensors["latents"], taesd), preview, blur=checker is not None))
        return {}

    if should_cancel():
        raise GenerationCancelled()
    tick = time.perf_counter()
    # One CPU generator per image: image k is reproducible alone with seed s+k, on any device.
    generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    common = dict(num_inference_steps=request.steps, guidance_scale=request.guidance_scale, generator=generators,
                  output_type="latent", callback_on_step_end=on_step_end)
    latents = pipe(**embeds, width=request.width, height=request.height, num_images_per_prompt=request.num_images,
                   **common, **({"denoising_end": request.refiner_switch_at} if refiner else {})).images
    if refiner is not None and not cancelled:
        steps_before = pipe.num_timesteps
        pipe = _pipeline_for_run(refiner.pipe, request.scheduler, seeds, img2img=True)
        latents = pipe(image=latents, **_encode(pipe, refiner, request), denoising_start=request.refiner_switch_at,
                       **common).images
    timings["denoise"] = time.perf_counter() - tick
    if cancelled:
        raise GenerationCancelled()

    # 5. Decode.
    tick = time.perf_counter()
    decoder = vae.pipe if vae else pipe.vae
    with torch.no_grad():
        # An SDXL VAE stays in float32 (loading.py); the latents follow it.
        decoded = decoder.decode(latents.to(decoder.dtype) / decoder.config.scaling_factor, return_dict=False)[0]
    images = pipe.image_processor.postprocess(decoded, output_type="pil")
    timings["decode"] = time.perf_counter() - tick

    # 6. Safety check: fail closed, and never return a flagged image as a normal one.
    tick = time.perf_counter()
    flags = [False] * len(images)
    if checker is not None:
        try:
            flags = [bool(f) for f in checker.check(images)]
        except Exception as error:
            raise RuntimeError(f"the safety checker failed, so no image is returned: {error}") from error
        if len(flags) != len(images):
            raise RuntimeError("the safety checker gave a verdict count that doesn't match the images")
    timings["safety"] = time.perf_counter() - tick
    kept = [k for k, flagged in enumerate(flags) if not flagged]

    # 7. Watermark each kept image with its own payload.
    tick = time.perf_counter()
    if watermark_payloads is not None:
        images = [embed_watermark(im, watermark_payloads[k]) if k in kept else im for k, im in enumerate(images)]
    timings["watermark"] = time.perf_counter() - tick
    timings["total"] = time.perf_counter() - started

    return GenerationResult(
        request=request,
        images=[images[k] for k in kept],
        seeds=[seeds[k] for k in kept],
        indexes=kept,
        flagged=[k for k, flagged in enumerate(flags) if flagged],
        # The caller's name and hash win: the cache is keyed by the file, not by what it is called.
        model_name=model_ref(request.model).name or model.name,
        model_hash=model_ref(request.model).hash or model.hash,
        refiner=_title(request.refiner, refiner),
        vae=(model_ref(request.vae).name or vae.name, model_ref(request.vae).hash or vae.hash) if vae else None,
        timings=timings,
    )


def _title(ref, model) -> str:
    if model is None:
        return ""
    ref = model_ref(ref)
    return f"{ref.name or model.name} [{ref.hash or model.hash}]"


def _check_roles(model, refiner) -> None:
    family = FAMILIES.get(model.family)
    if family is not None and family.role != "txt2img":
        raise ValueError(f"model {model.name!r} is {family.label}: it can't make an image from text alone")
    if refiner is not None and not (model.xl and refiner.xl and FAMILIES[refiner.family].role != "inpaint"):
        raise ValueError(f"refiner {refiner.name!r} can't refine {model.name!r}: the refiner is for SDXL models and "
                         "must be an SDXL refiner or base")


def _encode(pipe, model, request) -> dict:
    """The prompt embeddings as the pipeline takes them."""
    device = model.device
    if not model.xl:
        # Clip skip changes SD 1.x's CLIP-L; SD 2.x keeps its trained layer, as in A1111.
        clip_skip = request.clip_skip if pipe.text_encoder.config.hidden_act == "quick_gelu" else 1
        positive, negative = encode_prompts(pipe.tokenizer, pipe.text_encoder, request.prompt,
                                            request.negative_prompt, device, clip_skip=clip_skip)
        return {"prompt_embeds": positive, "negative_prompt_embeds": negative}
    encoders = [(pipe.tokenizer, pipe.text_encoder)] if pipe.text_encoder is not None else []
    positive, negative, pooled, negative_pooled = encode_prompts_xl(
        encoders + [(pipe.tokenizer_2, pipe.text_encoder_2)], request.prompt, request.negative_prompt, device)
    return {"prompt_embeds": positive, "negative_prompt_embeds": negative, "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": negative_pooled}


def _pipeline_for_run(base, scheduler_name: str, seeds: list[int], img2img: bool = False):
    """The cached pipeline's modules with a scheduler of this run's own: runs share no state."""
    import diffusers

    components = {**base.components, "scheduler": make_scheduler(scheduler_name, base.scheduler.config, seeds)}
    if isinstance(base, diffusers.StableDiffusionXLImg2ImgPipeline) or img2img:
        pipe = diffusers.StableDiffusionXLImg2ImgPipeline(
            **components, add_watermarker=False,
            requires_aesthetics_score=bool(base.config.get("requires_aesthetics_score", False)))
    elif isinstance(base, diffusers.StableDiffusionXLPipeline):
        pipe = diffusers.StableDiffusionXLPipeline(**components, add_watermarker=False)
    else:
        pipe = type(base)(**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe
