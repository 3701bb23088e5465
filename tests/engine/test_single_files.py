"""Single-file checkpoints in the LDM layout, loaded offline through the code real files use."""

import json
import re
import socket
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from generation.engine import GenerationRequest, generate, load_pipeline
from generation.engine.families import FAMILIES, detect_family, read_header
from generation.engine.loading import PipelineCache
from generation.engine.prompts import encode_prompts_xl
from generation.engine.request import ModelRef

SD = [name for name, family in FAMILIES.items() if not family.transformer]  # FLUX.1, SD 3.5: test_flux.py, test_sd3.py
TXT2IMG = [name for name in SD if FAMILIES[name].role == "txt2img"]


def ref(tiny_families, family, **fields):
    return ModelRef(str(tiny_families[family]["file"]), config=str(tiny_families[family]["config"]), **fields)


def make(model, **fields):
    request = GenerationRequest(**{"prompt": "a (red:1.2) lighthouse BREAK at dusk", "negative_prompt": "fog",
                                   "model": model, "width": 256, "height": 256, "steps": 3, "seed": 11, **fields})
    return generate(request)


def pixels(result, k=0):
    return np.asarray(result.images[k]).astype(int)


@pytest.mark.parametrize("family", SD)
def test_each_family_is_told_from_its_tensor_names(tiny_families, family):
    header = read_header(tiny_families[family]["file"])
    assert detect_family(header, v_prediction=family == "sd2-v") == family


def test_an_sd2_file_is_v_prediction_when_the_yaml_beside_it_says_so(tiny_families, tmp_path):
    from generation.engine.families import v_prediction_beside

    file = tmp_path / "sd21-768.safetensors"
    file.symlink_to(tiny_families["sd2"]["file"])
    assert not v_prediction_beside(file)
    (tmp_path / "sd21-768.yaml").write_text("model:\n  params:\n    parameterization: \"v\"\n")
    assert v_prediction_beside(file)


@pytest.mark.parametrize("family", TXT2IMG)
def test_a_single_file_makes_the_same_image_as_the_same_model_as_a_diffusers_folder(tiny_families, family):
    from_file = make(ref(tiny_families, family))
    from_folder = make(str(tiny_families[family]["folder"]))
    assert pixels(from_file).std() > 10  # an image, not a blank
    assert np.array_equal(pixels(from_file), pixels(from_folder))


def test_v_prediction_and_epsilon_models_of_the_same_weights_differ(tiny_families):
    assert not np.array_equal(pixels(make(ref(tiny_families, "sd2"))), pixels(make(ref(tiny_families, "sd2-v"))))


def test_loading_a_single_file_never_touches_the_network(tiny_families, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    cache = PipelineCache(budget_bytes=2**30)
    for family in ("sd1", "sdxl", "sdxl-refiner"):
        assert cache.get(ref(tiny_families, family)).family == family


def test_the_model_hash_of_a_single_file_is_the_first_10_digits_of_its_sha256(tiny_families):
    import hashlib

    file = tiny_families["sd1"]["file"]
    result = make(ref(tiny_families, "sd1"))
    assert result.model_hash == hashlib.sha256(file.read_bytes()).hexdigest()[:10]
    assert result.model_name == "sd1" and f"Model hash: {result.model_hash}, Model: sd1" in result.parameters(0)


def test_a_hash_given_by_the_caller_is_used_without_reading_the_file_again(tiny_families):
    assert make(ref(tiny_families, "sd1", name="My model", hash="0123456789")).parameters(0).count(
        "Model hash: 0123456789, Model: My model") == 1


def test_sdxl_encodes_both_encoders_in_75_token_chunks_with_a_pooled_embedding(tiny_families):
    pipe = load_pipeline(ref(tiny_families, "sdxl")).pipe
    encoders = [(pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2)]
    positive, negative, pooled, negative_pooled = encode_prompts_xl(encoders, "a cat BREAK a (dog:1.3)", "", "cpu")
    assert positive.shape == negative.shape == (1, 2 * 77, 32 + 64)  # two chunks; both encoders side by side
    assert pooled.shape == (1, 32) and not torch.all(pooled == 0)
    assert torch.all(negative == 0) and torch.all(negative_pooled == 0)  # an empty negative is zeros, as in A1111


def test_sdxl_switches_both_encoders_and_the_pooled_embedding_with_prompt_editing_and_hires_fix(tiny_families):
    sdxl = ref(tiny_families, "sdxl")
    alone = {text: pixels(make(sdxl, prompt=text, negative_prompt="", steps=4, scheduler="Euler"))
             for text in ("a cat", "a dog", "a [cat|dog]", "a [cat:dog:0]")}
    assert np.abs(alone["a [cat:dog:0]"] - alone["a dog"]).max() <= 2  # dog from the first step
    assert not np.array_equal(alone["a [cat|dog]"], alone["a cat"])
    hires = make(sdxl, prompt="a [cat|dog]", negative_prompt="", steps=4, scheduler="Euler", enable_hr=True,
                 hr_scale=1.25, hr_second_pass_steps=4)
    assert hires.images[0].size == (320, 320)


def test_the_refiner_takes_over_at_the_switch_point_and_is_written_as_a1111_writes_it(tiny_families):
    previews = []
    base = make(ref(tiny_families, "sdxl"), steps=5)
    refined = generate(GenerationRequest(prompt="a lighthouse", model=ref(tiny_families, "sdxl"), width=256,
                                         height=256, steps=5, seed=11, refiner=ref(tiny_families, "sdxl-refiner"),
                                         refiner_switch_at=0.6),
                       on_preview=lambda step, total, image: previews.append((step, total)))
    assert not np.array_equal(pixels(base), pixels(refined))
    assert previews[-1] == (5, 5) and [s for s, _ in previews] == sorted(s for s, _ in previews)
    hash_ = load_pipeline(ref(tiny_families, "sdxl-refiner")).hash
    assert f"Refiner: sdxl-refiner [{hash_}], Refiner switch at: 0.6" in refined.parameters(0)


@pytest.mark.parametrize("model, refiner, message", [
    ("sdxl-refiner", None, "can't make an image from text alone"),
    ("sd1-inpaint", None, "can.t make an image without a mask"),
    ("sd1", "sdxl-refiner", "a refiner must be an SDXL refiner or base, for an SDXL checkpoint"),
])
def test_models_are_used_only_for_what_they_can_do(tiny_families, model, refiner, message):
    with pytest.raises(ValueError, match=message):
        make(ref(tiny_families, model), refiner=refiner and ref(tiny_families, refiner))


def test_clip_skip_changes_an_sd1_image_and_is_recorded(tiny_families):
    plain, skipped = make(ref(tiny_families, "sd1")), make(ref(tiny_families, "sd1"), clip_skip=2)
    assert not np.array_equal(pixels(plain), pixels(skipped))
    assert "Clip skip: 2" in skipped.parameters(0) and "Clip skip" not in plain.parameters(0)


def test_sdxl_keeps_its_trained_layer_under_clip_skip_as_a1111_does(tiny_families):
    plain, skipped = make(ref(tiny_families, "sdxl")), make(ref(tiny_families, "sdxl"), clip_skip=2)
    assert np.array_equal(pixels(plain), pixels(skipped)) and "Clip skip: 2" in skipped.parameters(0)


def test_an_sdxl_vae_stays_in_float32_when_the_model_runs_in_float16(tiny_families):
    loaded = PipelineCache(2**30).get(ref(tiny_families, "sdxl"), device="cpu", dtype="float16")
    assert loaded.pipe.unet.dtype == torch.float16 and loaded.pipe.vae.dtype == torch.float32


def lora_like(path):
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8)}, path)


def vae_alone(path):
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(2, 2)}, path)


def embedding(path):
    save_file({"emb_params": torch.zeros(2, 768)}, path)


def controlnet(path):
    save_file({"control_model.input_hint_block.0.weight": torch.zeros(2, 2)}, path)


def something_else(path):
    save_file({"weights": torch.zeros(3)}, path)


def truncated(path, tiny_families=None):
    path.write_bytes(tiny_families["sd1"]["file"].read_bytes()[:100_000])


def not_safetensors(path):
    path.write_bytes(b"PK\x03\x04 a zip file, not tensors")


def bad_header(path):
    path.write_bytes(struct.pack("<Q", 12) + b"{not json}..")


@pytest.mark.parametrize("write, message", [
    (lora_like, "looks like a LoRA"), (vae_alone, "looks like a VAE on its own"),
    (embedding, "looks like a textual-inversion embedding"), (controlnet, "looks like a ControlNet"),
    (something_else, "looks like something else .1 tensors, the first named 'weights'"),
    (truncated, "truncated"), (not_safetensors, "not a safetensors file"), (bad_header, "header is not JSON"),
])
def test_a_file_that_is_not_a_checkpoint_gets_an_error_naming_what_it_is(tmp_path, tiny_families, write, message):
    path = tmp_path / "download.safetensors"
    write(path, tiny_families) if write is truncated else write(path)
    with pytest.raises(ValueError, match=message) as error:
        load_pipeline(str(path))
    assert str(tmp_path) not in str(error.value)  # users see this: no server paths


FLUX = {"double_blocks.0.img_attn.norm.key_norm.scale": [8], "img_in.weight": [16, 64]}
NEWER = [  # each family's telling tensors with small shapes, as its transformer alone (ComfyUI's diffusion_models);
    # FLUX.1, SD 3.5 and Z-Image themselves run (test_flux.py, test_sd3.py, test_zimage.py)
    ({**FLUX, "single_stream_modulation.lin.weight": [8]}, "FLUX.2"),
    ({**FLUX, "distilled_guidance_layer.in_proj.bias": [8]}, "Chroma"),
    ({"single_transformer_blocks.0.attn.norm_q.weight": [8], "txt_in.text_norm.weight": [8]}, "Qwen-Image"),
    ({"layers.0.adaLN_modulation.1.weight": [8], "cap_embedder.0.weight": [8]}, "Lumina 2"),
]


@pytest.mark.parametrize("whole", [False, True], ids=["transformer alone", "whole file"])
@pytest.mark.parametrize("tensors, family", NEWER, ids=[family for _, family in NEWER])
def test_a_file_of_a_family_this_studio_doesnt_run_is_refused_naming_it(tmp_path, tensors, family, whole):
    prefix = "model.diffusion_model." if whole else ""
    extra = {"text_encoders.clip_l.transformer.text_model.final_layer_norm.weight": torch.zeros(8),
             "first_stage_model.decoder.conv_out.weight": torch.zeros(3, 8)} if whole else {}
    path = tmp_path / "new-model.safetensors"
    save_file({prefix + name: torch.zeros(shape) for name, shape in tensors.items()} | extra, path)
    with pytest.raises(ValueError, match=rf"is a {re.escape(family)} model: this studio runs SD 1.x, SD 2.x, SDXL, "
                                         "SD 3.5, FLUX.1 and Z-Image"):
        load_pipeline(str(path))


def test_a_checkpoint_without_a_vae_or_with_an_odd_unet_is_refused(tiny_families):
    header = read_header(tiny_families["sd1"]["file"])
    no_vae = {k: v for k, v in header.items() if not k.startswith("first_stage_model.")}
    with pytest.raises(ValueError, match="no VAE"):
        detect_family(no_vae)
    odd = json.loads(json.dumps(header))
    odd["model.diffusion_model.input_blocks.0.0.weight"]["shape"][1] = 8
    with pytest.raises(ValueError, match="8 input channels"):
        detect_family(odd)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_a_vae_file_decodes_instead_of_the_checkpoints_own_in_either_layout(tiny_families, tmp_path, family):
    from generation.engine.testmodel import make_tiny_vae

    ldm = make_tiny_vae(family, tmp_path / "vae-ft-mse.safetensors")
    flat = make_tiny_vae(family, tmp_path / "diffusers-vae.safetensors", layout="diffusers")
    own, with_ldm, with_flat = (make(ref(tiny_families, family), vae=vae) for vae in (None, str(ldm), str(flat)))
    assert not np.array_equal(pixels(own), pixels(with_ldm))
    assert np.array_equal(pixels(with_ldm), pixels(with_flat))  # the same weights, whatever the layout
    import hashlib

    assert f"VAE hash: {hashlib.sha256(ldm.read_bytes()).hexdigest()[:10]}, VAE: vae-ft-mse.safetensors" in \
        with_ldm.parameters(0)


def test_a_checkpoint_given_as_a_vae_is_refused_naming_what_it_is(tiny_families):
    with pytest.raises(ValueError, match="this is not a VAE: it looks like a whole checkpoint"):
        make(ref(tiny_families, "sd1"), vae=str(tiny_families["sd1"]["file"]))


def test_an_sdxl_run_with_its_refiner_stops_when_cancelled(tiny_families):
    from generation.engine import GenerationCancelled, PreviewSettings

    steps = []
    with pytest.raises(GenerationCancelled):
        generate(GenerationRequest(prompt="x", model=ref(tiny_families, "sdxl"), width=256, height=256, steps=10,
                                   seed=1, refiner=ref(tiny_families, "sdxl-refiner")),
                 on_preview=lambda step, total, image: steps.append(step), should_cancel=lambda: len(steps) >= 1,
                 preview=PreviewSettings(min_interval=0))
    assert steps == [1]
