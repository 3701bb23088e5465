"""The add-ons a job uses, each checked where it is named: it exists for this user (their own, the
library's or a published upload) and fits the checkpoint's family. Gives what the job records
(names, hashes, settings) and what the engine takes."""

from generation.accounts.roles import allowance
from generation.engine.prompts import LORA_TAG, embeddings_named, lora_tags
from generation.engine.request import (
    CONTROL_MODES,
    LATENT_UPSCALERS,
    PIXEL_UPSCALERS,
    RESIZE_MODES,
    ControlUnit,
    LoraUse,
    ModelRef,
)
from generation.library.models import AddOn, Checkpoint, is_model_name
from generation.library.selectors import addon_named, addons_for


class UseRefused(ValueError):
    """An add-on a request can't use; `field` names where it was asked for; `by_role`: it exists,
    but the user's roles don't allow it."""

    def __init__(self, message: str, field: str, by_role: bool = False):
        super().__init__(message)
        self.field, self.by_role = field, by_role


def addon_uses(user, checkpoint: Checkpoint, fields: dict, units, control_images: list) -> tuple[list, dict]:
    """The LoRAs the prompt's <lora:...> tags name, the embeddings either prompt names (of the
    checkpoint's family, as A1111 skips the others) and the ControlNet units: (what the job
    records: names, hashes, settings; the same as the engine takes them)."""
    family = checkpoint.family.split("-")[0]
    records, engine = [], {"loras": [], "embeddings": [], "controlnets": []}
    if not all(isinstance(fields.get(f), str) for f in ("prompt", "negative_prompt")):
        return records, {}  # the engine's checks name the field
    try:
        tags = lora_tags(fields["prompt"])
    except ValueError as error:
        raise UseRefused(str(error), field="prompt") from None
    if LORA_TAG.search(fields["negative_prompt"]):
        raise UseRefused("LoRA tags work in the prompt, not the negative prompt.", field="negative_prompt")
    for name, unet, te in tags:
        addon = addon_use(user, AddOn.LORA, name, family, checkpoint, "prompt")
        records.append({"kind": AddOn.LORA, "name": name, "sha256": addon.sha256, "unet": unet, "te": te})
        engine["loras"].append(LoraUse(ModelRef(addon.source, name=name, hash=addon.short_hash), unet, te))
    embeddings = {e.name.lower(): e for e in reversed(addons_for(user, kind=AddOn.EMBEDDING).filter(family=family))}
    named = embeddings_named((e.name for e in embeddings.values()), fields["prompt"], fields["negative_prompt"])
    for addon in (embeddings[name] for name in sorted(named)):
        records.append({"kind": AddOn.EMBEDDING, "name": addon.name, "sha256": addon.sha256})
        engine["embeddings"].append(ModelRef(addon.source, name=addon.name, hash=addon.short_hash))
    for k, (unit, upload) in enumerate(zip(units or [], control_images)):
        addon = addon_use(user, AddOn.CONTROLNET, str(unit.get("model") or "").split(" [")[0], family, checkpoint,
                          f"controlnet[{k}].model")
        settings_ = {"module": unit.get("module") or "none", "weight": unit.get("weight", 1.0),
                     "guidance_start": unit.get("guidance_start", 0.0), "guidance_end": unit.get("guidance_end", 1.0),
                     "control_mode": choice(unit.get("control_mode", 0), CONTROL_MODES, f"controlnet[{k}].control_mode"),
                     "resize_mode": choice(unit.get("resize_mode", 1), RESIZE_MODES, f"controlnet[{k}].resize_mode"),
                     "processor_res": unit.get("processor_res", 512), "threshold_a": unit.get("threshold_a", -1),
                     "threshold_b": unit.get("threshold_b", -1)}
        records.append({"kind": AddOn.CONTROLNET, "name": addon.name, "sha256": addon.sha256, **settings_,
                        "image_sha256": upload.sha256})  # "image": its stored file, named when it is stored
        engine["controlnets"].append(ControlUnit(ModelRef(addon.source, family=family, name=addon.name,
                                                          hash=addon.short_hash), upload.image, **settings_))
    engine = {k: tuple(v) for k, v in engine.items()}
    if fields.get("enable_hr") and isinstance(fields.get("hr_upscaler"), str) and fields["hr_upscaler"] not in (
            *LATENT_UPSCALERS, *PIXEL_UPSCALERS):
        records.append(upscaler_use(user, fields["hr_upscaler"], "hr_upscaler"))
        engine["upscaler_model"] = ModelRef(fields["hr_upscaler"], name=fields["hr_upscaler"])  # named; run finds the file
    return records, engine


def upscaler_use(user, name: str, field: str) -> dict:
    addon = addon_use(user, AddOn.UPSCALER, name, "any", None, field)
    return {"kind": AddOn.UPSCALER, "name": addon.name, "sha256": addon.sha256}


def addon_use(user, kind: str, name: str, family: str, checkpoint: Checkpoint, field: str) -> AddOn:
    addon = addon_named(user, kind=kind, name=name)
    label = dict(AddOn.KINDS)[kind]
    if addon is None and is_model_name(name) and addons_for(user, kind=kind, within_role=False).filter(name=name).exists():
        raise UseRefused(f"{label} {name!r} is not among the add-ons your role ({', '.join(allowance(user).roles)}) "
                         "may use.", field=field, by_role=True)
    if addon is None:
        where = {AddOn.LORA: "GET /sdapi/v1/loras", AddOn.CONTROLNET: "GET /controlnet/model_list",
                 AddOn.UPSCALER: "GET /sdapi/v1/upscalers"}[kind]
        raise UseRefused(f"No {label} called {name!r}; the Add-ons page (or {where}) lists those you can use.",
                         field=field)
    if addon.family not in (family, "any"):
        raise UseRefused(f"{label} {name!r} is for {addon.get_family_display()}; checkpoint {checkpoint.name!r} is "
                         f"{checkpoint.get_family_display()}.", field=field)
    return addon


def choice(value, allowed: tuple, field: str) -> int:
    """A1111's extension takes a mode as its index or its label (any capitalisation)."""
    if isinstance(value, str):
        labels = [label.lower() for label in allowed]
        if value.lower() not in labels:
            raise UseRefused(f"One of {', '.join(allowed)} (or 0-{len(allowed) - 1}).", field=field)
        return labels.index(value.lower())
    return value
