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
