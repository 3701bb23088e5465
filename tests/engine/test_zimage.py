"""Z-Image Turbo from the layouts people have it in: the transformer file alone (safetensors or GGUF)
with ComfyUI's qwen_3_4b and FLUX.1's ae files beside it, one file holding all of it, a diffusers
folder."""

import numpy as np
import pytest
import torch

from generation.engine import GenerationRequest
from generation.engine.families import detect_family, family_config, file_family, read_header
from generation.engine.loading import PIPELINES
from generation.engine.parts import missing_parts
from generation.engine.request import ModelRef, batch_key
from generation.engine.zimage import LAYOUT, to_diffusers, to_original
from tests.engine import runs
from tests.engine.runs import batched_as_alone, fp8_files_load_within_float8s_precision, pixels, reference


def parts(files) -> tuple:
    texts = files["text_encoders"]
    return (("text_encoder", str(texts / "qwen_3_4b.safetensors")), ("vae", str(files["vae"])),
            ("tokenizer", str(texts / "qwen3_tokenizer")))


def ref(files, layout: str) -> ModelRef:
    return reference(files, layout, parts(files))


def make(model, **fields):
    return runs.make(model, **{"steps": 3, "guidance_scale": 1.0} | fields)


def test_each_layout_makes_the_same_image_with_previews(tiny_zimage):
    made = {layout: make(ref(tiny_zimage, layout)) for layout in ("file", "transformer", "folder")}
    images = [pixels(result) for result, _ in made.values()]
    assert images[0].std() > 10 and images[0].shape == (256, 256, 3)
    assert all(np.abs(image - images[0]).max() <= 2 for image in images)
    result, previews = made["transformer"]
    assert [(step, total) for step, total, _ in previews] == [(1, 3), (2, 3), (3, 3)]
    assert "CFG scale: 1, " in result.parameters(0)


def test_cfg_counts_as_a1111_counts_it_and_runs_the_negative_prompt_only_above_1(tiny_zimage):
    model = ref(tiny_zimage, "transformer")
    plain = pixels(make(model)[0])
    assert np.array_equal(plain, pixels(make(model, negative_prompt="a blue sky")[0]))  # CFG 1: off, as Turbo runs
    guided = pixels(make(model, guidance_scale=3.0)[0])
    assert np.abs(guided - plain).mean() > 1
    assert np.abs(guided - pixels(make(model, guidance_scale=3.0, negative_prompt="a blue sky")[0])).mean() > 1


def test_each_file_is_told_apart_and_says_what_it_lacks(tiny_zimage):
    assert file_family(tiny_zimage["file"]) == file_family(tiny_zimage["transformer"]) == "zimage-turbo"
    assert missing_parts(LAYOUT, read_header(tiny_zimage["file"])) == []
    assert missing_parts(LAYOUT, read_header(tiny_zimage["transformer"])) == ["text_encoder", "vae"]
    lacking = tuple(p for p in parts(tiny_zimage) if p[0] != "text_encoder")
    with pytest.raises(ValueError, match=r"this Z-Image file has no Qwen3 4B text encoder, and none was found beside it "
                                         r"\(the text-encoder folder needs qwen_3_4b.safetensors\)"):
        make(ModelRef(str(tiny_zimage["transformer"]), config=str(tiny_zimage["config"]), parts=lacking))
    no_tokenizer = tuple(p for p in parts(tiny_zimage) if p[0] != "tokenizer")
    with pytest.raises(ValueError, match="Qwen3's tokenizer is missing: .* manage.py fetch_tokenizers"):
        make(ModelRef(str(tiny_zimage["transformer"]), config=str(tiny_zimage["config"]), parts=no_tokenizer))


def test_the_original_layout_is_read_back_exactly_as_diffusers_reads_it(tiny_zimage):
    from diffusers import ZImageTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_z_image_transformer_checkpoint_to_diffusers

    state = ZImageTransformer2DModel.from_pretrained(tiny_zimage["folder"], subfolder="transformer").state_dict()
    original = to_original(state)
    assert "layers.1.attention.qkv.weight" in original and "final_layer.adaLN_modulation.1.weight" in original
    for converted in (to_diffusers(original), convert_z_image_transformer_checkpoint_to_diffusers(dict(original))):
        assert set(converted) == set(state) and all(torch.equal(converted[k], state[k]) for k in state)


def test_a_full_size_z_image_from_the_shipped_config_has_the_real_layout_and_loads():
    """6.15 B parameters on the meta device (12.3 GB in bfloat16: the published bf16 file's size), in
    the original names, read back onto every weight; its Qwen3 4B text encoder 4.0 B."""
    import transformers
    from diffusers import ZImageTransformer2DModel

    config = ZImageTransformer2DModel.load_config(family_config("zimage-turbo") / "transformer")
    with torch.device("meta"):
        model = ZImageTransformer2DModel.from_config(config)
        qwen = transformers.Qwen3Model(transformers.Qwen3Config.from_pretrained(family_config("zimage-turbo") /
                                                                                "text_encoder"))
    original = to_original(model.state_dict())
    assert sum(v.numel() for v in original.values()) == 6_154_908_736
    assert sum(p.numel() for p in qwen.parameters()) == 4_022_468_096
    for name, shape in {"x_embedder.weight": (3840, 64), "cap_embedder.1.weight": (3840, 2560),
                        "layers.29.attention.qkv.weight": (11520, 3840), "layers.0.adaLN_modulation.0.weight": (15360, 256),
                        "final_layer.linear.weight": (64, 3840)}.items():
        assert tuple(original[name].shape) == shape, name
    assert detect_family({"model.diffusion_model." + k: {"shape": list(v.shape)} for k, v in original.items()}) == \
        "zimage-turbo"
    model.load_state_dict(to_diffusers(original), strict=True, assign=True)


def test_z_image_starts_from_a_picture_repaints_under_the_mask_and_keeps_variation_seeds(tiny_zimage):
    from PIL import Image

    model = ref(tiny_zimage, "transformer")
    picture = Image.new("RGB", (256, 256), (200, 30, 30))
    changed = pixels(make(model, init_image=picture, denoising_strength=0.5)[0])
    assert np.abs(changed - np.asarray(picture)).mean() > 1
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (0, 0, 128, 256))
    inpainted = pixels(make(model, init_image=picture, mask=mask, denoising_strength=0.9, mask_blur=0)[0])
    assert np.abs(inpainted[:, 160:] - np.asarray(picture)[:, 160:]).max() <= 2
    assert np.abs(inpainted[:, :96] - np.asarray(picture)[:, :96]).mean() > 5
    other = pixels(make(model, seed=11)[0])
    assert np.abs(pixels(make(model, seed=7, subseed=11, subseed_strength=1.0)[0]) - other).max() <= 2
    two, _ = make(model, num_images=2)
    assert np.abs(pixels(two, 0) - pixels(make(model)[0])).max() <= 2 and np.abs(pixels(two, 1) - pixels(two, 0)).mean() > 1


def test_a_gguf_z_image_and_its_loras_in_kohyas_and_peft_layouts(tiny_zimage, tmp_path):
    from diffusers import ZImageTransformer2DModel
    from safetensors.torch import load_file

    from generation.engine.families import addon_family
    from generation.engine.request import LoraUse
    from generation.engine.testflux import tiny_loras, write_gguf
    from generation.engine.zimage import _renamed

    path = write_gguf(load_file(tiny_zimage["transformer"]), tmp_path / "z_image_turbo-Q8_0.gguf", "Q8_0")
    assert detect_family(read_header(path)) == "zimage-turbo"
    gguf = ModelRef(str(path), config=str(tiny_zimage["config"]), parts=parts(tiny_zimage))
    assert PIPELINES.get(gguf).pipe.transformer.layers[0].attention.to_q.weight.quant_type.name == "Q8_0"
    model = ref(tiny_zimage, "transformer")
    plain = pixels(make(model)[0])
    assert np.abs(pixels(make(gguf)[0]) - plain).mean() < 1

    transformer = ZImageTransformer2DModel.from_pretrained(tiny_zimage["folder"], subfolder="transformer")
    table = [(_renamed(name + ".", backwards=True)[:-1], (name,)) for name, m in transformer.named_modules()
             if isinstance(m, torch.nn.Linear) and name.startswith("layers.")
             and not name.endswith((".to_q", ".to_k", ".to_v"))]
    table += [(f"layers.{i}.attention.qkv", tuple(f"layers.{i}.attention.to_{x}" for x in "qkv")) for i in range(2)]
    loras = tiny_loras(transformer, tmp_path, table, "tiny-zimage-lora", within="layers.")
    made = {}
    for layout, lora in loras.items():
        assert addon_family("lora", lora) == "zimage"
        made[layout] = pixels(make(model, loras=(LoraUse(ModelRef(str(lora), name=layout), 1.0, 1.0),))[0])
    assert np.abs(made["kohya"] - plain).mean() > 1 and np.abs(made["kohya"] - made["peft"]).mean() < 0.5
    assert np.array_equal(pixels(make(model)[0]), plain)
    on_gguf = pixels(make(gguf, loras=(LoraUse(ModelRef(str(loras["kohya"]), name="kohya"), 1.0, 1.0),))[0])
    assert np.abs(on_gguf - made["kohya"]).mean() < 1.5  # added as the quantized layers run


def test_fp8_storage_and_qwen3_on_the_cpu_still_make_the_image(tiny_zimage):
    model = ref(tiny_zimage, "transformer")
    plain = pixels(make(model)[0])
    PIPELINES.quantize, PIPELINES.t5_device = "fp8", "cpu"
    try:
        loaded = PIPELINES.get(model)
        assert loaded.pipe.transformer.layers[0].attention.to_q.weight.dtype == torch.float8_e4m3fn
        assert loaded.pipe.text_encoder.device.type == "cpu"
        stored = pixels(make(model)[0])
    finally:
        PIPELINES.quantize, PIPELINES.t5_device = "none", ""
    assert stored.std() > 10 and np.abs(stored - plain).mean() < 12


def test_fp8_transformer_files_plain_and_scaled_load_within_float8s_precision(tiny_zimage, tmp_path):
    fp8_files_load_within_float8s_precision(tiny_zimage, parts(tiny_zimage), tmp_path)


def test_z_image_jobs_of_different_users_batched_make_their_images_alone(tiny_zimage):
    """Prompts of different lengths, negative prompts and image counts in one run; one CFG scale a run."""

    model = ModelRef(str(tiny_zimage["transformer"]), family="zimage-turbo", config=str(tiny_zimage["config"]),
                     parts=parts(tiny_zimage))
    requests = [GenerationRequest(prompt=prompt, negative_prompt=negative, model=model, width=256, height=256, steps=3,
                                  seed=seed, scheduler="Euler a", guidance_scale=2.0, num_images=count)
                for prompt, negative, seed, count in (("a red house", "", 5, 2),
                                                      ("a blue sky over the sea at night", "a cat", 9, 1))]
    assert batch_key(requests[0]) == batch_key(requests[1]) is not None
    assert batch_key(requests[0]) != batch_key(GenerationRequest(prompt="x", model=model, guidance_scale=3.0))
    batched_as_alone(requests)
