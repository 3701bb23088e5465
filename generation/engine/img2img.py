"""img2img and inpainting: the starting picture resized, the mask prepared (inverted, blurred,
cropped to its box for "only masked"), the hole filled, and the run from it."""

from dataclasses import dataclass

import torch
from PIL import Image

from .images import Crop, fill_masked, mask_crop, prepared_mask, resize
from .pipelines import pipeline_for_run


def from_image(pipe, model, request, start, common):
    """img2img, or inpaint (masked img2img on an ordinary model, the real thing on a 9-channel one)."""
    width, height = start.picture.size
    if request.mask is None:
        pipe = pipeline_for_run(model.pipe, request.scheduler, [g.initial_seed() for g in common["generator"]],
                                 "img2img")
        return pipe(image=start.picture, strength=request.denoising_strength, **common).images
    # The starting latents are made here so masked content can be set in latent space.
    picture = pipe.image_processor.preprocess(start.picture, height=height, width=width)
    generator = torch.Generator("cpu").manual_seed(request.seed)
    latents = encode_image(pipe.vae, picture, generator, model.device, model.dtype)
    hard = pipe.mask_processor.preprocess(start.hard_mask, height=height, width=width)
    small = torch.nn.functional.interpolate(hard, size=latents.shape[-2:]).to(latents.device, latents.dtype)
    if request.inpainting_fill == 2:  # latent noise
        noise = torch.randn(latents.shape, generator=generator).to(latents.device, latents.dtype)
        latents = latents * (1 - small) + noise * small
    elif request.inpainting_fill == 3:  # latent nothing
        latents = latents * (1 - small)
    masked = latents
    if pipe.unet.config.in_channels == 9:  # an inpainting model also sees the picture with the hole cut out
        masked = encode_image(pipe.vae, picture * (hard < 0.5), generator, model.device, model.dtype)
    return pipe(image=latents, mask_image=start.blurred_mask, masked_image_latents=masked, width=width, height=height,
                strength=request.denoising_strength, **common).images


@dataclass
class Start:
    """What an img2img or inpaint run starts from, at the size it works at."""

    picture: Image.Image  # RGB, width x height (the mask's box when "only masked")
    original: Image.Image | None = None  # inpaint: the picture pasted back onto
    hard_mask: Image.Image | None = None  # at the picture's size
    blurred_mask: Image.Image | None = None  # at the original's size
    crop: Crop | None = None


def prepare_start(request) -> Start:
    """Resize the starting image by resize_mode; for inpainting, prepare the mask (invert, blur),
    crop to its box for "only masked", and fill the hole for masked content "fill"."""
    size = (request.width, request.height)
    if request.mask is None:
        return Start(resize(request.init_image.convert("RGB"), *size, request.resize_mode))
    original, mask = request.init_image.convert("RGB"), request.mask
    crop = None
    if request.inpaint_full_res:
        hard, blurred = prepared_mask(mask, request.inpainting_mask_invert, request.mask_blur)
        crop = mask_crop(hard, request.inpaint_full_res_padding, *size)
    if crop is None:  # the whole picture, at the run's size
        original, mask = (resize(im, *size, request.resize_mode) for im in (original, mask))
        hard, blurred = prepared_mask(mask, request.inpainting_mask_invert, request.mask_blur)
        picture, picture_mask = original, hard
    else:
        picture = original.crop(crop.box).resize(size, Image.LANCZOS)
        picture_mask = hard.crop(crop.box).resize(size, Image.NEAREST)
    if request.inpainting_fill == 0:
        picture = fill_masked(picture, picture_mask)
    return Start(picture, original, picture_mask, blurred, crop)


def encode_image(vae, picture, generator, device, dtype):
    """Pixels in [-1, 1] -> scaled latents, sampled with `generator`."""
    with torch.no_grad():
        dist = vae.encode(picture.to(device, vae.dtype)).latent_dist
    return (dist.sample(generator) * vae.config.scaling_factor).to(dtype)
