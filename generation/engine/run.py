"""generate(): one run (txt2img, img2img or inpaint), written as the steps it takes."""

import dataclasses
import functools
import time
from dataclasses import dataclass, field

import torch
from PIL import Image

from . import flux, sd3, zimage
from .addons import Addons, applied_loras, controlled_run
from .esrgan import esrgan_upscale
from .images import paste_back
from .img2img import Start, from_image, prepare_start
from .loading import PIPELINES, load_pipeline
from .metadata import format_parameters, save_png
from .noise import variation_noise
from .pipelines import pipeline_for_run
from .previews import PreviewMaker, PreviewSettings, PreviewThrottle, tiny_decoder
from .prompts import prompt_schedule
from .request import (
    LATENT_UPSCALERS,
    MASKED_CONTENT,
    PIXEL_UPSCALERS,
    RESIZE_MODES,
    GenerationRequest,
    JobError,
    Limits,
    model_ref,
)
from .steps import check_roles, decode, encode, load_addons
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
    addons: "Addons | None" = None
    timings: dict = field(default_factory=dict)  # seconds
    batch_size: int = 1  # how many jobs were denoised together (batch.py)
    flux: str = ""  # the FLUX.1 family that made it ("flux-dev", "flux-schnell"), else ""

    def parameters(self, k: int) -> str:
        """The A1111-style infotext of image k."""
        r = self.request
        return format_parameters(
            prompt=r.prompt, negative_prompt=r.negative_prompt, steps=r.steps, scheduler=r.scheduler,
            guidance_scale=1 if self.flux else r.guidance_scale, seed=self.seeds[k], width=r.width, height=r.height,
            model_hash=self.model_hash, model_name=self.model_name, extra=self._extra() | ({
                "Variation seed": r.subseeds()[self.indexes[k]], "Variation seed strength": r.subseed_strength}
                if r.subseed_strength else {}),
        )

    def _extra(self) -> dict:
        """What A1111 adds after the model, when it differs from the default."""
        extra = {"VAE hash": self.vae[1], "VAE": self.vae[0]} if self.vae else {}
        if self.flux == "flux-dev":  # as Forge writes it
            extra["Distilled CFG Scale"] = self.request.distilled_guidance_scale
        if self.request.clip_skip > 1:
            extra["Clip skip"] = self.request.clip_skip
        if self.refiner:
            extra |= {"Refiner": self.refiner, "Refiner switch at": self.request.refiner_switch_at}
        extra |= _image_input_params(self.request) | _hires_params(self.request)
        return extra | (self.addons.parameters() if self.addons else {})

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
    """Turn `request` into images: from text (txt2img, with hires fix or a refiner), from a
    starting image (img2img) or repainting under a mask (inpaint). `on_preview(step, total_steps,
    image_bytes)` gets throttled previews over all passes; `should_cancel()` is asked every step and
    stops the run with GenerationCancelled; `watermark_payloads` holds one 8-byte payload per image;
    `checker` is an ImageChecker, or None for no check."""
    timings, started = {}, time.perf_counter()

    # 1. Check the input before any work.
    request, seeds = _checked(request, limits, watermark_payloads)

    # 2. Load the model, and the refiner if one is asked for (a cache hit costs nothing).
    tick = time.perf_counter()
    model = load_pipeline(request.model, device=device, dtype=dtype)
    refiner = load_pipeline(request.refiner, device=device, dtype=dtype) if request.refiner else None
    vae = PIPELINES.get_vae(request.vae, model) if request.vae else None
    check_roles(model, refiner, request)
    pipe = pipeline_for_run(model.pipe, request.scheduler, seeds, "inpaint" if request.mask else "txt2img")

    addons = load_addons(request, model)
    timings["load"] = time.perf_counter() - tick

    # 3. Merge the LoRAs for this run only: the weights are put back however it ends.
    tick = time.perf_counter()
    with applied_loras(model.pipe, addons.loras):
        timings["addons"] = time.perf_counter() - tick

        # 4. Encode the prompts, A1111 weights, long prompts and embeddings included.
        tick = time.perf_counter()
        schedule = PromptSchedule(request, lambda prompt, negative: encode(pipe, model, dataclasses.replace(
            request, prompt=prompt, negative_prompt=negative), addons.embeddings)) if request.scheduled else None
        embeds = schedule.embeds(1) if schedule else encode(pipe, model, request, addons.embeddings)
        timings["text_encode"] = time.perf_counter() - tick

        # 5. Denoise, sending previews and honouring cancel at every step of every pass.
        progress = Progress(sum(p[2] for p in request.passes()), on_preview, should_cancel, preview or PreviewSettings(),
                            tiny_decoder(preview, model, on_preview is not None), blur=checker is not None,
                            schedule=schedule)
        if progress.stopped():
            raise GenerationCancelled()
        tick = time.perf_counter()
        common = _pipeline_arguments(request, seeds, progress, embeds, xl=model.xl)
        start = prepare_start(request) if request.init_image is not None else None
        try:
            if model.transformer:
                latents, pipe = _transformer(model, request, common, embeds, progress, start, addons.controlnets)
            elif addons.controlnets:
                latents, pipe = controlled_run(model, request, start, common, addons.controlnets)
            elif request.mode == "txt2img":
                latents, pipe = _txt2img(pipe, model, refiner, request, common, progress)
            else:
                latents = from_image(pipe, model, request, start, common)
        finally:
            progress.previews.wait()  # every preview is out before the run's end is told
        timings["denoise"] = time.perf_counter() - tick
        timings["callbacks"] = progress.spent
    if progress.cancelled:
        raise GenerationCancelled()

    # 6. Decode; an inpainted picture goes back over the original through the blurred mask.
    tick = time.perf_counter()
    images = decode(vae.pipe if vae else pipe.vae, pipe.image_processor, latents)
    if request.mask is not None:
        images = [paste_back(start.original, im, start.blurred_mask, start.crop) for im in images]
    timings["decode"] = time.perf_counter() - tick

    # 7. Safety check, then each kept image watermarked.
    return checked_result(request, images, seeds, model=model, vae=vae, addons=addons, checker=checker,
                          timings=timings, started=started, payloads=watermark_payloads, refiner=refiner)


def _checked(request: GenerationRequest, limits, payloads) -> tuple[GenerationRequest, list[int]]:
    """The request checked, with its seeds fixed (so the infotext names the ones used)."""
    request.validate(limits)
    if payloads is not None and (len(payloads) != request.num_images
                                 or any(not isinstance(p, bytes) or len(p) != PAYLOAD_BYTES for p in payloads)):
        raise ValueError(f"watermark_payloads must hold one {PAYLOAD_BYTES}-byte payload per image")
    seeds = request.seeds()
    return dataclasses.replace(request, seed=seeds[0], subseed=request.subseeds()[0]), seeds


def _pipeline_arguments(request, seeds, progress, embeds, *, xl: bool) -> dict:
    """What every pass's pipeline call takes. One CPU generator per image: image k is reproducible
    alone with seed s+k, on any device."""
    scheduled = {"callback_on_step_end_tensor_inputs": ["latents", "prompt_embeds", *(["add_text_embeds"] if xl else [])]}
    return dict(num_inference_steps=request.steps, guidance_scale=request.guidance_scale,
                num_images_per_prompt=request.num_images, generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
                output_type="latent", callback_on_step_end=progress.on_step_end, **embeds,
                **(scheduled if progress.schedule else {}))


def _transformer(model, request, common, embeds, progress, start, controlnets=()):
    """FLUX.1's, SD 3.5's or Z-Image's run (its module's denoise), its prompt's embeddings once for
    each image (Z-Image's are lists); with hires fix, a second pass from the first's latents upscaled
    (or its pictures), with fresh generators."""
    denoise = {"FLUX.1": flux, "SD 3.5": sd3, "Z-Image": zimage}[model.group].denoise
    n = request.num_images
    embeds = {k: [e for e in v for _ in range(n)] if isinstance(v, list) else v.repeat_interleave(n, 0)
              for k, v in embeds.items()}
    if request.subseed_strength:  # FLUX.1 takes its starting noise packed in 2x2 patches
        noise = variation_noise(model.pipe, request, common["generator"], model)
        embeds["latents"] = model.pipe._pack_latents(noise, *noise.shape) if model.flux else noise
    latents, pipe = denoise(model, request, common["generator"], progress, embeds, start,
                            **({"controlnets": controlnets} if controlnets else {}))
    if request.enable_hr and not progress.cancelled:
        progress.pass_ended(pipe)
        upscaled = _upscaled(pipe, model, latents, request)
        width, height = request.hires_size()
        second = dataclasses.replace(request, width=width, height=height, init_image=upscaled,
                                     steps=request.hr_second_pass_steps or request.steps)
        generators = [torch.Generator("cpu").manual_seed(g.initial_seed()) for g in common["generator"]]
        latents, pipe = denoise(model, second, generators, progress, embeds, Start(upscaled))
    return latents, pipe


def checked_result(request, images, seeds, *, model, vae, addons, checker, timings, started, payloads=None,
                   refiner=None) -> GenerationResult:
    """The last steps of every run: the safety check (fail closed: a flagged image is never
    returned as a normal one), then each kept image watermarked with its own payload."""
    tick = time.perf_counter()
    flags = [False] * len(images)
    if checker is not None:
        try:
            flags = [bool(f) for f in checker.check(images)]
        except Exception as error:
            raise JobError("the safety checker failed, so no image is returned") from error
        if len(flags) != len(images):
            raise JobError("the safety checker gave a verdict count that doesn't match the images")
    timings["safety"] = time.perf_counter() - tick
    kept = [k for k, flagged in enumerate(flags) if not flagged]

    tick = time.perf_counter()
    if payloads is not None:
        images = [embed_watermark(im, payloads[k]) if k in kept else im for k, im in enumerate(images)]
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
        addons=addons,
        timings=timings,
        flux=model.family if model.flux else "",
    )


class Progress:
    """The step callback of every pass: one preview count over the whole job, and cancel."""

    def __init__(self, total, on_preview, should_cancel, preview, taesd, blur, schedule=None):
        self.total, self.on_preview, self.should_cancel = total, on_preview, should_cancel or (lambda: False)
        self.schedule = schedule
        self.previews = PreviewMaker(preview, taesd, blur)
        self.throttle = PreviewThrottle(preview.min_interval)
        self.done, self.cancelled = 0, False  # steps of the passes before this one
        self.spent = 0.0  # seconds in this callback (cancel checks, previews): the caller's, not the denoiser's

    def stopped(self) -> bool:
        self.cancelled = self.cancelled or self.should_cancel()
        return self.cancelled

    def on_step_end(self, pipe, i, t, tensors):
        tick = time.perf_counter()
        if self.stopped():
            pipe._interrupt = True  # the pipeline skips every later step
        elif self.on_preview is not None and self.throttle.should_send(self.done + i + 1, self.total):
            self.previews.send(tensors["latents"], functools.partial(self.on_preview, self.done + i + 1, self.total))
        self.spent += time.perf_counter() - tick
        return self.schedule.after_step(pipe, i) if self.schedule else {}

    def pass_ended(self, pipe) -> None:
        self.done += pipe.num_timesteps


class PromptSchedule:
    """Prompt editing and alternation (prompts.prompt_schedule): each distinct pair of prompts is
    encoded once, and after each step the pipeline is handed the next step's conditioning when it
    changes. A pass counts its steps from 1 over `steps` (hires fix's second pass: its own)."""

    def __init__(self, request, encode):
        self.request, self.encode, self.encoded = request, encode, {}
        self.use_steps(request.steps)

    def use_steps(self, steps: int) -> None:
        self.steps = steps
        self.schedules = [prompt_schedule(text, steps) for text in (self.request.prompt, self.request.negative_prompt)]

    def texts(self, step: int) -> tuple[str, str]:
        return tuple(next(text for last, text in schedule if step <= last) for schedule in self.schedules)

    def embeds(self, step: int) -> dict:
        texts = self.texts(min(step, self.steps))
        if texts not in self.encoded:
            self.encoded[texts] = self.encode(*texts)
        return self.encoded[texts]

    def after_step(self, pipe, i: int) -> dict:
        """At the end of step i (from 0): the tensors of step i + 2 (from 1) when its prompts differ."""
        if i + 2 > self.steps or self.texts(i + 2) == self.texts(i + 1):
            return {}
        embeds, n = self.embeds(i + 2), self.request.num_images

        def for_pipe(negative, positive):  # each prompt once per image; with guidance, the negatives first
            positive, negative = positive.repeat_interleave(n, 0), negative.repeat_interleave(n, 0)
            return torch.cat([negative, positive]) if pipe.do_classifier_free_guidance else positive

        updates = {"prompt_embeds": for_pipe(embeds["negative_prompt_embeds"], embeds["prompt_embeds"])}
        if "pooled_prompt_embeds" in embeds:
            updates["add_text_embeds"] = for_pipe(embeds["negative_pooled_prompt_embeds"], embeds["pooled_prompt_embeds"])
        return updates


def _txt2img(pipe, model, refiner, request, common, progress):
    """The first pass from noise; then the refiner from its switch point, or hires fix's second
    pass on the upscaled latents. Returns the latents and the pipeline whose VAE decodes them."""
    varied = {"latents": variation_noise(pipe, request, common["generator"], model)} if request.subseed_strength else {}
    latents = pipe(width=request.width, height=request.height, **common, **varied,
                   **({"denoising_end": request.refiner_switch_at} if refiner else {})).images
    progress.pass_ended(pipe)
    seeds = [g.initial_seed() for g in common["generator"]]
    if refiner is not None and not progress.cancelled:
        pipe = pipeline_for_run(refiner.pipe, request.scheduler, seeds, "img2img")
        latents = pipe(image=latents, **{**common, **encode(pipe, refiner, request)},
                       denoising_start=request.refiner_switch_at).images
    elif request.enable_hr and not progress.cancelled:
        image = _upscaled(pipe, model, latents, request)
        pipe = pipeline_for_run(model.pipe, request.scheduler, seeds, "img2img")
        if progress.schedule:  # the second pass follows the prompts' schedule over its own steps
            progress.schedule.use_steps(request.hr_second_pass_steps or request.steps)
        # Fresh generators with the same seeds: the second pass is reproducible on its own.
        latents = pipe(image=image, strength=request.denoising_strength, **{
            **common, "num_inference_steps": request.hr_second_pass_steps or request.steps,
            "generator": [torch.Generator("cpu").manual_seed(s) for s in seeds],
            **(progress.schedule.embeds(1) if progress.schedule else {})}).images
    return latents, pipe


def _upscaled(pipe, model, latents, request):
    """Hires fix's upscale: the latents interpolated, or decoded, resized in pixels (or by an
    upscaler model) and given back as pictures for the second pass to encode."""
    width, height = request.hires_size()
    if request.hr_upscaler in LATENT_UPSCALERS:
        mode, antialias = LATENT_UPSCALERS[request.hr_upscaler]
        scale = pipe.vae_scale_factor
        return torch.nn.functional.interpolate(latents.float(), size=(height // scale, width // scale), mode=mode,
                                               antialias=antialias).to(latents.dtype)
    images = decode(pipe.vae, pipe.image_processor, latents)
    if request.hr_upscaler in PIXEL_UPSCALERS:
        return [im.resize((width, height), PIXEL_UPSCALERS[request.hr_upscaler]) for im in images]
    net = PIPELINES.get_addon("upscaler", request.upscaler_model, model.device, model.dtype).value
    return [esrgan_upscale(net, im, (width, height)) for im in images]


def _image_input_params(r: GenerationRequest) -> dict:
    if r.mode == "txt2img":
        return {}
    params = {"Denoising strength": r.denoising_strength}
    if r.resize_mode:
        params["Resize mode"] = RESIZE_MODES[r.resize_mode]
    if r.mode == "inpaint":
        params |= {"Mask blur": r.mask_blur, "Masked content": MASKED_CONTENT[r.inpainting_fill]}
        if r.inpaint_full_res:
            params |= {"Inpaint area": "Only masked", "Masked area padding": r.inpaint_full_res_padding}
        if r.inpainting_mask_invert:
            params["Mask mode"] = "Inpaint not masked"
    return params


def _hires_params(r: GenerationRequest) -> dict:
    """As A1111 writes them: Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent."""
    if not r.enable_hr:
        return {}
    params = {"Denoising strength": r.denoising_strength}
    params |= {"Hires resize": "{}x{}".format(*r.hires_size())} if r.hr_resize_x or r.hr_resize_y else {
        "Hires upscale": r.hr_scale}
    if r.hr_second_pass_steps:
        params["Hires steps"] = r.hr_second_pass_steps
    return params | {"Hires upscaler": r.hr_upscaler}


def _title(ref, model) -> str:
    if model is None:
        return ""
    ref = model_ref(ref)
    return f"{ref.name or model.name} [{ref.hash or model.hash}]"
