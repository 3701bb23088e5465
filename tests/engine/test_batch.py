"""Cross-user batching in the engine: each job's images, previews, cancel and safety verdict are
what they would be alone."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import GenerationCancelled, GenerationRequest, PreviewSettings, generate
from generation.engine.batch import batch_key, generate_batch
from generation.engine.schedulers import SCHEDULERS

LONG = ", ".join(["a lighthouse on a cliff above a stormy sea at dusk with gulls"] * 8)  # two 77-token chunks


@pytest.fixture
def jobs(test_model):
    """Three users' jobs that may share a run: other prompts (one long), negatives, seeds, CFG and counts."""

    def jobs(**common):
        base = dict(model=test_model, width=256, height=256, steps=4, **common)
        return [GenerationRequest(prompt="a red fox in snow", seed=11, guidance_scale=7.0, **base),
                GenerationRequest(prompt=LONG, negative_prompt="blurry", seed=99, guidance_scale=3.5, num_images=2,
                                  **base),
                GenerationRequest(prompt="a (blue:1.3) teapot", seed=5, guidance_scale=12.0, **base)]

    return jobs


def pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def assert_same_images(batched, alone):
    assert batched.seeds == alone.seeds and len(batched.images) == len(alone.images)
    for a, b in zip(batched.images, alone.images):
        assert np.abs(pixels(a) - pixels(b)).max() <= 2


@pytest.mark.parametrize("scheduler", list(SCHEDULERS))
def test_each_job_of_a_batch_makes_the_images_it_makes_alone(jobs, scheduler):
    requests = jobs(scheduler=scheduler)
    batched = generate_batch(list(requests))
    for result, request in zip(batched, requests):
        assert result.batch_size == 3
        assert_same_images(result, generate(request))
    # The CFG scale really is per sample: one scale for all would have changed the images.
    same_scale = generate_batch([r.__class__(**{**r.__dict__, "guidance_scale": 7.0}) for r in requests])
    assert np.abs(pixels(same_scale[1].images[0]) - pixels(batched[1].images[0])).max() > 2


def test_previews_are_each_jobs_own(jobs):
    requests = jobs(scheduler="Euler a")
    settings = PreviewSettings(min_interval=0)
    batched = {}
    generate_batch(list(requests), preview=settings,
                   on_preview=lambda k, step, total, image: batched.setdefault(k, []).append((step, total, image)))
    for k, request in enumerate(requests):
        alone = []
        generate(request, preview=settings, on_preview=lambda step, total, image: alone.append((step, total, image)))
        assert [(s, t) for s, t, _ in batched[k]] == [(s, t) for s, t, _ in alone] == [(i, 4) for i in range(1, 5)]
        for (_, _, ours), (_, _, theirs) in zip(batched[k], alone):
            a, b = (pixels(Image.open(io.BytesIO(data)).convert("RGB")) for data in (ours, theirs))
            assert a.shape == b.shape and np.abs(a - b).mean() < 2


def test_a_cancelled_job_is_dropped_and_the_others_go_on(jobs):
    requests = jobs(scheduler="DPM++ 2M Karras")  # multistep: its state is per batch
    steps = []

    def should_cancel():
        steps.append(None)
        return {1} if len(steps) > 2 else set()

    batched = generate_batch(list(requests), should_cancel=should_cancel)
    assert isinstance(batched[1], GenerationCancelled)
    for k in (0, 2):
        assert_same_images(batched[k], generate(requests[k]))


def test_everyone_cancelled_stops_the_run(jobs):
    calls = []

    def should_cancel():
        calls.append(1)
        return {0, 1, 2} if len(calls) > 1 else set()

    batched = generate_batch(jobs(), should_cancel=should_cancel)
    assert all(isinstance(r, GenerationCancelled) for r in batched)
    assert len(calls) < 4  # not every step was run


class FlagsTheFox:
    """A checker that withholds one job's image and fails on another's."""

    def check(self, images):
        if len(images) == 2:
            raise RuntimeError("checker crashed")
        return [abs(float(np.asarray(im).mean()) - self.fox) < 1e-6 for im in images]


def test_one_jobs_verdict_or_failure_stays_its_own(jobs):
    requests = jobs()
    checker = FlagsTheFox()
    checker.fox = float(np.asarray(generate(requests[0]).images[0]).mean())
    batched = generate_batch(list(requests), checker=checker)
    assert batched[0].images == [] and batched[0].flagged == [0]
    assert isinstance(batched[1], RuntimeError) and "safety checker failed" in str(batched[1])
    assert_same_images(batched[2], generate(requests[2]))


def test_a_jobs_bad_input_fails_that_job_alone(jobs):
    requests = jobs()
    requests[0] = requests[0].__class__(**{**requests[0].__dict__, "prompt": "a fox\x00"})
    batched = generate_batch(list(requests))
    assert isinstance(batched[0], ValueError) and "prompt" in str(batched[0])
    assert_same_images(batched[2], generate(requests[2]))


def test_out_of_memory_splits_the_batch(jobs, monkeypatch):
    """No GPU here: the UNet is made to run out of memory above 2 samples (x2 for CFG), as a card would."""
    requests = jobs()
    alone = [generate(r) for r in requests]
    from generation.engine.loading import load_pipeline

    unet = load_pipeline(requests[0].model).pipe.unet
    forward, sizes = unet.forward, []

    def tight(sample, *args, **kwargs):
        sizes.append(sample.shape[0])
        if sample.shape[0] > 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", tight)
    batched = generate_batch(list(requests))
    # All 4 samples failed; then the fox alone; the other two (3 samples) failed, then each alone.
    assert sizes == [8] + [2] * 4 + [6] + [4] * 4 + [2] * 4
    for result, single in zip(batched, alone):
        assert_same_images(result, single)


def test_only_plain_txt2img_with_guidance_batches(test_model):
    base = GenerationRequest(prompt="x", model=test_model)
    assert batch_key(base) == batch_key(GenerationRequest(prompt="y", model=test_model, seed=3, guidance_scale=4,
                                                          negative_prompt="z", num_images=2))
    for other in (dict(width=640), dict(steps=21), dict(scheduler="DDIM"), dict(clip_skip=2)):
        assert batch_key(GenerationRequest(prompt="x", model=test_model, **other)) != batch_key(base)
    for alone in (dict(enable_hr=True), dict(guidance_scale=1.0), dict(init_image=Image.new("RGB", (64, 64)))):
        assert batch_key(GenerationRequest(prompt="x", model=test_model, **alone)) is None
    with pytest.raises(ValueError, match="one batch"):
        generate_batch([base, GenerationRequest(prompt="x", model=test_model, steps=9)])


def test_sdxl_jobs_batch_too(tiny_families):
    """SDXL adds pooled embeddings and an empty negative as zeros: each is stacked per job."""
    model = str(tiny_families["sdxl"]["folder"])
    requests = [GenerationRequest(prompt=LONG, model=model, width=256, height=256, steps=4, seed=3, guidance_scale=5),
                GenerationRequest(prompt="a teapot", negative_prompt="dull", model=model, width=256, height=256,
                                  steps=4, seed=8, guidance_scale=9, num_images=2)]
    for result, request in zip(generate_batch(list(requests)), requests):
        assert_same_images(result, generate(request))
