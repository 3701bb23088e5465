"""Euler a's noise made ahead (engine/noise.py): the same images as diffusers' own Euler a, which
draws each step's noise as it goes."""

import dataclasses

import diffusers
import numpy as np
import torch

from generation.engine import GenerationRequest, generate, pipelines


def test_euler_a_with_its_noise_made_ahead_makes_the_images_diffusers_euler_a_makes(test_model, monkeypatch):
    request = GenerationRequest(prompt="a fox", model=test_model, width=256, height=256, steps=5, seed=3, num_images=2,
                                scheduler="Euler a")
    used = []
    made = pipelines.make_scheduler

    def watched(*args):
        used.append(made(*args))
        return used[-1]

    monkeypatch.setattr(pipelines, "make_scheduler", watched)
    ahead = generate(request).images
    assert used[-1].ahead.shape[:2] == (5, 2)  # drawn at the first step, for both images

    monkeypatch.setattr(pipelines, "make_scheduler",
                        lambda name, config, seeds: diffusers.EulerAncestralDiscreteScheduler.from_config(config))
    stock = generate(request).images
    other = generate(dataclasses.replace(request, seed=4)).images
    for a, b, c in zip(ahead, stock, other):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_noise_made_ahead_is_drawn_in_each_images_own_order():
    from generation.engine.noise import EulerAncestralNoiseAhead

    generators = [torch.Generator().manual_seed(s) for s in (1, 2)]
    noise = EulerAncestralNoiseAhead._draw(generators, torch.zeros(2, 4, 8, 8), steps=3)
    for image, seed in enumerate((1, 2)):
        own = torch.Generator().manual_seed(seed)
        assert all(torch.equal(noise[step, image], torch.randn(1, 4, 8, 8, generator=own)[0]) for step in range(3))
