"""Noise: Euler a's (SD's, and flow matching's for FLUX.1) made ahead, and A1111's variation seeds.

Euler a with its per-step noise made ahead. Each image's noise comes from its own CPU generator
(the seeds A1111 users share reproduce across machines); made step by step, every step would copy
it to the GPU with a blocking copy, a stream sync that makes the host wait for the GPU and then
the GPU for the host. Here, at the first step, each generator draws the noise of every step left
in the order the steps would have drawn it (so the images are the same), and it moves to the
device in one non-blocking copy."""

import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_ancestral
import diffusers.schedulers.scheduling_flow_match_euler_discrete as flow_euler
import torch
from diffusers import EulerAncestralDiscreteScheduler, FlowMatchEulerDiscreteScheduler
from diffusers.utils import torch_utils


class NoiseMadeAhead:
    """Passed to the scheduler's step in place of its generators: the noise that step draws."""

    def __init__(self, tensor: torch.Tensor):
        self.tensor = tensor


def _step_noise(shape, generator=None, **options):
    if isinstance(generator, NoiseMadeAhead):
        return generator.tensor
    return torch_utils.randn_tensor(shape, generator=generator, **options)


# diffusers' Euler a draws its noise through this module-level name; anything but noise made ahead
# goes on to diffusers' own function unchanged.
euler_ancestral.randn_tensor = flow_euler.randn_tensor = _step_noise


class EulerAncestralNoiseAhead(EulerAncestralDiscreteScheduler):
    ahead: torch.Tensor | None = None  # (steps left, batch, ...) on the device

    def step(self, model_output, timestep, sample, generator=None, return_dict=True):
        if isinstance(generator, list) and all(g.device.type == "cpu" for g in generator):
            if self.step_index is None:
                self._init_step_index(timestep)
            if self.ahead is None:
                self.first = self.step_index
                self.ahead = self._draw(generator, model_output, len(self.timesteps) - self.step_index)
            generator = NoiseMadeAhead(self.ahead[self.step_index - self.first])
        return super().step(model_output, timestep, sample, generator=generator, return_dict=return_dict)

    @staticmethod
    def _draw(generators, model_output, steps: int) -> torch.Tensor:
        one = (1, *model_output.shape[1:])
        per_image = [torch.cat([torch.randn(one, generator=g, dtype=model_output.dtype) for _ in range(steps)])
                     for g in generators]
        noise = torch.stack(per_image, dim=1)  # (steps, batch, ...)
        if model_output.device.type == "cuda":
            return noise.pin_memory().to(model_output.device, non_blocking=True)
        return noise.to(model_output.device)


class FlowEulerAncestral(FlowMatchEulerDiscreteScheduler):
    """Euler a for flow matching (FLUX): each step goes to the predicted image and back out to the
    next step's noise level with fresh noise (the scheduler's stochastic sampling), that noise
    drawn ahead from each image's own generator as above. The pipeline passes the scheduler no
    generator: the run sets `generators`, the ones its starting noise came from."""

    generators: list | None = None
    ahead: torch.Tensor | None = None

    def step(self, model_output, timestep, sample, generator=None, **options):
        if generator is None and self.generators:
            if self.step_index is None:
                self._init_step_index(timestep)
            if self.ahead is None:
                self.first = self.step_index
                self.ahead = EulerAncestralNoiseAhead._draw(self.generators, model_output,
                                                            len(self.timesteps) - self.step_index)
            generator = NoiseMadeAhead(self.ahead[self.step_index - self.first])
        return super().step(model_output, timestep, sample, generator=generator, **options)


def variation_noise(pipe, request, generators, model) -> torch.Tensor:
    """A1111's variation seed: each image's starting noise turned from its seed's toward its
    subseed's by subseed_strength along the sphere between them, so it keeps the scale noise has.
    The seed's noise is drawn from the run's own generators as the pipeline would draw it, so
    the steps' noise that follows (ancestral samplers) is what it is without a variation."""
    from diffusers.utils.torch_utils import randn_tensor

    channels = pipe.unet.config.in_channels if hasattr(pipe, "unet") else pipe.vae.config.latent_channels
    shape = (request.num_images, channels, request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    ours = randn_tensor(shape, generator=generators, device=model.device, dtype=model.dtype)
    theirs = randn_tensor(shape, generator=[torch.Generator("cpu").manual_seed(s) for s in request.subseeds()],
                          device=model.device, dtype=model.dtype)
    return torch.stack([_slerp(request.subseed_strength, a, b) for a, b in zip(ours, theirs)])


def _slerp(t: float, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    x, y = a.float().flatten(), b.float().flatten()
    angle = torch.arccos((x @ y / (x.norm() * y.norm())).clamp(-1, 1))
    if angle < 1e-4:  # (nearly) the same direction: a straight line is as good
        mixed = (1 - t) * x + t * y
    else:
        mixed = (torch.sin((1 - t) * angle) * x + torch.sin(t * angle) * y) / torch.sin(angle)
    return mixed.reshape(a.shape).to(a.dtype)
