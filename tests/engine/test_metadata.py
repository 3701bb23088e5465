import io

import pytest
from PIL import Image

from generation.engine import SCHEDULERS, format_parameters, parse_parameters, read_png_parameters, resolve_scheduler, save_png

AWKWARD_PROMPTS = [
    "a cat, a dog, and a bird",
    "ratio 16:9, time: noon",
    'she said "hello, world"',
    '"quoted at the start"',
    "first line\nsecond line, with a comma",
    "café, 日本語の猫, emoji 🐱: yes",
    "trailing backslash \\",
    "Steps: 99, Sampler: fake, Seed: 1",
]


def fields(**overrides):
    return {"prompt": "a lighthouse", "negative_prompt": "", "steps": 20, "scheduler": "Euler a",
            "guidance_scale": 7.0, "seed": 1234, "width": 512, "height": 768,
            "model_hash": "6ce0161689", "model_name": "v1-5-pruned-emaonly", **overrides}


def test_the_parameter_line_reads_as_a1111_writes_it():
    text = format_parameters(**fields(scheduler="DPM++ 2M Karras", negative_prompt="blurry"))
    assert text.splitlines() == [
        "a lighthouse",
        "Negative prompt: blurry",
        "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 512x768, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: sdweb 0.1.0",
    ]


def test_no_negative_prompt_line_when_there_is_none():
    assert "Negative prompt" not in format_parameters(**fields())


@pytest.mark.parametrize("prompt", AWKWARD_PROMPTS)
def test_awkward_prompts_round_trip_through_a_png(prompt):
    text = format_parameters(**fields(prompt=prompt, negative_prompt=prompt + " (negative)", guidance_scale=6.5,
                                      model_name="my model, v2: final"))
    buffer = io.BytesIO()
    save_png(Image.new("RGB", (8, 8)), buffer, text)
    info = parse_parameters(read_png_parameters(Image.open(io.BytesIO(buffer.getvalue()))))
    assert info["prompt"] == prompt
    assert info["negative_prompt"] == prompt + " (negative)"
    assert (info["steps"], info["cfg_scale"], info["seed"], info["width"], info["height"]) == (20, 6.5, 1234, 512, 768)
    assert (info["model"], info["model_hash"], info["scheduler"]) == ("my model, v2: final", "6ce0161689", "Euler a")


# An infotext as AUTOMATIC1111 1.10 writes it, with extension keys and quoted values.
A1111_INFOTEXT = """masterpiece, best quality, 1girl, (smile:1.2), <lora:add_detail:0.5>
Negative prompt: (worst quality, low quality:1.4), easynegative
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7.5, Seed: 3620451375, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse-840000-ema-pruned.safetensors, \
Denoising strength: 0.4, Clip skip: 2, Hires upscale: 2, Hires upscaler: Latent, \
Lora hashes: "add_detail: 7c6bad76eb54", TI hashes: "easynegative: c74b4e810b03", Version: v1.10.1"""


def test_a_genuine_a1111_infotext_is_read_with_its_extra_keys_as_strings():
    info = parse_parameters(A1111_INFOTEXT)
    assert info["prompt"] == "masterpiece, best quality, 1girl, (smile:1.2), <lora:add_detail:0.5>"
    assert info["negative_prompt"] == "(worst quality, low quality:1.4), easynegative"
    assert (info["steps"], info["cfg_scale"], info["seed"]) == (28, 7.5, 3620451375)
    assert (info["width"], info["height"], info["clip_skip"]) == (512, 768, 2)
    assert info["scheduler"] == "DPM++ 2M Karras"
    assert info["Lora hashes"] == "add_detail: 7c6bad76eb54"
    assert info["TI hashes"] == "easynegative: c74b4e810b03"
    assert info["Hires upscaler"] == "Latent" and info["Denoising strength"] == "0.4"
    assert info["version"] == "v1.10.1"


def test_an_older_infotext_with_the_schedule_in_the_sampler_name_is_read():
    info = parse_parameters("a cat\nSteps: 20, Sampler: DPM++ SDE Karras, CFG scale: 7, Seed: 1, Size: 512x512")
    assert info["scheduler"] == "DPM++ SDE Karras" and info["negative_prompt"] == ""


def test_an_infotext_from_before_a1111_had_schedule_types_keeps_its_uniform_schedule():
    info = parse_parameters("a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 1, Size: 512x512")
    assert info["scheduler"] == "DPM++ 2M"


def test_a_text_with_no_parameter_line_is_all_prompt():
    assert parse_parameters("just a prompt, nothing else") == {"prompt": "just a prompt, nothing else",
                                                               "negative_prompt": ""}


@pytest.mark.parametrize("sampler, schedule, expected", [
    ("Euler a", "automatic", "Euler a"),
    ("Euler", "Uniform", "Euler"),
    ("DPM++ 2M", "automatic", "DPM++ 2M Karras"),  # A1111's automatic for DPM++ 2M is Karras
    ("DPM++ 2M", "Karras", "DPM++ 2M Karras"),
    ("DPM++ 2M", "Uniform", "DPM++ 2M"),
    ("DPM++ SDE", "automatic", "DPM++ SDE Karras"),
    ("DPM++ 2M Karras", "automatic", "DPM++ 2M Karras"),
    ("PLMS", None, "PNDM"),
    ("LMS", "karras", "LMS Karras"),
    ("UniPC", "Automatic", "UniPC"),
])
def test_a1111_sampler_and_schedule_pairs_map_to_our_names(sampler, schedule, expected):
    assert resolve_scheduler(sampler, schedule) == expected


def test_an_unsupported_pair_is_refused_naming_what_is_supported():
    with pytest.raises(ValueError, match="supported: .*DPM\\+\\+ 2M \\+ Karras"):
        resolve_scheduler("Euler", "Exponential")


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_name_survives_a_metadata_round_trip(name):
    assert parse_parameters(format_parameters(**fields(scheduler=name)))["scheduler"] == name
