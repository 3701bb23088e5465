"""The image safety hook. A checker takes the decoded images and says which are flagged.

Off by default. Any object with `check(images) -> list[bool]` can be used; `DiffusersSafetyChecker`
wraps diffusers' StableDiffusionSafetyChecker when its weights are on disk. The engine fails
closed: an exception from a checker fails the run.
"""

from typing import Protocol

from PIL import Image


class ImageChecker(Protocol):
    def check(self, images: list[Image.Image]) -> list[bool]:
        """True for each image that must not be shown."""


class DiffusersSafetyChecker:
    def __init__(self, folder: str, device="cpu"):
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        self.model = StableDiffusionSafetyChecker.from_pretrained(folder, use_safetensors=True).to(device)
        self.processor = CLIPImageProcessor.from_pretrained(folder)
        self.device = device

    def check(self, images):
        import numpy as np

        inputs = self.processor(images, return_tensors="pt").pixel_values.to(self.device)
        arrays = np.stack([np.asarray(im, dtype=np.float32) / 255 for im in images])
        _, flagged = self.model(images=arrays, clip_input=inputs)
        return [bool(f) for f in flagged]

