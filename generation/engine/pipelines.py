"""The diffusers pipeline each run uses, built from a cached model's modules: no copy, no reload."""

import functools
import inspect

from .schedulers import make_scheduler

PIPELINE_CLASSES = {  # (SDXL?, task) -> diffusers class name
    (False, "txt2img"): "StableDiffusionPipeline", (False, "img2img"): "StableDiffusionImg2ImgPipeline",
    (False, "inpaint"): "StableDiffusionInpaintPipeline", (True, "txt2img"): "StableDiffusionXLPipeline",
    (True, "img2img"): "StableDiffusionXLImg2ImgPipeline", (True, "inpaint"): "StableDiffusionXLInpaintPipeline",
    (False, "controlnet"): "StableDiffusionControlNetPipeline",
    (False, "controlnet-img2img"): "StableDiffusionControlNetImg2ImgPipeline",
    (True, "controlnet"): "StableDiffusionXLControlNetPipeline",
    (True, "controlnet-img2img"): "StableDiffusionXLControlNetImg2ImgPipeline",
}


FLUX_PIPELINES = {"txt2img": "FluxPipeline", "img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline",
                  "controlnet": "FluxControlNetPipeline", "controlnet-img2img": "FluxControlNetImg2ImgPipeline"}
SD3_PIPELINES = {"txt2img": "StableDiffusion3Pipeline", "img2img": "StableDiffusion3Img2ImgPipeline",
                 "inpaint": "StableDiffusion3InpaintPipeline"}
ZIMAGE_PIPELINES = {"txt2img": "ZImagePipeline", "img2img": "ZImageImg2ImgPipeline", "inpaint": "ZImageInpaintPipeline"}
TRANSFORMER_PIPELINES = {"FluxPipeline": FLUX_PIPELINES, "StableDiffusion3Pipeline": SD3_PIPELINES,
                         "ZImagePipeline": ZIMAGE_PIPELINES}


def pipeline_for_run(base, scheduler_name: str, seeds: list[int], task: str = "txt2img", *,
                     per_sample_guidance: bool = False, **extra):
    """The cached pipeline's modules, as the pipeline for `task` (txt2img, img2img, inpaint,
    controlnet, controlnet-img2img), with a scheduler of this run's own: runs share no state.
    `per_sample_guidance`: a txt2img pipeline taking a CFG scale per sample (see below)."""
    import diffusers

    components = {**base.components, **extra,
                  "scheduler": make_scheduler(scheduler_name, base.scheduler.config, seeds)}
    if kinds := next((kinds for name, kinds in TRANSFORMER_PIPELINES.items() if isinstance(base, getattr(diffusers, name))),
                     None):
        cls = getattr(diffusers, kinds[task])
        takes = inspect.signature(cls.__init__).parameters  # (FLUX's ControlNet img2img has no image encoder)
        pipe = (with_sample_guidance(cls) if per_sample_guidance else cls)(
            **{name: module for name, module in components.items() if name in takes})
        pipe.set_progress_bar_config(disable=True)
        return pipe
    xl = "text_encoder_2" in components
    if task == "txt2img" and isinstance(base, diffusers.StableDiffusionXLImg2ImgPipeline):
        task = "img2img"  # a refiner
    options = {"requires_safety_checker": False}
    if xl:
        options = {"add_watermarker": False}
        if task not in ("txt2img", "controlnet"):
            options["requires_aesthetics_score"] = bool(base.config.get("requires_aesthetics_score", False))
    cls = getattr(diffusers, PIPELINE_CLASSES[xl, task])
    if per_sample_guidance:
        cls = with_sample_guidance(cls)
    pipe = cls(**components, **options)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@functools.cache
def with_sample_guidance(cls):
    """`cls` (a diffusers SD, SDXL or SD 3.5 pipeline) with a CFG scale for each sample: the pipelines
    read `guidance_scale` as one number; here it is `sample_guidance`, shaped (B, 1, 1, 1), which
    their `uncond + scale * (text - uncond)` broadcasts over the batch."""

    class PerSampleGuidance(cls):
        sample_guidance = None

        @property
        def guidance_scale(self):
            return self.sample_guidance

        @property
        def do_classifier_free_guidance(self):
            return True

    PerSampleGuidance.__name__ = PerSampleGuidance.__qualname__ = cls.__name__
    return PerSampleGuidance
