"""What the transformer families' tests (FLUX.1, SD 3.5, Z-Image) share: a model in one of the
layouts its tiny files were written in, a run of a few fields with its previews kept, its pixels."""

import numpy as np

from generation.engine import GenerationRequest, generate
from generation.engine.previews import PreviewSettings
from generation.engine.request import ModelRef


def reference(files, layout: str, parts: tuple) -> ModelRef:
    """The model written in `layout` ("folder": the diffusers folder), with `parts` beside it."""
    if layout == "folder":
        return ModelRef(str(files["folder"]))
    return ModelRef(str(files[layout]), config=str(files["config"]), parts=parts)


def make(model, marked=True, **fields):
    """(result, previews) of a 256 px run, seed 7, Euler, a preview at every step."""
    previews = []
    request = GenerationRequest(**{"prompt": "a photo of a (red:1.2) house", "model": model, "width": 256,
                                   "height": 256, "seed": 7, "scheduler": "Euler", **fields})
    result = generate(request, on_preview=lambda step, total, image: previews.append((step, total, image)),
                      preview=PreviewSettings(min_interval=0),
                      watermark_payloads=[bytes(8)] * request.num_images if marked else None)
    return result, previews


def pixels(result, k=0):
    return np.asarray(result.images[k]).astype(int)


def scaled_fp8(state: dict) -> dict:
    """ComfyUI's "scaled fp8" layout: each 2-D weight in float8 with its scale beside it."""
    import torch

    out = {"scaled_fp8": torch.zeros(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if key.endswith(".weight") and value.ndim == 2:
            scale = value.abs().max() / 448
            out[key], out[key.removesuffix("weight") + "scale_weight"] = (value / scale).to(torch.float8_e4m3fn), scale
        else:
            out[key] = value
    return out


def fp8_files_load_within_float8s_precision(files, parts: tuple, tmp_path) -> None:
    """The transformer file of `files` written in float8, plainly and as ComfyUI's scaled fp8, loads
    to the diffusers folder's weights within float8's precision."""
    import torch
    from safetensors.torch import load_file, save_file

    from generation.engine import load_pipeline

    state = load_file(files["transformer"])
    expected = load_pipeline(reference(files, "folder", parts)).pipe.transformer.state_dict()
    for name, written in (("plain", {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}),
                          ("scaled", scaled_fp8(state))):
        path = tmp_path / f"fp8-{name}.safetensors"
        save_file({k: v.contiguous() for k, v in written.items()}, path)
        loaded = load_pipeline(ModelRef(str(path), config=str(files["config"]), parts=parts)).pipe.transformer
        for key, value in loaded.state_dict().items():
            error = (value.float() - expected[key].float()).abs().max() / expected[key].float().abs().max().clamp(min=1e-6)
            assert error < 0.07, (name, key)  # float8 e4m3 keeps 3 bits of mantissa


def batched_as_alone(requests: list) -> None:
    """Two users' requests denoised as one run: each gets what it would have had alone."""
    from generation.engine.batch import generate_batch

    together = generate_batch(requests, watermark_payloads=[[bytes(8)] * r.num_images for r in requests])
    for request, result in zip(requests, together):
        alone = generate(request, watermark_payloads=[bytes(8)] * request.num_images)
        assert result.batch_size == len(requests) and len(result.images) == request.num_images
        for k in range(request.num_images):
            assert np.abs(pixels(result, k) - pixels(alone, k)).max() <= 2
