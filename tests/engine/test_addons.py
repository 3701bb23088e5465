"""LoRA, embeddings and ControlNet in the engine, with tiny add-ons built in code for the tiny
models of SD 1.x and SDXL: each changes the image, is reproducible, and is gone after the run."""

import numpy as np
import pytest
from PIL import Image, ImageDraw

from generation.engine import GenerationCancelled, GenerationRequest, generate
from generation.engine.controlmaps import control_map
from generation.engine.families import addon_family
from generation.engine.loading import PIPELINES, load_pipeline
from generation.engine.metadata import parse_parameters
from generation.engine.request import ControlUnit, LoraUse, ModelRef
from generation.engine.testmodel import make_tiny_addons


@pytest.fixture(scope="module")
def addons(tiny_families, tmp_path_factory):
    """{family: (model folder, add-on files)} for SD 1.x and SDXL."""
    folder = tmp_path_factory.mktemp("addons")
    return {family: (str(tiny_families[family]["folder"]),
                     make_tiny_addons(load_pipeline(str(tiny_families[family]["folder"])).pipe, folder / family))
            for family in ("sd1", "sdxl")}


def run(model, **fields):
    request = GenerationRequest(**{"prompt": "a lighthouse at dusk", "model": model, "width": 256, "height": 256,
                                   "steps": 2, "seed": 11, "scheduler": "Euler", **fields})
    return generate(request)


def pixels(result) -> np.ndarray:
    return np.asarray(result.images[0], dtype=np.int16)


def lora(files, weight=0.8, te=None, name="tiny-style"):
    return LoraUse(ModelRef(str(files["lora"]), name=name, hash="0123456789ab"), weight, weight if te is None else te)


def edges_picture() -> Image.Image:
    picture = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(picture).rectangle((64, 64, 192, 192), fill="black")
    return picture


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_lora_changes_the_image_and_the_next_run_is_exactly_a_fresh_workers(addons, family):
    model, files = addons[family]
    PIPELINES.clear()
    fresh = pixels(run(model))
    with_lora = run(model, prompt="a lighthouse at dusk <lora:tiny-style:0.8>", loras=(lora(files),))
    assert np.abs(pixels(with_lora) - fresh).mean() > 1
    assert np.array_equal(pixels(run(model)), fresh)  # same worker, same cached pipeline, after the LoRA
    assert 'Lora hashes: "tiny-style: 0123456789ab"' in with_lora.parameters(0)
    again = run(model, prompt="a lighthouse at dusk <lora:tiny-style:0.8>", loras=(lora(files),))
    assert np.array_equal(pixels(again), pixels(with_lora))


def test_a_cancelled_lora_run_also_leaves_the_weights_as_they_were(addons):
    model, files = addons["sd1"]
    plain = pixels(run(model))
    with pytest.raises(GenerationCancelled):
        generate(GenerationRequest(prompt="x <lora:tiny-style:1>", model=model, width=256, height=256, steps=3,
                                   loras=(lora(files, 1.0),)), should_cancel=lambda: True)
    assert np.array_equal(pixels(run(model)), plain)


def test_the_unet_and_text_encoder_weights_act_separately_and_zero_is_no_lora(addons):
    model, files = addons["sd1"]
    plain = pixels(run(model))
    unet_only = pixels(run(model, prompt="a lighthouse at dusk <lora:tiny-style:1:0>", loras=(lora(files, 1.0, 0.0),)))
    both = pixels(run(model, prompt="a lighthouse at dusk <lora:tiny-style:1:1>", loras=(lora(files, 1.0, 1.0),)))
    zero = pixels(run(model, prompt="a lighthouse at dusk <lora:tiny-style:0>", loras=(lora(files, 0.0),)))
    assert not np.array_equal(unet_only, plain) and not np.array_equal(unet_only, both)
    assert np.array_equal(zero, plain)


def test_three_loras_at_once_each_count(addons):
    model, files = addons["sd1"]
    uses = tuple(lora(files, w, name=f"tiny-{k}") for k, w in enumerate((0.5, 0.3, 0.2)))
    three = run(model, prompt="x <lora:tiny-0:0.5> <lora:tiny-1:0.3> <lora:tiny-2:0.2>", loras=uses)
    one = run(model, prompt="x <lora:tiny-0:1>", loras=(lora(files, 1.0, name="tiny-0"),))
    # The deltas add up: three parts summing to 1 make the image one whole LoRA makes, to rounding.
    assert np.abs(pixels(three) - pixels(one)).max() <= 2
    assert 'Lora hashes: "tiny-0: 0123456789ab, tiny-1: 0123456789ab, tiny-2: 0123456789ab"' in three.parameters(0)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_negative_embedding_changes_the_image_only_where_it_is_named(addons, family):
    model, files = addons[family]
    embedding = (ModelRef(str(files["embedding"]), name="tinyneg", hash="abcdefabcdef"),)
    plain = run(model, negative_prompt="blurry, tinyneg")  # no embedding given: the name is read as words
    used = run(model, negative_prompt="blurry, tinyneg", embeddings=embedding)
    not_named = run(model, negative_prompt="blurry", embeddings=embedding)
    assert np.abs(pixels(used) - pixels(plain)).mean() > 0.5
    assert np.array_equal(pixels(not_named), pixels(run(model, negative_prompt="blurry")))
    assert 'TI hashes: "tinyneg: abcdefabcdef"' in used.parameters(0)
    assert "TI hashes" not in not_named.parameters(0)


def test_an_embedding_is_read_case_blind_as_a_whole_word_with_its_weight(addons):
    model, files = addons["sd1"]
    embedding = (ModelRef(str(files["embedding"]), name="tinyneg", hash="abcdefabcdef"),)
    upper = run(model, prompt="a lighthouse, TinyNeg", embeddings=embedding)
    lower = run(model, prompt="a lighthouse, tinyneg", embeddings=embedding)
    inside = run(model, prompt="a lighthouse, tinynegative", embeddings=embedding)
    weighted = run(model, prompt="a lighthouse, (tinyneg:1.4)", embeddings=embedding)
    assert np.array_equal(pixels(upper), pixels(lower))
    assert "TI hashes" not in inside.parameters(0)
    assert not np.array_equal(pixels(weighted), pixels(lower))


@pytest.mark.parametrize("kind", ["lora", "embedding"])
def test_an_sdxl_add_on_on_an_sd1_model_is_an_error_naming_it(addons, kind):
    model, _ = addons["sd1"]
    _, xl_files = addons["sdxl"]
    ref = ModelRef(str(xl_files[kind]), name="xl-thing", hash="0")
    fields = {"prompt": "x <lora:xl-thing:1>", "loras": (LoraUse(ref),)} if kind == "lora" else {
        "prompt": "x xl-thing", "embeddings": (ref,)}
    with pytest.raises(ValueError, match="xl-thing.*another family|another family.*xl-thing|'xl-thing'"):
        run(model, **fields)
    assert addon_family(kind, xl_files[kind]) == "sdxl"


def test_a_file_that_is_not_what_it_claims_is_refused_naming_it(addons):
    _, files = addons["sd1"]
    with pytest.raises(ValueError, match="tiny-embedding.safetensors is not a LoRA"):
        addon_family("lora", files["embedding"])
    with pytest.raises(ValueError, match="is not a ControlNet"):
        addon_family("controlnet", files["lora"])


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_controlnet_unit_guides_the_image_and_weight_zero_is_no_controlnet(addons, family):
    model, files = addons[family]
    ref = ModelRef(str(files["controlnet"]), name="tiny-canny", hash="1234abcd", family=family,
                   config=str(files["controlnet_config"]))
    plain = pixels(run(model))
    guided = run(model, controlnets=(ControlUnit(ref, edges_picture(), module="canny"),))
    off = run(model, controlnets=(ControlUnit(ref, edges_picture(), module="canny", weight=0.0),))
    assert np.abs(pixels(guided) - plain).mean() > 1
    assert np.array_equal(pixels(off), plain)
    info = parse_parameters(guided.parameters(0))
    assert info["ControlNet 0"].startswith("Module: canny, Model: tiny-canny [1234abcd], Weight: 1, Resize Mode: "
                                           "Crop and Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200")


def test_two_units_and_the_control_modes_each_change_the_image(addons):
    model, files = addons["sd1"]
    ref = ModelRef(str(files["controlnet"]), name="c", hash="0", family="sd1", config=str(files["controlnet_config"]))
    images = [pixels(run(model, controlnets=units)) for units in (
        (ControlUnit(ref, edges_picture(), module="canny"),),
        (ControlUnit(ref, edges_picture(), module="canny", control_mode=1),),
        (ControlUnit(ref, edges_picture(), module="canny", control_mode=2),),
        (ControlUnit(ref, edges_picture(), module="canny"), ControlUnit(ref, edges_picture(), module="invert")),
    )]
    assert all(not np.array_equal(a, b) for k, a in enumerate(images) for b in images[k + 1:])


def test_an_original_layout_controlnet_file_makes_the_same_image_as_the_diffusers_one(addons):
    model, files = addons["sd1"]
    made = [pixels(run(model, controlnets=(ControlUnit(ModelRef(
        str(files[key]), name="c", hash="0", family="sd1", config=str(files["controlnet_config"])),
        edges_picture(), module="canny"),))) for key in ("controlnet", "controlnet_ldm")]
    assert addon_family("controlnet", files["controlnet_ldm"]) == "sd1"
    assert np.array_equal(*made)


def test_controlnet_img2img_and_refusals(addons):
    model, files = addons["sd1"]
    ref = ModelRef(str(files["controlnet"]), name="c", hash="0", family="sd1", config=str(files["controlnet_config"]))
    unit = ControlUnit(ref, edges_picture(), module="canny")
    start = Image.effect_noise((256, 256), 50).convert("RGB")
    from_image = run(model, init_image=start, denoising_strength=0.6, controlnets=(unit,))
    assert np.abs(pixels(from_image) - pixels(run(model, init_image=start, denoising_strength=0.6))).mean() > 0.5
    for fields, message in (({"enable_hr": True}, "not yet with inpainting, hires fix"),
                            ({"controlnets": (ControlUnit(ref, edges_picture(), module="depth"),)}, "module must be one of"),
                            ({"controlnets": (ControlUnit(ref, edges_picture(), guidance_start=0.8, guidance_end=0.2),)},
                             "guidance_start and guidance_end"),
                            ({"controlnets": (ControlUnit(ref, edges_picture(), module="canny", threshold_a=400),)},
                             "from 1 to 255")):
        with pytest.raises(ValueError, match=message):
            run(model, **{"controlnets": (unit,), **fields})


def test_the_preprocessors_make_the_maps_a_controlnet_reads():
    picture = edges_picture()
    canny = np.asarray(control_map(picture, "canny", processor_res=256).convert("L"))
    assert canny[:, :50].max() == 0 and canny[128, 60:70].max() == 255  # edges on the square's border only
    drawing = np.asarray(control_map(picture, "invert", processor_res=256).convert("L"))
    assert drawing[128, 128] == 255 and drawing[10, 10] == 0  # black on white becomes white on black
    line = Image.new("RGB", (256, 256), "white")
    ImageDraw.Draw(line).line((20, 128, 236, 128), fill="black", width=3)
    traced = np.asarray(control_map(line, "lineart_standard", processor_res=256).convert("L"))
    assert traced[128, 128] > 200 and traced[30, 128] < 30
    assert control_map(picture, "canny").size == (512, 512)  # worked at processor_res on the short side
    with pytest.raises(ValueError, match="module must be one of none, canny, lineart_standard, invert"):
        control_map(picture, "openpose")


def test_a_lora_in_peft_layout_makes_the_image_its_kohya_twin_makes(addons, tmp_path):
    from safetensors.torch import load_file, save_file

    model, files = addons["sd1"]
    pipe = load_pipeline(model).pipe
    kohya, peft = load_file(files["lora"]), {}
    for root, prefix, modules in (("lora_unet_", "unet.", pipe.unet), ("lora_te_text_model_", "text_encoder.",
                                                                        pipe.text_encoder)):
        for name, _ in modules.named_modules():
            key = root + name.removeprefix("text_model.").replace(".", "_")
            if f"{key}.lora_down.weight" in kohya:  # alpha == rank: the same scale as PEFT's default
                peft[f"{prefix}{name}.lora_A.weight"] = kohya[f"{key}.lora_down.weight"]
                peft[f"{prefix}{name}.lora_B.weight"] = kohya[f"{key}.lora_up.weight"]
    save_file(peft, tmp_path / "peft.safetensors")
    assert len(peft) * 3 == len(kohya) * 2
    twin = LoraUse(ModelRef(str(tmp_path / "peft.safetensors"), name="tiny-style", hash="0"), 0.8, 0.8)
    prompt = "a lighthouse at dusk <lora:tiny-style:0.8>"
    assert np.array_equal(pixels(run(model, prompt=prompt, loras=(twin,))),
                          pixels(run(model, prompt=prompt, loras=(lora(files),))))
