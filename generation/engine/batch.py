"""generate_batch(): compatible txt2img jobs, from different users, denoised as one run on the GPU.

Each job keeps what it would have had alone: its own prompts, seeds (one generator per image),
CFG scale (per sample: pipelines.with_sample_guidance), previews, cancel, safety verdict and
watermark. Its images equal the images of the same job run alone within float rounding."""

import dataclasses
import functools
import math
import time

import torch

from . import flux, sd3, zimage
from .addons import applied_loras
from .loading import PIPELINES, load_pipeline
from .pipelines import pipeline_for_run
from .previews import PreviewMaker, PreviewSettings, PreviewThrottle, tiny_decoder
from .request import GenerationRequest, batch_key
from .run import GenerationCancelled, checked_result
from .steps import check_roles, decode, encode, encode_many, load_addons


def generate_batch(requests: list[GenerationRequest], *, on_preview=None, should_cancel=None, watermark_payloads=None,
                   preview: PreviewSettings | None = None, checker=None, device=None, dtype=None, limits=None) -> list:
    """Run `requests` (all with one batch_key) as one denoising run. Returns, for each request, its
    GenerationResult or the exception that ended it alone (ValueError for its own bad input,
    GenerationCancelled once `should_cancel()` named it). `on_preview(k, step, total, bytes)` gets
    request k's previews; `should_cancel()` returns the indexes of the requests to drop (their
    samples run on, since multistep schedulers keep state per batch, and are dropped at the end);
    `watermark_payloads[k]` holds request k's payloads. An error of the whole run (the model won't
    load) is raised."""
    started, requests = time.perf_counter(), list(requests)
    if len({batch_key(r) for r in requests}) != 1 or batch_key(requests[0]) is None:
        raise ValueError("these requests can't be denoised as one batch")
    outcomes: list = [None] * len(requests)
    for k, request in enumerate(requests):
        try:
            request.validate(limits)
            requests[k] = dataclasses.replace(request, seed=request.seeds()[0])
        except ValueError as error:
            outcomes[k] = error
    first = requests[0]
    model = load_pipeline(first.model, device=device, dtype=dtype)
    vae = PIPELINES.get_vae(first.vae, model) if first.vae else None
    if model.flux and len({r.distilled_guidance_scale for r in requests}) > 1:
        raise ValueError("FLUX.1 requests with different distilled guidance can't be denoised as one batch")
    addons = [None] * len(requests)
    for k in _live(outcomes):
        try:
            check_roles(model, None, requests[k])
            addons[k] = load_addons(requests[k], model)
        except Exception as error:  # whatever a job brings (a damaged add-on file) fails that job only
            outcomes[k] = error
    timings = {"load": time.perf_counter() - started}

    live = _live(outcomes)
    if not live:
        return outcomes
    progress = BatchProgress(requests, on_preview, should_cancel, preview or PreviewSettings(),
                             tiny_decoder(preview, model, on_preview is not None), blur=checker is not None)
    with applied_loras(model.pipe, addons[live[0]].loras):
        tick = time.perf_counter()
        try:
            embeds = dict(zip(live, encode_many(model.pipe, model, [requests[k] for k in live],
                                                [addons[k].embeddings for k in live])))
        except Exception:  # one job's prompt or embedding: each alone, so the error stays that job's own
            embeds = {}
            for k in live:
                try:
                    embeds[k] = encode(model.pipe, model, requests[k], addons[k].embeddings)
                except Exception as error:
                    outcomes[k] = error
        timings["text_encode"] = time.perf_counter() - tick
        tick = time.perf_counter()
        try:
            latents = denoise(model, requests, embeds, progress)
        finally:
            progress.previews.wait()
        timings["denoise"] = time.perf_counter() - tick
        timings["callbacks"] = progress.spent

    for k in list(latents):
        if k in progress.dropped:
            outcomes[k] = GenerationCancelled()
        elif isinstance(latents[k], Exception):  # out of memory even alone
            outcomes[k] = latents[k]
    tick = time.perf_counter()
    pictures = _decoded(vae.pipe if vae else model.pipe.vae, model.pipe.image_processor,
                        {k: v for k, v in latents.items() if outcomes[k] is None}, outcomes)
    timings["decode"] = time.perf_counter() - tick
    for k, images in pictures.items():
        try:
            outcomes[k] = checked_result(requests[k], images, requests[k].seeds(), model=model, vae=vae,
                                         addons=addons[k], checker=checker, timings=dict(timings), started=started,
                                         payloads=watermark_payloads[k] if watermark_payloads else None)
            outcomes[k].batch_size = len(latents)
        except Exception as error:  # this job's check or watermark failed: the others go on
            outcomes[k] = error
    for k in _live(outcomes):  # encoded, but never denoised: dropped before the run began
        outcomes[k] = GenerationCancelled()
    return outcomes


def _decoded(vae, image_processor, latents: dict, outcomes: list) -> dict:
    """{k: pictures} of every job, decoded in one VAE call; if that fails, each job alone, so a
    failure stays the job's own (its outcome)."""
    if not latents:
        return {}
    try:
        pictures = decode(vae, image_processor, torch.cat(list(latents.values())))
        counts = [len(v) for v in latents.values()]
        return {k: pictures[sum(counts[:i]):sum(counts[:i + 1])] for i, k in enumerate(latents)}
    except Exception:
        pass  # each alone, out of the handler (its traceback holds the batch's tensors)
    decoded = {}
    for k, one in latents.items():
        try:
            decoded[k] = decode(vae, image_processor, one)
        except Exception as error:
            outcomes[k] = error
    return decoded


def _live(outcomes) -> list[int]:
    return [k for k, outcome in enumerate(outcomes) if outcome is None]


def denoise(model, requests, embeds: dict, progress) -> dict:
    """{k: latents of request k, or the error that ended it} for the requests in `embeds`. Prompts
    of different lengths share a run only while that costs at most twice the longest
    (`runs_by_length`); others run next. When the GPU runs out of memory the run is split in two and each
    half starts over (fresh generators, fresh scheduler): a job that fits alone never fails because
    it was batched, and one that doesn't fit alone fails alone."""
    stopped = progress.stopped()
    jobs = [k for k in embeds if k not in stopped]
    # (Z-Image's prompts are lists of their own lengths, padded together by its transformer)
    runs = runs_by_length(jobs, {k: 1 if model.zimage else embeds[k]["prompt_embeds"].shape[1] for k in jobs})
    if len(runs) > 1:
        return {k: v for run in runs for k, v in denoise(model, requests, {k: embeds[k] for k in run}, progress).items()}
    if not jobs:
        return {}
    try:
        return _denoise(model, requests, jobs, embeds, progress)
    except torch.OutOfMemoryError:
        pass  # retried below, out of the handler: its traceback holds the failed attempt's tensors
    if model.device.type == "cuda":
        torch.cuda.empty_cache()
    if len(jobs) == 1:
        return {jobs[0]: torch.OutOfMemoryError("the GPU ran out of memory for this job even alone: try fewer images "
                                                "or a smaller size")}
    half = len(jobs) // 2
    return {**denoise(model, requests, {k: embeds[k] for k in jobs[:half]}, progress),
            **denoise(model, requests, {k: embeds[k] for k in jobs[half:]}, progress)}


def runs_by_length(jobs: list[int], lengths: dict) -> list[list[int]]:
    """The jobs in runs whose prompt lengths' least common multiple is at most twice the longest
    (1 and 2 chunks share a run, 2 and 3 do, 3 and 4 don't): nobody's run grows without bound
    because of another user's prompt."""
    runs: list[list[int]] = []
    for k in sorted(jobs, key=lambda k: lengths[k]):
        if runs and math.lcm(*(lengths[j] for j in runs[-1]), lengths[k]) <= 2 * lengths[k]:
            runs[-1].append(k)
        else:
            runs.append([k])
    return runs


def _denoise(model, requests, jobs: list[int], embeds: dict, progress) -> dict:
    seeds = [s for k in jobs for s in requests[k].seeds()]
    counts = [requests[k].num_images for k in jobs]
    guidance = torch.tensor([requests[k].guidance_scale for k in jobs for _ in range(requests[k].num_images)],
                            device=model.device, dtype=model.dtype).view(-1, 1, 1, 1)
    progress.begin(jobs, counts)
    if model.zimage:  # one CFG scale (in the batch key); each prompt an entry of a list, once per image
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        lists = {name: [e for k, count in zip(jobs, counts) for e in embeds[k][name] * count] for name in embeds[jobs[0]]}
        latents, _ = zimage.denoise(model, requests[jobs[0]], generators, progress, lists)
        return dict(zip(jobs, latents.split(counts)))
    if model.transformer:  # FLUX.1: no CFG, the batch's one distilled guidance (in the batch key)
        generators = [torch.Generator("cpu").manual_seed(s) for s in seeds]
        stack = stacked([embeds[k] for k in jobs], counts)
        latents, _ = (flux.denoise(model, requests[jobs[0]], generators, progress, stack) if model.flux else
                      sd3.denoise(model, requests[jobs[0]], generators, progress, stack, sample_guidance=guidance))
        return dict(zip(jobs, latents.split(counts)))
    pipe = pipeline_for_run(model.pipe, requests[jobs[0]].scheduler, seeds, "txt2img", per_sample_guidance=True)
    pipe.sample_guidance = guidance
    first = requests[jobs[0]]
    latents = pipe(width=first.width, height=first.height, num_inference_steps=first.steps,
                   guidance_scale=max(requests[k].guidance_scale for k in jobs), num_images_per_prompt=1,
                   generator=[torch.Generator("cpu").manual_seed(s) for s in seeds], output_type="latent",
                   callback_on_step_end=progress.on_step_end,
                   **stacked([embeds[k] for k in jobs], counts)).images
    return dict(zip(jobs, latents.split(counts)))


def stacked(embeds: list[dict], counts: list[int]) -> dict:
    """Each job's prompt embeddings, repeated for its images, in one batch. Sequences of different
    lengths (a long prompt is 77 tokens x chunks) are each repeated whole up to their least common
    multiple: attention over a sequence repeated m times is the same as over the sequence once
    (every key m times, the softmax unchanged), while zero padding would change the image."""
    length = math.lcm(*(e["prompt_embeds"].shape[1] for e in embeds))
    out = {}
    for name in embeds[0]:
        parts = []
        for e, count in zip(embeds, counts):
            tensor = e[name]
            if tensor.dim() == 3:  # (1, tokens, width); pooled ones are (1, width)
                tensor = tensor.repeat(1, length // tensor.shape[1], 1)
            parts.append(tensor.repeat(count, *[1] * (tensor.dim() - 1)))
        out[name] = torch.cat(parts)
    return out


class BatchProgress:
    """The step callback of a batch: cancel per job, previews per job (each its own samples)."""

    def __init__(self, requests, on_preview, should_cancel, preview, taesd, blur):
        self.total = requests[0].steps
        self.on_preview, self.should_cancel = on_preview, should_cancel or (lambda: set())
        self.previews = PreviewMaker(preview, taesd, blur)
        self.throttles = [PreviewThrottle(preview.min_interval) for _ in requests]
        self.dropped: set[int] = set()
        self.jobs, self.counts = [], []
        self.spent = 0.0  # seconds in this callback (cancel checks, previews): the caller's, not the denoiser's

    def stopped(self) -> set[int]:
        self.dropped |= set(self.should_cancel())
        return self.dropped

    def begin(self, jobs, counts) -> None:
        self.jobs, self.counts = jobs, counts

    def on_step_end(self, pipe, i, t, tensors):
        tick = time.perf_counter()
        dropped = self.stopped()
        if all(k in dropped for k in self.jobs):
            pipe._interrupt = True  # nobody is waiting for these samples any more
        elif self.on_preview is not None:
            for k, latents in zip(self.jobs, tensors["latents"].split(self.counts)):
                if k not in dropped and self.throttles[k].should_send(i + 1, self.total):
                    self.previews.send(latents, functools.partial(self.on_preview, k, i + 1, self.total))
        self.spent += time.perf_counter() - tick
        return {}
