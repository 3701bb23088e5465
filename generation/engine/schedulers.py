"""Schedulers by the names AUTOMATIC1111 users know, and the (sampler, schedule type) pairs
that A1111 writes in its metadata and sends through its API."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SchedulerSpec:
    name: str
    class_name: str
    sampler: str  # A1111's sampler name
    schedule_type: str  # A1111's schedule type for what we run
    options: dict = field(default_factory=dict)
    aliases: tuple = ()


_DPMPP = {"algorithm_type": "dpmsolver++", "solver_order": 2}
_KARRAS = {"use_karras_sigmas": True}

SCHEDULERS = {
    s.name: s
    for s in [
        SchedulerSpec("Euler", "EulerDiscreteScheduler", "Euler", "Automatic", aliases=("k_euler",)),
        SchedulerSpec("Euler a", "EulerAncestralDiscreteScheduler", "Euler a", "Automatic", aliases=("k_euler_a",)),
        SchedulerSpec("Heun", "HeunDiscreteScheduler", "Heun", "Automatic", aliases=("k_heun",)),
        SchedulerSpec("DDIM", "DDIMScheduler", "DDIM", "Automatic"),
        SchedulerSpec("PNDM", "PNDMScheduler", "PLMS", "Automatic", {"skip_prk_steps": True}, ("PLMS",)),
        SchedulerSpec("LMS", "LMSDiscreteScheduler", "LMS", "Automatic", aliases=("k_lms",)),
        SchedulerSpec("LMS Karras", "LMSDiscreteScheduler", "LMS", "Karras", _KARRAS),
        # A1111's "Automatic" for DPM++ 2M and DPM++ SDE means Karras, so the uniform one says so.
        SchedulerSpec("DPM++ 2M", "DPMSolverMultistepScheduler", "DPM++ 2M", "Uniform", _DPMPP, ("k_dpmpp_2m",)),
        SchedulerSpec("DPM++ 2M Karras", "DPMSolverMultistepScheduler", "DPM++ 2M", "Karras", _DPMPP | _KARRAS),
        SchedulerSpec("DPM++ SDE Karras", "DPMSolverSDEScheduler", "DPM++ SDE", "Karras", _KARRAS),
        SchedulerSpec("UniPC", "UniPCMultistepScheduler", "UniPC", "Automatic"),
    ]
}

FLOW_SCHEDULERS = ("Euler", "Euler a")  # what flow-matching models (FLUX.1) run

# What A1111 runs for (sampler, "Automatic") where that is not the uniform schedule.
_AUTOMATIC = {"dpm++ 2m": "DPM++ 2M Karras", "dpm++ sde": "DPM++ SDE Karras"}


def scheduler_spec(name: str) -> SchedulerSpec:
    """The scheduler called `name` (ours, or an A1111 legacy name such as "DPM++ 2M Karras")."""
    wanted = str(name).strip().lower()
    for spec in SCHEDULERS.values():
        if wanted == spec.name.lower() or wanted in (a.lower() for a in spec.aliases):
            return spec
    if wanted in _AUTOMATIC:
        return SCHEDULERS[_AUTOMATIC[wanted]]
    raise ValueError(f"unknown scheduler {name!r}; choose one of: {', '.join(SCHEDULERS)}")


def resolve_scheduler(sampler: str, schedule_type: str | None = "automatic") -> str:
    """Map an A1111 (sampler, schedule type) pair, as its API sends them, to our scheduler name.
    Our names are A1111's names from before it split the schedule out of the sampler."""
    schedule = (schedule_type or "automatic").strip().lower()
    wanted = str(sampler).strip().lower()
    if schedule == "automatic":
        # A1111 1.9+ pairs: "automatic" is the sampler's own default, Karras for some.
        return _AUTOMATIC.get(wanted) or scheduler_spec(sampler).name
    for spec in SCHEDULERS.values():
        same_sampler = wanted in (spec.sampler.lower(), spec.name.lower())
        # For samplers whose automatic schedule is the model's own, "Uniform" is that schedule.
        same_schedule = schedule == spec.schedule_type.lower() or (
            schedule == "uniform" and spec.schedule_type == "Automatic"
        )
        if same_sampler and same_schedule:
            return spec.name
    pairs = ", ".join(f"{s.sampler} + {s.schedule_type}" for s in SCHEDULERS.values())
    raise ValueError(f"unsupported sampler and schedule type {sampler!r} + {schedule_type!r}; supported: {pairs}")


def make_scheduler(name: str, base_config, seeds: list[int]):
    """A fresh scheduler for one run, keeping the model's own config (prediction type, betas)."""
    import diffusers

    spec = scheduler_spec(name)
    if base_config.get("_class_name") == "FlowMatchEulerDiscreteScheduler":  # FLUX: flow matching
        from .noise import FlowEulerAncestral

        if spec.name not in FLOW_SCHEDULERS:
            raise ValueError(f"scheduler {spec.name!r} is not one for flow-matching models (FLUX.1); choose one "
                             f"of: {', '.join(FLOW_SCHEDULERS)}")
        return FlowEulerAncestral.from_config(base_config, stochastic_sampling=spec.name == "Euler a")
    cls = getattr(diffusers, spec.class_name)
    if spec.class_name == "EulerAncestralDiscreteScheduler":
        from .noise import EulerAncestralNoiseAhead as cls
    options = dict(spec.options)
    if spec.class_name == "DPMSolverSDEScheduler":
        # One Brownian tree per image, seeded like its latents: reproducible, batch-consistent.
        options["noise_sampler_seed"] = list(seeds)
    return cls.from_config(base_config, **options)
