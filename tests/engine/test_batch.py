"""Cross-user batching in the engine: each job's images, previews, cancel and safety verdict are
what they would be alone."""

import dataclasses
import hashlib
import io
import json
import struct
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import GenerationCancelled, GenerationRequest, PreviewSettings, generate
from generation.engine.batch import batch_key, generate_batch
from generation.engine.request import JobError, LoraUse, ModelRef
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
        return [np.abs(pixels(im) - self.fox).max() <= 2 for im in images]  # the fox's picture, within rounding


def test_one_jobs_verdict_or_failure_stays_its_own(jobs):
    requests = jobs()
    checker = FlagsTheFox()
    checker.fox = pixels(generate(requests[0]).images[0])
    batched = generate_batch(list(requests), checker=checker)
    assert batched[0].images == [] and batched[0].flagged == [0]
    assert isinstance(batched[1], JobError) and "safety checker failed" in str(batched[1])
    assert_same_images(batched[2], generate(requests[2]))


def test_a_jobs_bad_input_fails_that_job_alone(jobs):
    requests = jobs()
    requests[0] = requests[0].__class__(**{**requests[0].__dict__, "prompt": "a fox\x00"})
    batched = generate_batch(list(requests))
    assert isinstance(batched[0], ValueError) and "prompt" in str(batched[0])
    assert_same_images(batched[2], generate(requests[2]))


def tight_unet(model, monkeypatch, most: int):
    """No GPU here: the UNet runs out of memory above `most` samples (x2 for CFG), as a card would.
    Returns the calls: (samples, whether an exception was being handled when it was called)."""
    from generation.engine.loading import load_pipeline

    unet = load_pipeline(model).pipe.unet
    forward, calls = unet.forward, []

    def tight(sample, *args, **kwargs):
        calls.append((sample.shape[0], sys.exc_info()[0] is not None))
        if sample.shape[0] > most:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return forward(sample, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", tight)
    return calls


def test_out_of_memory_splits_the_batch(jobs, monkeypatch):
    requests = jobs()
    alone = [generate(r) for r in requests]
    calls = tight_unet(requests[0].model, monkeypatch, most=4)
    batched = generate_batch(list(requests))
    # All 4 samples failed; then the fox alone; the other two (3 samples) failed, then each alone.
    assert [size for size, _ in calls] == [8] + [2] * 4 + [6] + [4] * 4 + [2] * 4
    # Each retry starts after the failed attempt's handler has ended: its traceback, which holds
    # that attempt's tensors, is gone, so the GPU's cache can really be emptied.
    assert not any(handling for _, handling in calls)
    for result, single in zip(batched, alone):
        assert_same_images(result, single)


def test_a_job_that_does_not_fit_even_alone_fails_alone(jobs, monkeypatch):
    requests = jobs()  # the second job has two images: four samples with CFG
    alone = [generate(requests[k]) for k in (0, 2)]
    tight_unet(requests[0].model, monkeypatch, most=2)
    batched = generate_batch(list(requests))
    assert isinstance(batched[1], torch.OutOfMemoryError) and "even alone" in str(batched[1])
    assert_same_images(batched[0], alone[0])  # finished before the other half ran out of memory
    assert_same_images(batched[2], alone[1])


def test_prompts_of_very_different_lengths_run_apart_and_nothing_grows_without_bound(jobs, monkeypatch):
    """An outside tester's attack, scaled down: prompts of 5, 6 and 7 chunks (BREAKs) beside
    another user's job would have been repeated to 210 chunks each (their least common multiple)."""
    from generation.engine import batch

    requests = jobs()
    requests = [requests[0]] + [dataclasses.replace(requests[2], prompt=" BREAK ".join(["a teapot"] * n), seed=n)
                                for n in (7, 6, 5)]
    lengths, real = [], batch.stacked
    monkeypatch.setattr(batch, "stacked", lambda embeds, counts: lengths.append(
        [e["prompt_embeds"].shape[1] // 77 for e in embeds]) or real(embeds, counts))
    batched = generate_batch(list(requests))
    assert sorted(lengths) == [[1, 5], [6], [7]]  # 1 and 5 chunks: five, the longest; 5 and 6 would be thirty
    for result, request in zip(batched, requests):
        assert_same_images(result, generate(request))
    assert batch.runs_by_length([0, 1], {0: 77, 1: 154}) == [[0, 1]]  # 1 and 2 chunks share a run
    assert batch.runs_by_length([0, 1], {0: 154, 1: 231}) == [[0, 1]]  # 2 and 3: six chunks, twice the longest
    assert batch.runs_by_length([0, 1, 2], {0: 667, 1: 666, 2: 665}) == [[2], [1], [0]]


def test_two_names_for_one_lora_file_share_a_run(jobs, addon_files):
    """Uploads are stored by content: two users' copies of a LoRA are one file under two names."""
    digest = hashlib.sha256(addon_files["lora"].read_bytes()).hexdigest()[:12]  # the cache knows a file by it
    hers, his = (LoraUse(ModelRef(str(addon_files["lora"]), name=name, hash=digest), 0.8, 0.8)
                 for name in ("her-style", "his-copy"))
    requests = jobs()[:2]
    requests = [dataclasses.replace(requests[0], prompt="a fox <lora:her-style:0.8>", loras=(hers,)),
                dataclasses.replace(requests[1], prompt="a cat <lora:his-copy:0.8>", loras=(his,))]
    assert batch_key(requests[0]) == batch_key(requests[1])
    for result, request in zip(generate_batch(list(requests)), requests):
        assert result.batch_size == 2 and result.addons.loras[0][1].ref.name == request.loras[0].ref.name
        assert_same_images(result, generate(request))


def test_a_damaged_add_on_fails_only_the_job_that_brought_it(jobs, addon_files, tmp_path):
    """Tensors that overlap: refused when uploaded (read_header); one already in the library fails its job alone."""
    from generation.engine.families import read_header

    data = addon_files["embedding"].read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    name = next(k for k in header if k != "__metadata__")
    header["pad"] = {"dtype": header[name]["dtype"], "shape": header[name]["shape"], "data_offsets": header[name][
        "data_offsets"]}
    text = json.dumps(header).encode()
    damaged = tmp_path / "overlapping.safetensors"
    damaged.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length:])
    with pytest.raises(ValueError, match="overlap"):
        read_header(damaged)
    requests = jobs()
    requests[1] = dataclasses.replace(requests[1], negative_prompt="overlapping",
                                      embeddings=(ModelRef(str(damaged), name="overlapping", hash="abcdefabcdef"),))
    batched = generate_batch(list(requests))
    assert isinstance(batched[1], Exception) and not isinstance(batched[1], GenerationCancelled)
    for k in (0, 2):
        assert_same_images(batched[k], generate(requests[k]))


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
