"""The engine as this worker process runs it, from settings.SDWEB: the batch limit, the process-wide
options (pipeline cache budget, torch threads, previews, the safety checker) and the warm-up."""

import functools
import logging

import torch
from django.conf import settings

from generation.engine.batch import generate_batch
from generation.engine.loading import PIPELINES, compile_unet
from generation.engine.previews import PreviewSettings
from generation.engine.request import GenerationRequest
from generation.engine.safety import DiffusersSafetyChecker
from generation.jobs.validation import engine_limits
from generation.library.selectors import default_checkpoint

log = logging.getLogger(__name__)


def batch_image_limit() -> int:
    """SDWEB_BATCH_MAX: images denoised together, from jobs of any user; 0 = 8 on a GPU, 1 (no
    batching) on the CPU, where a batch takes as long as its images one after another."""
    configured = settings.SDWEB["BATCH_MAX"]
    device = settings.SDWEB["DEVICE"] or ("cuda" if torch.cuda.is_available() else "cpu")
    return configured or (8 if device.startswith("cuda") else 1)


def engine_configure() -> dict:
    """Apply SDWEB's process-wide engine settings (the pipeline cache's budget, torch's threads) and
    return the options `generate` takes."""
    options = settings.SDWEB
    PIPELINES.budget_bytes = options["PIPELINE_CACHE_BYTES"]
    PIPELINES.quantize, PIPELINES.t5_device = options["QUANTIZE"], options["T5_DEVICE"]
    if torch.get_num_threads() != options["TORCH_THREADS"]:
        torch.set_num_threads(options["TORCH_THREADS"])
    return {
        "limits": engine_limits(),
        "preview": PreviewSettings(max_edge=options["PREVIEW_MAX_EDGE"], min_interval=options["PREVIEW_INTERVAL"],
                                   format=options["PREVIEW_FORMAT"], taesd=options["TAESD"] or None,
                                   taef1=options["TAEF1"] or None, taesd3=options["TAESD3"] or None),
        "checker": image_checker(options["SAFETY_CHECKER"]),
        "device": options["DEVICE"] or None,
        "dtype": options["DTYPE"] or None,
    }


def engine_warm_up() -> None:
    """SDWEB_COMPILE=1: before the worker takes its first job, compile the default checkpoint's UNet
    and run each of SDWEB_COMPILE_SIZES at batch 1 and at the batch limit, so no user waits for a
    compilation (a size not listed compiles on its first job)."""
    checkpoint = default_checkpoint()
    if not settings.SDWEB["COMPILE"] or checkpoint is None:
        return
    options = engine_configure()
    model = PIPELINES.get(checkpoint.model_ref(), options["device"], options["dtype"])
    compile_unet(model)
    for width, height in settings.SDWEB["COMPILE_SIZES"]:
        for count in sorted({1, batch_image_limit()}):
            generate_batch([GenerationRequest(prompt="warm-up", model=checkpoint.model_ref(), width=width,
                                              height=height, steps=2, seed=k) for k in range(count)],
                           device=options["device"], dtype=options["dtype"])
        log.info("compiled for %dx%d", width, height)


@functools.lru_cache(maxsize=2)
def image_checker(setting: str):
    """SDWEB_SAFETY_CHECKER: "off", or a StableDiffusionSafetyChecker folder (loaded once)."""
    return None if setting in ("", "off") else DiffusersSafetyChecker(setting)
