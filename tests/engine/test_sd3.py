"""SD 3.5 Large, Large Turbo and Medium from every layout people have them in: Stability's file (the
MMDiT with its VAE) with ComfyUI's clip_l, clip_g and t5xxl files beside it, one file holding all of
it, the transformer alone (safetensors or GGUF), a diffusers folder."""

import shutil

import numpy as np
import pytest
import torch

from generation.engine import GenerationRequest
from generation.engine.families import detect_family, family_config, file_family, read_header
from generation.engine.loading import PIPELINES
from generation.engine.parts import missing_parts
from generation.engine.request import ModelRef
from generation.engine.sd3 import LAYOUT, to_diffusers, to_sai
from tests.engine import runs
from tests.engine.runs import batched_as_alone, fp8_files_load_within_float8s_precision, pixels, reference


def parts(files) -> tuple:
    texts = files["text_encoders"]
    return (("text_encoder", str(texts / "clip_l.safetensors")), ("text_encoder_2", str(texts / "clip_g.safetensors")),
            ("text_encoder_3", str(texts / "t5xxl_fp16.safetensors")), ("vae", str(files["vae"])),
            ("tokenizer_3", str(texts / "t5_tokenizer")))


def ref(files, layout: str) -> ModelRef:
    return reference(files, layout, parts(files))


def make(model, **fields):
    return runs.make(model, **{"negative_prompt": "blurry", "steps": 3, "guidance_scale": 4.5} | fields)


@pytest.mark.parametrize("family", ["sd35-large", "sd35-medium"])
def test_each_layout_makes_the_same_image_with_previews_and_its_cfg_in_the_infotext(tiny_sd3, family):
    files = tiny_sd3[family]
    made = {layout: make(ref(files, layout)) for layout in ("file", "checkpoint", "transformer", "folder")}
    images = [pixels(result) for result, _ in made.values()]
    assert images[0].std() > 10 and images[0].shape == (256, 256, 3)
    assert all(np.abs(image - images[0]).max() <= 2 for image in images)  # the same weights, each layout
    result, previews = made["checkpoint"]
    assert [(step, total) for step, total, _ in previews] == [(1, 3), (2, 3), (3, 3)]
    infotext = result.parameters(0)
    assert "Negative prompt: blurry\n" in infotext and "CFG scale: 4.5, " in infotext and "Distilled" not in infotext


def test_the_negative_prompt_and_cfg_change_the_image_and_cfg_1_runs_without_one(tiny_sd3):
    model = ref(tiny_sd3["sd35-large"], "checkpoint")
    base = pixels(make(model)[0])
    assert np.abs(base - pixels(make(model, negative_prompt="a green tree")[0])).mean() > 1
    assert np.abs(base - pixels(make(model, guidance_scale=2.0)[0])).mean() > 1
    no_cfg = [pixels(make(model, guidance_scale=1.0, negative_prompt=negative)[0]) for negative in ("", "a tree")]
    assert np.array_equal(*no_cfg)  # Large Turbo's way: the negative prompt is not run


def test_each_file_is_told_apart_and_says_what_it_lacks(tiny_sd3, tmp_path):
    large, medium = tiny_sd3["sd35-large"], tiny_sd3["sd35-medium"]
    assert [file_family(large[layout]) for layout in ("file", "checkpoint", "transformer")] == ["sd35-large"] * 3
    assert file_family(medium["transformer"]) == "sd35-medium"
    turbo = tmp_path / "sd3.5_large_turbo.safetensors"
    shutil.copy(large["checkpoint"], turbo)
    assert file_family(turbo) == "sd35-large-turbo"  # the same tensors: its name tells
    assert missing_parts(LAYOUT, read_header(large["file"])) == []
    assert missing_parts(LAYOUT, read_header(large["checkpoint"])) == ["text_encoder", "text_encoder_2", "text_encoder_3"]
    no_qk_norm = {k: v for k, v in read_header(large["transformer"]).items() if ".ln_" not in k}
    with pytest.raises(ValueError, match="is an SD 3 Medium model: this studio runs SD 3.5"):
        detect_family(no_qk_norm)


def test_a_file_without_its_text_encoders_is_refused_naming_what_to_add(tiny_sd3):
    files = tiny_sd3["sd35-medium"]
    lacking = tuple(p for p in parts(files) if p[0] != "text_encoder_2")
    with pytest.raises(ValueError, match=r"this SD 3.5 file has no CLIP-G text encoder, and none was found beside it "
                                         r"\(the text-encoder folder needs clip_g.safetensors\)"):
        make(ModelRef(str(files["checkpoint"]), config=str(files["config"]), parts=lacking))


@pytest.mark.parametrize("family, blocks, parameters, shapes", [
    ("sd35-large", 38, 8_146_280_768, {"pos_embed": (1, 36864, 2432), "x_embedder.proj.weight": (2432, 16, 2, 2),
                                       "context_embedder.weight": (2432, 4096), "y_embedder.mlp.0.weight": (2432, 2048),
                                       "joint_blocks.0.x_block.attn.qkv.weight": (7296, 2432),
                                       "joint_blocks.37.context_block.adaLN_modulation.1.weight": (4864, 2432)}),
    ("sd35-medium", 24, 2_469_663_936, {"pos_embed": (1, 147456, 1536), "joint_blocks.12.x_block.attn2.qkv.weight":
                                        (4608, 1536), "joint_blocks.0.x_block.adaLN_modulation.1.weight": (13824, 1536)}),
])
def test_a_full_size_model_from_the_shipped_config_has_the_real_layout_and_loads(family, blocks, parameters, shapes):
    """8.1 B and 2.5 B parameters on the meta device (no memory), in Stability's names and shapes
    (16.3 and 4.9 GB in bfloat16, the sizes of the published files less their VAE), which
    diffusers' own converter reads onto every weight too."""
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    config = SD3Transformer2DModel.load_config(family_config(family) / "transformer")
    with torch.device("meta"):
        model = SD3Transformer2DModel.from_config(config)
    sai = to_sai(model.state_dict())
    assert sum(v.numel() for v in sai.values()) == parameters and f"joint_blocks.{blocks - 1}.x_block.mlp.fc2.bias" in sai
    for name, shape in shapes.items():
        assert tuple(sai[name].shape) == shape, name
    assert detect_family({"model.diffusion_model." + k: {"shape": list(v.shape)} for k, v in sai.items()}) == family
    theirs = convert_sd3_transformer_checkpoint_to_diffusers(dict(sai))
    ours = to_diffusers(sai)
    assert set(theirs) == set(ours) == set(model.state_dict())
    model.load_state_dict(ours, strict=True, assign=True)


def test_stabilitys_layout_is_read_back_exactly_as_diffusers_reads_it(tiny_sd3):
    from diffusers import SD3Transformer2DModel
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers

    state = SD3Transformer2DModel.from_pretrained(tiny_sd3["sd35-medium"]["folder"], subfolder="transformer").state_dict()
    sai = to_sai(state)
    for converted in (to_diffusers(sai), convert_sd3_transformer_checkpoint_to_diffusers(dict(sai))):
        assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)


def test_sd3_starts_from_a_picture_repaints_under_the_mask_and_runs_hires_fix(tiny_sd3):
    from PIL import Image

    model = ref(tiny_sd3["sd35-large"], "checkpoint")
    picture = Image.new("RGB", (256, 256), (200, 30, 30))
    changed = pixels(make(model, init_image=picture, denoising_strength=0.5)[0])
    assert changed.shape == (256, 256, 3) and np.abs(changed - np.asarray(picture)).mean() > 1
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (0, 0, 128, 256))
    inpainted = pixels(make(model, init_image=picture, mask=mask, denoising_strength=0.9, mask_blur=0)[0])
    assert np.abs(inpainted[:, 160:] - np.asarray(picture)[:, 160:]).max() <= 2  # kept outside the mask
    assert np.abs(inpainted[:, :96] - np.asarray(picture)[:, :96]).mean() > 5
    hires, previews = make(model, enable_hr=True, hr_scale=1.5, hr_upscaler="Latent", hr_second_pass_steps=2)
    assert hires.images[0].size == (384, 384) and len(previews) == 5


def test_sd3_jobs_of_different_users_batched_make_their_images_alone_each_with_its_cfg(tiny_sd3):
    from generation.engine.request import batch_key

    files = tiny_sd3["sd35-medium"]
    model = ModelRef(str(files["checkpoint"]), family="sd35-medium", config=str(files["config"]), parts=parts(files))
    requests = [GenerationRequest(prompt=prompt, negative_prompt=negative, model=model, width=256, height=256, steps=3,
                                  seed=seed, scheduler="Euler a", guidance_scale=cfg, num_images=count)
                for prompt, negative, seed, cfg, count in (("a red house", "", 5, 4.5, 2),
                                                           ("a blue sky over the sea", "clouds", 9, 7.0, 1))]
    assert batch_key(requests[0]) == batch_key(requests[1]) is not None
    batched_as_alone(requests)


def test_a_gguf_transformer_with_the_checkpoints_vae_file_makes_the_image_of_its_weights(tiny_sd3, tmp_path):
    from safetensors.torch import load_file

    from generation.engine.testflux import write_gguf

    files = tiny_sd3["sd35-large"]
    path = write_gguf(load_file(files["transformer"]), tmp_path / "sd3.5_large-Q8_0.gguf", "Q8_0")
    assert detect_family(read_header(path)) == "sd35-large"
    model = ModelRef(str(path), config=str(files["config"]), parts=parts(files))
    assert PIPELINES.get(model).pipe.transformer.transformer_blocks[0].attn.to_q.weight.quant_type.name == "Q8_0"
    assert np.abs(pixels(make(model)[0]) - pixels(make(ref(files, "checkpoint"))[0])).mean() < 1


def test_sd3_and_flux_share_one_t5_file_and_two_sd3_models_their_text_encoders(tiny_sd3):
    from generation.engine.loading import PipelineCache

    cache = PipelineCache(budget_bytes=2**30)
    large = cache.get(ref(tiny_sd3["sd35-large"], "checkpoint"))
    medium = cache.get(ref(tiny_sd3["sd35-medium"], "transformer"))
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        assert getattr(large.pipe, part) is getattr(medium.pipe, part)
    assert large.pipe.vae is not medium.pipe.vae  # Stability's file holds its own; the other's is a file of its own


def test_a_sd3_lora_in_kohyas_and_peft_layouts_changes_the_image_alike_and_is_taken_back(tiny_sd3, tmp_path):
    from diffusers import SD3Transformer2DModel

    from generation.engine.families import addon_family
    from generation.engine.request import LoraUse
    from generation.engine.testsd3 import make_tiny_sd3_loras

    files = tiny_sd3["sd35-medium"]
    loras = make_tiny_sd3_loras(SD3Transformer2DModel.from_pretrained(files["folder"], subfolder="transformer"), tmp_path)
    model = ref(files, "checkpoint")
    plain = pixels(make(model)[0])
    made = {}
    for layout, path in loras.items():
        assert addon_family("lora", path) == "sd35"
        made[layout] = pixels(make(model, loras=(LoraUse(ModelRef(str(path), name=layout), 1.0, 1.0),))[0])
    assert np.abs(made["kohya"] - plain).mean() > 1 and np.abs(made["kohya"] - made["peft"]).max() <= 2
    assert np.array_equal(pixels(make(model)[0]), plain)  # taken back after the run


@pytest.mark.parametrize("fields, message", [
    ({"width": 264}, "width must be a multiple of 16 for SD 3.5"),
    ({"scheduler": "DPM++ 2M Karras"}, "scheduler must be Euler or Euler a for SD 3.5"),
])
def test_what_sd3_does_not_take_is_refused_naming_the_field(tiny_sd3, fields, message):
    with pytest.raises(ValueError, match=message):
        make(ref(tiny_sd3["sd35-large"], "checkpoint"), **fields)


@pytest.mark.parametrize("t5_device", ["cpu", "offload"])
def test_fp8_storage_t5_on_the_cpu_and_variation_seeds_work_for_sd3(tiny_sd3, t5_device):
    """As for FLUX.1: SDWEB_QUANTIZE=fp8 keeps the MMDiT in float8 and SDWEB_T5_DEVICE=cpu (or offload:
    on the GPU for the prompts only; on this CPU-only machine its move can't be seen) keeps T5 off the
    GPU, the image barely changing; a variation seed of strength 1 makes the subseed's image."""
    model = ref(tiny_sd3["sd35-medium"], "checkpoint")
    plain, other = pixels(make(model, seed=7)[0]), pixels(make(model, seed=11)[0])
    assert np.abs(pixels(make(model, seed=7, subseed=11, subseed_strength=1.0)[0]) - other).max() <= 2
    PIPELINES.quantize, PIPELINES.t5_device = "fp8", t5_device
    try:
        loaded = PIPELINES.get(model)
        linears = [m for m in loaded.pipe.transformer.transformer_blocks.modules() if isinstance(m, torch.nn.Linear)]
        assert {m.weight.dtype for m in linears} == {torch.float8_e4m3fn}
        assert loaded.pipe.text_encoder_3.device.type == "cpu"
        stored = pixels(make(model, seed=7)[0])
    finally:
        PIPELINES.quantize, PIPELINES.t5_device = "none", ""
    assert stored.std() > 10 and np.abs(stored - plain).mean() < 12


def test_fp8_transformer_files_plain_and_scaled_load_within_float8s_precision(tiny_sd3, tmp_path):
    fp8_files_load_within_float8s_precision(tiny_sd3["sd35-medium"], parts(tiny_sd3["sd35-medium"]), tmp_path)
