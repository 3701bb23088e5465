"""Add-ons for one run: LoRA merged into the weights and put back exactly after it, textual-inversion
embeddings spliced into the prompt's token embeddings, ControlNet models. .safetensors files only;
each is read once and kept in the pipeline cache, within its byte budget, keyed by its file."""

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import flux, sd3, zimage
from .controlmaps import MODULES, unit_map
from .esrgan import load_upscaler
from .families import KOHYA_LORA_KEY, LYCORIS_KEY, read_header
from .ldm import unet_key_to_ldm
from .pipelines import pipeline_for_run
from .request import CONTROL_MODES, RESIZE_MODES, JobError, LoraUse, ModelRef

CONTROLNET_FAMILY_CONFIGS = {"sd1": "controlnet-sd1", "sdxl": "controlnet-sdxl"}


@dataclass
class LoadedAddon:
    """What the cache keeps of an add-on file."""

    value: object  # LoRA: {layer: (down, up, alpha)}; embedding: {vector width: (n, width) tensor}; a ControlNetModel
    name: str
    hash: str
    size_bytes: int
    load_seconds: float


@dataclass
class Addons:
    """The add-ons of one run, loaded."""

    loras: list  # [(LoadedAddon, LoraUse)]
    embeddings: dict  # {name: {vector width: vectors}}: those the prompts name
    embedding_hashes: dict  # {name: hash}
    controlnets: list  # [(LoadedAddon, ControlUnit)]

    def parameters(self) -> dict:
        """As A1111 and its ControlNet extension write them into the infotext."""
        params = {}
        if self.loras:
            params["Lora hashes"] = ", ".join(f"{use.ref.name}: {use.ref.hash}" for _, use in self.loras)
        if self.embedding_hashes:
            params["TI hashes"] = ", ".join(f"{name}: {h}" for name, h in self.embedding_hashes.items())
        for k, (loaded, unit) in enumerate(self.controlnets):
            a, b = MODULES[unit.module][1:]
            fields = {"Module": unit.module, "Model": f"{loaded.name} [{loaded.hash}]", "Weight": unit.weight,
                      "Resize Mode": RESIZE_MODES[unit.resize_mode].replace(" resize", " Resize").replace(
                          " fill", " Fill"), "Processor Res": unit.processor_res if unit.module != "none" else None,
                      "Threshold A": (a[1] if unit.threshold_a == -1 else unit.threshold_a) if a else None,
                      "Threshold B": (b[1] if unit.threshold_b == -1 else unit.threshold_b) if b else None,
                      "Guidance Start": unit.guidance_start, "Guidance End": unit.guidance_end,
                      "Control Mode": CONTROL_MODES[unit.control_mode]}
            params[f"ControlNet {k}"] = ", ".join(f"{key}: {v:g}" if isinstance(v, float) else f"{key}: {v}"
                                                  for key, v in fields.items() if v is not None)
        return params


def load_addon(kind: str, ref: ModelRef, device, dtype) -> LoadedAddon:
    """Read an add-on file for the cache (loading.PipelineCache.get_addon)."""
    from safetensors.torch import load_file

    started = time.perf_counter()
    path = Path(ref.source)
    if kind in ("controlnet", "upscaler"):
        value = _load_controlnet(ref, device, dtype) if kind == "controlnet" else load_upscaler(path, device, dtype)
        size = sum(p.numel() * p.element_size() for p in value.parameters())
    else:
        tensors = load_file(path)
        value = _lora_layers(tensors, ref.name) if kind == "lora" else _embedding_vectors(tensors, ref.name)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
    return LoadedAddon(value, ref.name or path.stem, ref.hash, size, time.perf_counter() - started)


def _lora_layers(tensors: dict, name: str) -> dict:
    """{layer name as the file writes it: (down, up, alpha or None)}; Kohya (lora_down/up/alpha)
    and PEFT (lora_A/B) layouts."""
    parts: dict[str, dict] = {}
    for key, tensor in tensors.items():
        match = KOHYA_LORA_KEY.match(key)
        if match:
            parts.setdefault(match["base"], {})[match["part"].split(".")[0]] = tensor
        elif LYCORIS_KEY.search(key):
            raise JobError(f"LoRA {name!r} holds LyCORIS layers ({key}): only LoRA/LoCon layers are supported")
    layers = {}
    for base, found in parts.items():
        down, up = found.get("lora_down", found.get("lora_A")), found.get("lora_up", found.get("lora_B"))
        if down is None or up is None:
            raise JobError(f"LoRA {name!r} is damaged: layer {base} lacks its down or up weight")
        alpha = found.get("alpha")
        layers[base] = (down, up, float(alpha) if alpha is not None else None)
    return layers


def _embedding_vectors(tensors: dict, name: str) -> dict:
    """{vector width: (n, width)}: one entry per text encoder width the embedding fits."""
    if "clip_l" in tensors and "clip_g" in tensors:
        found = [tensors["clip_l"], tensors["clip_g"]]
    elif "emb_params" in tensors:
        found = [tensors["emb_params"]]
    elif len(tensors) == 1:
        found = list(tensors.values())
    else:
        raise JobError(f"embedding {name!r} is not in a format this studio reads")
    return {t.shape[-1]: t.reshape(-1, t.shape[-1]).float() for t in found}


def _load_controlnet(ref: ModelRef, device, dtype):
    """A diffusers folder, or one .safetensors in diffusers or original (LDM) layout read with the
    family's shipped config (or the add-on's own config folder)."""
    from diffusers import ControlNetModel
    from safetensors.torch import load_file

    from .families import CONFIGS

    path = Path(ref.source)
    if ref.family == "flux":
        return flux.load_controlnet(path, dtype).to(device)
    if path.is_dir():
        model = ControlNetModel.from_pretrained(path, torch_dtype=dtype, local_files_only=True)
    else:
        config = Path(ref.config) if ref.config else CONFIGS / CONTROLNET_FAMILY_CONFIGS.get(ref.family, "")
        if not (config / "config.json").is_file():
            raise JobError(f"ControlNet {ref.name!r}: no config for its family ({ref.family or 'unknown'})")
        if any(k.startswith("controlnet_cond_embedding.") for k in read_header(path)):
            model = ControlNetModel.from_config(ControlNetModel.load_config(config))
            model.load_state_dict(load_file(path))
        else:
            try:
                model = ControlNetModel.from_single_file(path, config=str(config.resolve()), local_files_only=True)
            except (NotImplementedError, RuntimeError, KeyError) as error:  # diffusers leaves unmapped weights empty
                raise JobError(f"ControlNet {ref.name!r} can't be read in the original layout with its config "
                                 f"({type(error).__name__}); for SDXL use the diffusers-layout file") from error
    return model.to(device, dtype).eval()


def _lora_targets(pipe) -> dict[str, tuple[list, bool, bool]]:
    """{every name a LoRA file may give a layer: ([(module, first row, end row)], is it in the
    denoiser, are the halves of its rows swapped)}: Kohya's names (diffusers numbering for SD 1.x,
    LDM numbering for SDXL, BFL's for FLUX.1 and Stability's for SD 3.5, whose fused layers span
    several of ours) and PEFT's."""
    if hasattr(pipe, "transformer"):  # FLUX.1, SD 3.5, Z-Image
        family = sd3 if hasattr(pipe, "text_encoder_3") else flux if hasattr(pipe, "text_encoder_2") else zimage
        targets = {alias: (parts, True, swapped) for alias, (parts, swapped) in
                   family.lora_targets(getattr(pipe.transformer, "_orig_mod", pipe.transformer)).items()}
    else:
        targets = {}
        unet = getattr(pipe.unet, "_orig_mod", pipe.unet)  # under torch.compile, the module it compiled
        for name, module in unet.named_modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
                ldm = unet_key_to_ldm(name, unet.config)
                for alias in ("lora_unet_" + name.replace(".", "_"), "lora_unet_" + ldm.replace(".", "_"), "unet." + name):
                    targets[alias] = ([(module, 0, module.weight.shape[0])], True, False)
    two = getattr(pipe, "text_encoder_2", None) is not None
    for prefix, peft, encoder in (("te1" if two else "te", "text_encoder", pipe.text_encoder),
                                  ("te2", "text_encoder_2", getattr(pipe, "text_encoder_2", None))):
        for name, module in encoder.named_modules() if encoder is not None else ():
            if isinstance(module, torch.nn.Linear):
                plain = name.removeprefix("text_model.")
                for alias in (f"lora_{prefix}_text_model_" + plain.replace(".", "_"), f"{peft}.{plain}",
                              f"{peft}.text_model.{plain}"):
                    targets[alias] = ([(module, 0, module.weight.shape[0])], False, False)
    return targets


@contextlib.contextmanager
def applied_loras(pipe, loras: list[tuple[LoadedAddon, LoraUse]]):
    """Merge each LoRA into the weights it changes (W += weight * alpha / rank * up @ down) for the
    body of the `with`, then copy the original weights back: the next run sees exactly the model
    it would have seen without this one. Merged, a LoRA costs nothing per step. A transformer's saved
    weights wait in the CPU's memory (they may be most of a 22 GB transformer). A quantized weight
    (GGUF, int8, NF4) is left as it is: the LoRA's low-rank product is added to the layer's output
    as it runs instead."""
    saved: dict[torch.nn.Module, torch.Tensor] = {}
    hooks = []
    aside = "cpu" if hasattr(pipe, "transformer") else None
    try:
        targets = _lora_targets(pipe) if loras else {}
        for lora, use in loras:
            matched = 0
            for base, (down, up, alpha) in lora.value.items():
                parts, in_denoiser, swapped = targets.get(base, ([], False, False))
                if not parts:
                    continue
                matched += 1
                layer, rows = parts[0][0], parts[-1][2]
                columns = layer.in_features if isinstance(layer, torch.nn.Linear) else layer.weight[0].numel()
                if up.shape[0] != rows or down[0].numel() != columns:
                    raise JobError(f"LoRA {lora.name!r} doesn't fit this model (layer {base} has another shape): "
                                     "it is for another family")
                scale = (use.unet if in_denoiser else use.te) * (alpha / down.shape[0] if alpha else 1.0)
                weight = parts[0][0].weight
                delta = up.flatten(1).to(weight.device, torch.float32) @ down.flatten(1).to(weight.device, torch.float32)
                if swapped:  # BFL's and Stability's final modulations: (shift, scale) where diffusers has (scale, shift)
                    delta = torch.cat(delta.chunk(2)[::-1])
                for module, first, end in parts:
                    if _quantized(module.weight):
                        hooks.append(_added_on_the_way(module, down.flatten(1), up.flatten(1), first, end, scale, swapped))
                        continue
                    if module not in saved:
                        saved[module] = module.weight.detach().to(aside or module.weight.device, copy=True)
                    merged = module.weight.float() + scale * delta[first:end].reshape(module.weight.shape)
                    module.weight.data.copy_(merged.to(module.weight.dtype))
            if not matched:
                raise JobError(f"LoRA {lora.name!r} changes no layer of this model: it is for another family")
        yield
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad():
            for module, weight in saved.items():
                module.weight.copy_(weight)


def _quantized(weight) -> bool:
    """A weight kept in blocks or integers (GGUF, torchao's int8, bitsandbytes' NF4): not one to add to."""
    return hasattr(weight, "quant_type") or hasattr(weight, "quant_state") or type(weight.data) is not torch.Tensor


def _added_on_the_way(module, down, up, first: int, end: int, scale: float, swapped: bool):
    """A forward hook adding rows first:end of scale * up @ down (halves swapped as the merge does)
    times the layer's input to its output."""
    up = torch.cat(up.chunk(2)[::-1]) if swapped else up
    device = next(module.parameters()).device
    down, up = down.to(device, torch.float32), (up[first:end] * scale).to(device, torch.float32)

    def add(module, args, output):
        return output + (args[0].float() @ down.T @ up.T).to(output.dtype)

    return module.register_forward_hook(add)


def controlnet_scales(controlnet, control_mode: int):
    """A1111's "My prompt is more important": each residual scaled by 0.825 ** (its distance from
    the deepest), as a forward hook for the run; None for the other modes."""
    if control_mode != 1:
        return None

    def hook(module, args, output):
        down, mid = output
        n = len(down) + 1
        return [d * 0.825 ** (n - 1 - i) for i, d in enumerate(down)], mid

    return controlnet.register_forward_hook(hook)


def controlled_run(model, request, start, common, controlnets):
    """txt2img or img2img guided by ControlNet units (each map at the run's size): (latents, the pipeline)."""
    from diffusers.models.controlnets.multicontrolnet import MultiControlNetModel

    units = [unit for _, unit in controlnets]
    modes = {unit.control_mode for unit in units}
    if 2 in modes and len(modes) > 1:
        raise JobError("control_mode 2 (ControlNet is more important) must be every unit's mode or none's")
    nets = [loaded.value for loaded, _ in controlnets]
    width, height = start.picture.size if start else (request.width, request.height)
    maps = [unit_map(unit, width, height) for unit in units]
    seeds = [g.initial_seed() for g in common["generator"]]
    task = "controlnet-img2img" if start else "controlnet"
    pipe = pipeline_for_run(model.pipe, request.scheduler, seeds, task,
                             controlnet=nets[0] if len(nets) == 1 else MultiControlNetModel(nets))
    hooks = [controlnet_scales(net, unit.control_mode) for net, unit in zip(nets, units)]
    try:
        control = dict(controlnet_conditioning_scale=[u.weight for u in units] if len(units) > 1 else units[0].weight,
                       control_guidance_start=[u.guidance_start for u in units],
                       control_guidance_end=[u.guidance_end for u in units], guess_mode=modes == {2})
        if start:
            latents = pipe(image=start.picture, control_image=maps, strength=request.denoising_strength,
                           width=width, height=height, **control, **common).images
        else:
            latents = pipe(image=maps if len(maps) > 1 else maps[0], width=width, height=height, **control,
                           **common).images
    finally:
        for hook in hooks:
            if hook is not None:
                hook.remove()
    return latents, pipe
