"""FLUX.1 [dev] and [schnell] from every layout people have them in: BFL's transformer file alone
with ComfyUI's text-encoder and VAE files beside it, one file holding all of it, a diffusers folder."""

import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from generation.engine import GenerationRequest, generate
from generation.engine.families import detect_family, read_header
from generation.engine.flux import LAYOUT, to_bfl, to_diffusers
from generation.engine.loading import PIPELINES
from generation.engine.parts import FP8_KEPT, missing_parts
from generation.engine.previews import PreviewSettings
from generation.engine.request import ModelRef
from tests.engine import runs
from tests.engine.runs import batched_as_alone, fp8_files_load_within_float8s_precision, pixels, reference


def parts(files) -> tuple:
    texts = files["text_encoders"]
    return (("text_encoder", str(texts / "clip_l.safetensors")), ("text_encoder_2", str(texts / "t5xxl_fp16.safetensors")),
            ("vae", str(files["vae"])), ("tokenizer_2", str(texts / "t5_tokenizer")))


def ref(files, layout: str) -> ModelRef:
    return reference(files, layout, parts(files))


def make(model, marked=True, **fields):
    return runs.make(model, marked, **{"steps": 4} | fields)


@pytest.mark.parametrize("family", ["flux-dev", "flux-schnell"])
def test_each_layout_makes_the_same_image_with_previews_and_forges_infotext(tiny_flux, family):
    files = tiny_flux[family]
    made = {layout: make(ref(files, layout)) for layout in ("file", "transformer", "folder")}
    images = [pixels(result) for result, _ in made.values()]
    assert images[0].std() > 10 and images[0].shape == (256, 256, 3)
    assert all(np.abs(image - images[0]).max() <= 2 for image in images)  # the same weights, each layout
    result, previews = made["transformer"]
    assert [(step, total) for step, total, _ in previews] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    infotext = result.parameters(0)
    assert "CFG scale: 1, " in infotext and "Sampler: Euler," in infotext
    assert ("Distilled CFG Scale: 3.5" in infotext) == (family == "flux-dev")


def test_dev_follows_its_distilled_guidance_and_euler_a_is_reproducible_per_image(tiny_flux):
    model = ref(tiny_flux["flux-dev"], "transformer")
    assert not np.array_equal(pixels(make(model)[0]), pixels(make(model, distilled_guidance_scale=1.0)[0]))
    two = make(model, scheduler="Euler a", num_images=2)[0]
    alone = make(model, scheduler="Euler a", seed=8)[0]  # image 1 of the pair has seed 7 + 1
    assert np.abs(pixels(two, 1) - pixels(alone)).max() <= 2
    assert not np.array_equal(pixels(two, 0), pixels(two, 1))


@pytest.mark.parametrize("fields, message", [
    ({"negative_prompt": "blurry"}, "negative_prompt must be empty: FLUX.1 takes no negative prompt"),
    ({"width": 264}, "width must be a multiple of 16 for FLUX.1"),
    ({"scheduler": "DPM++ 2M Karras"}, "scheduler must be Euler or Euler a for FLUX.1"),
    ({"prompt": "a [cat:dog:0.5]"}, "prompt uses prompt editing"),
])
def test_what_flux_does_not_take_is_refused_naming_the_field(tiny_flux, fields, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        make(ref(tiny_flux["flux-dev"], "file"), **fields)


def test_each_file_is_told_apart_and_says_what_it_lacks(tiny_flux):
    files = tiny_flux["flux-dev"]
    assert detect_family(read_header(files["file"])) == "flux-dev"
    assert detect_family(read_header(tiny_flux["flux-schnell"]["transformer"])) == "flux-schnell"
    assert missing_parts(LAYOUT, read_header(files["file"])) == []
    assert missing_parts(LAYOUT, read_header(files["transformer"])) == ["text_encoder", "text_encoder_2", "vae"]


def test_a_transformer_file_without_its_text_encoders_is_refused_naming_what_to_add(tiny_flux, tmp_path):
    files = tiny_flux["flux-dev"]
    with pytest.raises(ValueError, match="no CLIP-L text encoder.*clip_l.safetensors") as error:
        make(ModelRef(str(files["transformer"]), config=str(files["config"])))
    assert str(files["transformer"].parent) not in str(error.value)
    without_tokenizer = tuple(p for p in parts(files) if p[0] != "tokenizer_2")
    with pytest.raises(ValueError, match="T5's tokenizer"):
        make(ModelRef(str(files["transformer"]), config=str(files["config"]), parts=without_tokenizer))


def test_fill_and_depth_models_are_refused_by_name(tiny_flux, tmp_path):
    state = dict(read_header(tiny_flux["flux-dev"]["transformer"]))
    state["img_in.weight"] = {"shape": [32, 384]}
    with pytest.raises(ValueError, match="FLUX.1 Fill or Depth"):
        detect_family(state)


def test_the_bfl_layout_is_read_back_exactly(tiny_flux):
    from diffusers import FluxPipeline

    transformer = FluxPipeline.from_pretrained(tiny_flux["flux-dev"]["folder"]).transformer
    state = transformer.state_dict()
    back = to_diffusers(to_bfl(state))
    assert set(back) == set(state) and all(torch.equal(back[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="tensors this studio doesn't know"):
        to_diffusers({**to_bfl(state), "double_blocks.0.img_attn.lora_down.weight": torch.zeros(1)})


def test_a_full_size_flux_dev_from_the_shipped_config_has_the_real_layout_and_loads():
    """12 B parameters on the meta device (no memory): BFL's names and shapes as the published file
    has them, which diffusers' own converter also reads onto every weight, and our reader loads."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    from generation.engine.families import family_config

    config = FluxTransformer2DModel.load_config(family_config("flux-dev") / "transformer")
    with torch.device("meta"):
        model = FluxTransformer2DModel.from_config(config)
    bfl = to_bfl(model.state_dict())
    assert len(bfl) == 780 and sum(v.numel() for v in bfl.values()) == 11_901_408_320
    for name, shape in {"img_in.weight": (3072, 64), "txt_in.weight": (3072, 4096), "vector_in.in_layer.weight":
                        (3072, 768), "guidance_in.in_layer.weight": (3072, 256), "double_blocks.18.img_attn.qkv.weight":
                        (9216, 3072), "single_blocks.37.linear1.weight": (21504, 3072),
                        "single_blocks.37.linear2.weight": (3072, 15360), "final_layer.linear.weight": (64, 3072)}.items():
        assert tuple(bfl[name].shape) == shape, name
    header = {"model.diffusion_model." + k: {"shape": list(v.shape)} for k, v in bfl.items()}
    assert detect_family(header) == "flux-dev"
    theirs = convert_flux_transformer_checkpoint_to_diffusers(dict(bfl))
    ours = to_diffusers(bfl)
    assert set(theirs) == set(ours) == set(model.state_dict())
    model.load_state_dict(ours, strict=True, assign=True)
    in_fp8 = {f"{name}.weight" for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and not any(re.search(p, name) for p in FP8_KEPT)}
    stored = sum(p.numel() * (1 if name in in_fp8 else 2) for name, p in model.named_parameters())
    assert round(sum(v.numel() * 2 for v in bfl.values()) / 2**30, 1) == 22.2  # bfloat16 (README)
    assert round(stored / 2**30, 1) == 11.1  # SDWEB_QUANTIZE=fp8 (README)


def test_a_whole_file_is_read_part_by_part(tiny_flux, tmp_path, monkeypatch):
    """Each module gets only its own tensors: a whole FLUX file (17-34 GB) is never loaded at once."""
    import safetensors

    seen = []
    real = safetensors.safe_open

    class Counting:
        def __init__(self, *args, **kwargs):
            self.file = real(*args, **kwargs)

        def __enter__(self):
            self.opened = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def keys(self):
            return self.opened.keys()

        def get_tensor(self, name):
            seen.append(name)
            return self.opened.get_tensor(name)

    monkeypatch.setattr(safetensors, "safe_open", Counting)
    PIPELINES.clear()
    files = tiny_flux["flux-schnell"]
    make(ref(files, "file"))
    assert sorted(seen) == sorted(read_header(files["file"]))  # each tensor read once


def test_an_fp8_t5_file_loads(tiny_flux, tmp_path):
    """ComfyUI's t5xxl_fp8_e4m3fn: the same names, float8 weights, widened as they load."""
    from safetensors.torch import load_file

    files = tiny_flux["flux-schnell"]
    fp8 = tmp_path / "t5xxl_fp8_e4m3fn.safetensors"
    save_file({k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v
               for k, v in load_file(files["text_encoders"] / "t5xxl_fp16.safetensors").items()}, fp8)
    model = ModelRef(str(files["transformer"]), config=str(files["config"]), parts=tuple(
        (part, str(fp8) if part == "text_encoder_2" else path) for part, path in parts(files)))
    assert pixels(make(model)[0]).std() > 10


def test_fp8_transformer_files_plain_and_scaled_load_within_float8s_precision(tiny_flux, tmp_path):
    files = tiny_flux["flux-dev"]
    fp8_files_load_within_float8s_precision(files, parts(files), tmp_path)


@pytest.mark.parametrize("quantize, share, closeness", [("int8", 0.6, 4), ("nf4", 0.35, 12)])
def test_int8_and_nf4_storage_keep_the_transformer_small_take_loras_and_still_make_the_image(tiny_flux, tmp_path,
                                                                                           quantize, share, closeness):
    """SDWEB_QUANTIZE=int8 (torchao's weight-only int8) or nf4 (bitsandbytes) for every linear layer
    but the first and last; the cache counts the bytes as stored. A LoRA can't be merged into such
    weights: it is added to the layers' outputs as they run, and taken away after."""
    from diffusers import FluxPipeline

    from generation.engine.loading import PIPELINES, module_bytes
    from generation.engine.request import LoraUse
    from generation.engine.testflux import make_tiny_flux_loras

    files = tiny_flux["flux-dev"]
    model = ref(files, "transformer")
    lora = make_tiny_flux_loras(FluxPipeline.from_pretrained(files["folder"]).transformer, tmp_path)["kohya"]
    with_lora = (LoraUse(ModelRef(str(lora), name="ink"), 1.0, 1.0),)
    plain, wide = pixels(make(model)[0]), PIPELINES.get(model)
    wide_lora = pixels(make(model, loras=with_lora)[0])
    PIPELINES.quantize = quantize
    try:
        loaded = PIPELINES.get(model)
        block = loaded.pipe.transformer.transformer_blocks[0]
        assert type(block.attn.to_q.weight.data) is not torch.Tensor or hasattr(block.attn.to_q.weight, "quant_state")
        assert type(loaded.pipe.transformer.proj_out.weight.data) is torch.Tensor  # the last layer kept wide
        assert module_bytes(block, loaded.device) < share * module_bytes(wide.pipe.transformer.transformer_blocks[0],
                                                                         loaded.device)
        stored = pixels(make(model)[0])
        stored_lora = pixels(make(model, loras=with_lora)[0])
        assert np.array_equal(pixels(make(model)[0]), stored)  # the LoRA taken away
    finally:
        PIPELINES.quantize = "none"
    assert stored.std() > 10 and np.abs(stored - plain).mean() < closeness
    assert np.abs(stored_lora - stored).mean() > 3 and np.abs(stored_lora - wide_lora).mean() < closeness


def test_fp8_storage_and_t5_on_the_cpu_still_make_the_image(tiny_flux):
    """SDWEB_QUANTIZE=fp8 keeps the transformer's weights in float8 (widened layer by layer as it
    runs); SDWEB_T5_DEVICE=cpu keeps T5 off the GPU. The tiny model's image barely changes."""
    from generation.engine.loading import PIPELINES

    model = ref(tiny_flux["flux-schnell"], "transformer")
    plain = pixels(make(model)[0])
    PIPELINES.quantize, PIPELINES.t5_device = "fp8", "cpu"
    try:
        loaded = PIPELINES.get(model)
        linears = [m for m in loaded.pipe.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
        assert {m.weight.dtype for m in linears} == {torch.float8_e4m3fn}
        assert loaded.pipe.text_encoder_2.device.type == "cpu"
        stored = pixels(make(model)[0])
    finally:
        PIPELINES.quantize, PIPELINES.t5_device = "none", ""
    assert stored.std() > 10 and np.abs(stored - plain).mean() < 12


def test_a_flux_lora_in_kohyas_and_peft_layouts_changes_the_image_alike_and_is_taken_back(tiny_flux, tmp_path):
    from diffusers import FluxPipeline

    from generation.engine.families import addon_family
    from generation.engine.request import LoraUse
    from generation.engine.testflux import make_tiny_flux_loras

    files = tiny_flux["flux-dev"]
    loras = make_tiny_flux_loras(FluxPipeline.from_pretrained(files["folder"]).transformer, tmp_path)
    assert addon_family("lora", loras["kohya"]) == addon_family("lora", loras["peft"]) == "flux"
    model = ref(files, "transformer")
    plain = pixels(make(model)[0])
    with_lora = {layout: pixels(make(model, loras=(LoraUse(ModelRef(str(file), name=layout, hash=layout), 0.8),))[0])
                 for layout, file in loras.items()}
    assert np.abs(with_lora["kohya"] - with_lora["peft"]).max() <= 2
    assert np.abs(with_lora["kohya"] - plain).mean() > 5
    assert np.array_equal(pixels(make(model)[0]), plain)  # the weights are back as they were


def test_flux_starts_from_a_picture_and_repaints_only_under_the_mask(tiny_flux):
    from PIL import Image

    model = ref(tiny_flux["flux-dev"], "transformer")
    start = Image.effect_noise((256, 256), 60).convert("RGB")
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    changed, previews = make(model, init_image=start, denoising_strength=0.5)
    assert [step for step, _, _ in previews] == [1, 2] and "Denoising strength: 0.5" in changed.parameters(0)
    painted = pixels(make(model, marked=False, init_image=start, mask=mask, mask_blur=0)[0])
    outside, inside = np.ones((256, 256), bool), np.zeros((256, 256), bool)
    outside[48:208, 48:208], inside[80:176, 80:176] = False, True
    original = np.asarray(start).astype(int)
    assert np.abs(painted - original)[outside].max() <= 2  # pasted back through the mask
    assert np.abs(painted - original)[inside].mean() > 10
    with pytest.raises(ValueError, match="inpainting_fill must be 0 \\(fill\\) or 1 \\(original\\) for FLUX.1"):
        make(model, init_image=start, mask=mask, inpainting_fill=2)


def test_flux_jobs_of_different_users_batched_make_their_images_alone(tiny_flux):
    """Two users' FLUX.1 jobs denoised as one run: each gets what it would have had alone."""
    from generation.engine.request import batch_key

    model = ModelRef(str(tiny_flux["flux-dev"]["transformer"]), family="flux-dev",
                     config=str(tiny_flux["flux-dev"]["config"]), parts=parts(tiny_flux["flux-dev"]))
    requests = [GenerationRequest(prompt=prompt, model=model, width=256, height=256, steps=3, seed=seed,
                                  scheduler="Euler a", num_images=count)
                for prompt, seed, count in (("a red house", 5, 2), ("a blue sky over the sea", 9, 1))]
    assert batch_key(requests[0]) == batch_key(requests[1]) is not None
    assert batch_key(requests[0]) != batch_key(GenerationRequest(prompt="x", model=model, width=256, height=256,
                                                                 steps=3, scheduler="Euler a",
                                                                 distilled_guidance_scale=2))
    batched_as_alone(requests)


@pytest.mark.parametrize("quantization", ["Q8_0", "Q5_1", "Q4_0"])
def test_a_gguf_transformer_makes_the_image_of_its_weights(tiny_flux, tmp_path, quantization):
    """A GGUF FLUX.1 file (BFL's names, quantized blocks) is told apart, loads with its blocks as
    they are, and makes nearly the picture of the weights it was quantized from."""
    from safetensors.torch import load_file

    from generation.engine.testflux import write_gguf

    files = tiny_flux["flux-dev"]
    path = write_gguf(load_file(files["transformer"]), tmp_path / f"flux1-dev-{quantization}.gguf", quantization)
    assert detect_family(read_header(path)) == "flux-dev"
    model = ModelRef(str(path), config=str(files["config"]), parts=parts(files))
    assert PIPELINES.get(model).pipe.transformer.transformer_blocks[0].attn.to_q.weight.quant_type.name == quantization
    result, previews = make(model)
    quantized = pixels(result)
    assert len(previews) == 4 and quantized.std() > 10
    PIPELINES.quantize = "fp8"  # a GGUF file is quantized already: kept as it is
    try:
        assert np.array_equal(pixels(make(model)[0]), quantized)
    finally:
        PIPELINES.quantize = "none"
    error = np.abs(quantized - pixels(make(ref(files, "transformer"))[0])).mean()
    assert error < {"Q8_0": 1, "Q5_1": 4, "Q4_0": 8}[quantization]  # measured 0.15, 1.1, 2.4


def test_two_flux_models_share_their_text_encoders_and_vae_counted_once(tiny_flux):
    from generation.engine.loading import PipelineCache, module_bytes

    cache = PipelineCache(budget_bytes=2**30)
    dev = cache.get(ref(tiny_flux["flux-dev"], "transformer"))
    schnell = cache.get(ref(tiny_flux["flux-schnell"], "transformer"))
    for part in ("text_encoder", "text_encoder_2", "vae"):
        assert getattr(dev.pipe, part) is getattr(schnell.pipe, part)
    assert dev.pipe.transformer is not schnell.pipe.transformer
    shared = sum(module_bytes(getattr(dev.pipe, part), dev.device) for part in ("text_encoder", "text_encoder_2", "vae"))
    whole = sum(module_bytes(m, dev.device) for m in dev.pipe.components.values() if isinstance(m, torch.nn.Module))
    assert cache.resident_bytes() == whole + module_bytes(schnell.pipe.transformer, dev.device)
    assert cache.resident_bytes() == dev.size_bytes + schnell.size_bytes + shared
    whole_file = cache.get(ref(tiny_flux["flux-dev"], "file"))  # its own parts, read from inside it
    assert whole_file.pipe.text_encoder_2 is not dev.pipe.text_encoder_2 and whole_file.parts == {}


def test_flux_previews_come_from_taef1_and_never_from_sds_taesd(tiny_flux, tmp_path):
    """An operator's TAESD is for SD's 4 latent channels: FLUX.1's 16 go to TAEF1, or the fitted factors."""
    import io

    from diffusers import AutoencoderTiny
    from PIL import Image

    for channels, folder in ((4, tmp_path / "taesd"), (16, tmp_path / "taef1")):
        torch.manual_seed(0)
        AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8),
                        latent_channels=channels).save_pretrained(folder)
    model = ref(tiny_flux["flux-schnell"], "transformer")
    last = []
    for settings in (PreviewSettings(min_interval=0, taesd=str(tmp_path / "taesd")),
                     PreviewSettings(min_interval=0, taesd=str(tmp_path / "taesd"), taef1=str(tmp_path / "taef1"))):
        previews = []
        generate(GenerationRequest(prompt="a red house", model=model, width=256, height=256, steps=2, scheduler="Euler"),
                 on_preview=lambda step, total, data: previews.append(Image.open(io.BytesIO(data))), preview=settings)
        assert len(previews) == 2 and max(previews[-1].size) == 256
        last.append(np.asarray(previews[-1].convert("RGB")).astype(int))
    assert np.abs(last[0] - last[1]).mean() > 5  # the fitted factors' picture, then TAEF1's


@pytest.mark.parametrize("upscaler", ["Latent", "Lanczos"])
def test_flux_hires_fix_makes_the_larger_image_in_a_second_pass(tiny_flux, upscaler):
    model = ref(tiny_flux["flux-dev"], "transformer")
    result, previews = make(model, enable_hr=True, hr_scale=1.5, hr_upscaler=upscaler, denoising_strength=0.5,
                            hr_second_pass_steps=2)
    assert result.images[0].size == (384, 384) and pixels(result).std() > 10
    assert [(step, total) for step, total, _ in previews] == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert f"Hires upscale: 1.5, Hires steps: 2, Hires upscaler: {upscaler}" in result.parameters(0)
    with pytest.raises(ValueError, match="hr_scale must make a size of multiples of 16 for FLUX.1 \\(got 264x264\\)"):
        make(model, enable_hr=True, hr_resize_x=264, hr_resize_y=264)


def test_flux_variation_seeds_move_the_noise_toward_the_subseeds(tiny_flux):
    model = ref(tiny_flux["flux-dev"], "transformer")
    plain, other = pixels(make(model, seed=7)[0]), pixels(make(model, seed=11)[0])
    half = make(model, seed=7, subseed=11, subseed_strength=0.5)[0]
    assert np.abs(pixels(make(model, seed=7, subseed=11, subseed_strength=1.0)[0]) - other).max() <= 2
    assert np.abs(pixels(half) - plain).mean() > 3 and np.abs(pixels(half) - other).mean() > 3
    assert "Variation seed: 11, Variation seed strength: 0.5" in half.parameters(0)


@pytest.mark.parametrize("union", [False, True], ids=["instantx", "union"])
def test_a_flux_controlnet_folder_or_file_guides_the_run_and_at_weight_0_changes_nothing(tiny_flux, tmp_path, union):
    """InstantX's layout (diffusers'), as a folder with its config.json or its .safetensors alone
    (the config read from its tensors); Shakker-Labs' union reads our edge maps in its Canny mode."""
    from PIL import Image

    from generation.engine.families import addon_family
    from generation.engine.request import ControlUnit
    from generation.engine.testflux import make_tiny_flux_controlnet

    files = make_tiny_flux_controlnet(tmp_path, union=union)
    assert addon_family("controlnet", files["file"]) == "flux"
    model = ref(tiny_flux["flux-dev"], "transformer")
    square, circle = Image.new("RGB", (256, 256)), Image.new("RGB", (256, 256))
    square.paste((255, 255, 255), (60, 60, 200, 200))
    circle.paste((255, 255, 255), (0, 0, 90, 256))

    def controlled(layout, hint, **unit):
        units = (ControlUnit(ModelRef(str(files[layout]), family="flux", name="cn"), hint, **unit),)
        return make(model, marked=False, controlnets=units)[0]

    plain = pixels(make(model, marked=False)[0])
    guided = controlled("folder", square)
    assert np.array_equal(pixels(guided), pixels(controlled("file", square)))
    assert np.abs(pixels(guided) - plain).mean() > 5 and np.abs(pixels(guided) - pixels(controlled("file", circle))).mean() > 2
    assert np.array_equal(pixels(controlled("file", square, weight=0.0)), plain)  # the same starting noise
    assert 'ControlNet 0: "Module: none, Model: cn [], Weight: 1' in guided.parameters(0)
    start = Image.effect_noise((256, 256), 60).convert("RGB")
    assert np.abs(pixels(make(model, marked=False, init_image=start, controlnets=(ControlUnit(
        ModelRef(str(files["file"]), family="flux", name="cn"), square),))[0]) - pixels(
        make(model, marked=False, init_image=start)[0])).mean() > 1  # img2img guided too
    with pytest.raises(ValueError, match=r"control_mode must be 0 \(Balanced\) for FLUX.1"):
        controlled("file", square, control_mode=1)


def test_an_xlabs_flux_controlnet_is_refused_naming_its_layout(tmp_path):
    from generation.engine.families import addon_family

    path = tmp_path / "flux-canny-controlnet-v3.safetensors"
    save_file({"double_blocks.0.img_attn.qkv.weight": torch.zeros(6, 2), "controlnet_blocks.0.weight": torch.zeros(2, 2),
               "input_hint_block.0.weight": torch.zeros(2, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="is an XLabs FLUX.1 ControlNet: its layout is not read here yet"):
        addon_family("controlnet", path)
