"""img2img, inpainting (ordinary and 9-channel models, SD and SDXL), outpainting's canvas and
hires fix, through the engine's one entry function on the tiny models."""

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from generation.engine.images import mask_crop, resize
from generation.engine.metadata import parse_parameters
from generation.engine.request import GenerationRequest, ModelRef
from generation.engine.run import generate


@pytest.fixture(scope="module")
def picture():
    return Image.effect_noise((320, 288), 70).convert("RGB").filter(ImageFilter.GaussianBlur(2))


@pytest.fixture(scope="module")
def square_mask(picture):
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).rectangle((120, 100, 200, 180), fill=255)
    return mask


def request(model, **fields):
    return GenerationRequest(**{"prompt": "a red door", "model": model, "width": 256, "height": 256, "steps": 6,
                                "seed": 11, "scheduler": "Euler a", **fields})


def far_from(mask: Image.Image, margin: int) -> np.ndarray:
    """Pixels more than `margin` away from the mask (beyond its blur)."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * margin + 1))
    return np.asarray(grown) == 0


def test_img2img_starts_from_the_picture_and_is_reproducible(test_model, picture):
    steps = []
    first = generate(request(test_model, init_image=picture, denoising_strength=0.5),
                     on_preview=lambda step, total, _: steps.append((step, total)))
    again = generate(request(test_model, init_image=picture, denoising_strength=0.5))
    from_text = generate(request(test_model))
    assert first.images[0].size == (256, 256)
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    assert not np.array_equal(np.asarray(first.images[0]), np.asarray(from_text.images[0]))
    assert steps[-1] == (3, 3)  # strength 0.5 of 6 steps runs 3, as the quote says
    assert "Denoising strength: 0.5" in first.parameters(0)


@pytest.mark.parametrize("fill", [0, 1, 2, 3])
def test_inpainting_keeps_every_pixel_outside_the_blurred_mask(test_model, picture, square_mask, fill):
    result = generate(request(test_model, init_image=picture, mask=square_mask, inpainting_fill=fill,
                              mask_blur=4, num_images=2))
    original = np.asarray(resize(picture, 256, 256, 0)).astype(int)
    mask = square_mask.resize((256, 256))
    for image in result.images:
        made = np.asarray(image).astype(int)
        assert np.array_equal(made[far_from(mask, 12)], original[far_from(mask, 12)])
        inside = np.asarray(mask) == 255
        assert np.abs(made - original)[inside].mean() > 5  # and the masked area was repainted
    params = parse_parameters(result.parameters(0))
    assert params["Mask blur"] == "4" and params["Masked content"] == ["fill", "original", "latent noise",
                                                                       "latent nothing"][fill]


def test_masked_content_changes_what_the_hole_starts_from(test_model, picture, square_mask):
    made = [np.asarray(generate(request(test_model, init_image=picture, mask=square_mask, inpainting_fill=fill,
                                        denoising_strength=0.6)).images[0]) for fill in range(4)]
    assert len({m.tobytes() for m in made}) == 4


def test_only_masked_works_on_the_masks_box_and_keeps_the_pictures_size(test_model, picture, square_mask):
    result = generate(request(test_model, init_image=picture, mask=square_mask, inpaint_full_res=True,
                              inpaint_full_res_padding=16, mask_blur=2))
    made, original = np.asarray(result.images[0]).astype(int), np.asarray(picture).astype(int)
    assert result.images[0].size == picture.size
    assert np.array_equal(made[far_from(square_mask, 6)], original[far_from(square_mask, 6)])
    assert "Inpaint area: Only masked" in result.parameters(0)


def test_inpaint_not_masked_repaints_the_rest(test_model, picture, square_mask):
    result = generate(request(test_model, init_image=picture, mask=square_mask, inpainting_mask_invert=True,
                              mask_blur=0))
    made, original = np.asarray(result.images[0]).astype(int), np.asarray(resize(picture, 256, 256, 0)).astype(int)
    inside = np.asarray(square_mask.resize((256, 256), Image.NEAREST)) == 255
    core = np.zeros_like(inside)
    core[120:140, 110:130] = True  # well inside the square (scaled to 256 px)
    assert np.array_equal(made[core & inside], original[core & inside])
    assert np.abs(made - original)[~inside].mean() > 5
    assert "Mask mode: Inpaint not masked" in result.parameters(0)


@pytest.mark.parametrize("family", ["sd1-inpaint", "sdxl", "sdxl-inpaint"])
def test_each_family_inpaints_and_keeps_the_unmasked_pixels(tiny_families, picture, square_mask, family):
    files = tiny_families[family]
    model = ModelRef(str(files["file"]), family=family, config=str(files["config"]))
    result = generate(request(model, init_image=picture, mask=square_mask, mask_blur=0))
    made, original = np.asarray(result.images[0]).astype(int), np.asarray(resize(picture, 256, 256, 0)).astype(int)
    keep = far_from(square_mask.resize((256, 256)), 2)
    assert np.array_equal(made[keep], original[keep])


def test_an_inpainting_model_is_refused_without_a_mask(tiny_families, picture):
    files = tiny_families["sd1-inpaint"]
    model = ModelRef(str(files["file"]), family="sd1-inpaint", config=str(files["config"]))
    with pytest.raises(ValueError, match="without a mask"):
        generate(request(model, init_image=picture))


@pytest.mark.parametrize("upscaler", ["Latent", "Latent (nearest-exact)", "Lanczos"])
def test_hires_fix_runs_two_passes_and_writes_them_as_a1111_does(test_model, upscaler):
    steps = []
    result = generate(request(test_model, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler,
                              hr_second_pass_steps=4, denoising_strength=0.5),
                      on_preview=lambda step, total, _: steps.append((step, total)))
    plain = generate(request(test_model))
    assert result.images[0].size == (384, 384)
    assert steps[-1] == (8, 8)  # 6 first-pass steps and 0.5 x 4 second-pass steps, one progress bar
    assert not np.array_equal(np.asarray(result.images[0].resize((256, 256))), np.asarray(plain.images[0]))
    params = parse_parameters(result.parameters(0))
    assert (params["Hires upscale"], params["Hires steps"], params["Hires upscaler"], params["Denoising strength"],
            params["width"], params["height"]) == ("1.5", "4", upscaler, "0.5", 256, 256)  # Size: the first pass


def test_hires_to_a_size_keeps_the_aspect_ratio_when_one_side_is_given(test_model):
    r = request(test_model, width=256, height=384, enable_hr=True, hr_resize_x=512)
    assert r.hires_size() == (512, 768)
    assert r.passes() == [(256, 384, 6), (512, 768, 4)]  # 0.75 x 6 steps in the second pass


@pytest.mark.parametrize("fields, message", [
    ({"enable_hr": True, "hr_scale": 8}, "hr_scale must be a number from 1 to 4"),
    ({"enable_hr": True, "hr_scale": 4, "width": 512}, "at most 1024"),
    ({"enable_hr": True, "hr_upscaler": "ESRGAN_4x"}, "hr_upscaler must be one of"),
    ({"denoising_strength": 0.1, "steps": 5, "init": True}, "runs no step"),
    ({"denoising_strength": 1.5, "init": True}, "denoising_strength must be"),
    ({"resize_mode": 3, "init": True}, "resize_mode must be one of 0 (Just resize)"),
    ({"inpainting_fill": 9, "init": True, "mask": True}, "inpainting_fill must be one of"),
    ({"mask": "small", "init": True}, "mask must be an image of the same size as init_image (320x288)"),
    ({"enable_hr": True, "init": True}, "enable_hr is for images made from text"),
])
def test_bad_image_settings_are_refused_naming_the_field(test_model, picture, square_mask, fields, message):
    fields = dict(fields)
    if fields.pop("init", False):
        fields["init_image"] = picture
    if fields.get("mask") is True:
        fields["mask"] = square_mask
    elif fields.get("mask") == "small":
        fields["mask"] = square_mask.resize((64, 64))
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate(request(test_model, **fields), limits=None)


def test_resize_modes_give_the_asked_size_three_ways(picture):
    made = [resize(picture, 256, 384, mode) for mode in range(3)]
    assert all(im.size == (256, 384) for im in made)
    assert len({im.tobytes() for im in made}) == 3


def test_the_only_masked_box_has_the_runs_aspect_ratio_and_stays_inside():
    mask = Image.new("L", (1000, 600), 0)
    ImageDraw.Draw(mask).rectangle((900, 10, 980, 50), fill=255)
    crop = mask_crop(mask, 32, 512, 512)
    left, top, right, bottom = crop.box
    assert right - left == bottom - top and right <= 1000 and top >= 0
    assert left <= 900 - 32 and right >= 980
