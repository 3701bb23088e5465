import pytest

from generation.engine import GenerationRequest, Limits, generate


@pytest.mark.parametrize("fields, message", [
    ({"width": 300}, "width must be a multiple of 8"),
    ({"height": 248}, "height must be between 256 and 1024"),
    ({"width": 2048}, "width must be between 256 and 1024"),
    ({"width": "512"}, "width must be a whole number"),
    ({"steps": 0}, "steps must be a whole number from 1 to 150"),
    ({"steps": 151}, "steps must be a whole number from 1 to 150"),
    ({"scheduler": "Euler b"}, "unknown scheduler 'Euler b'; choose one of: Euler, Euler a"),
    ({"prompt": "   "}, "prompt is empty"),
    ({"prompt": "a cat AND a dog"}, "prompt uses AND"),
    ({"negative_prompt": "<lora:x:1>"}, "negative_prompt can't hold a LoRA tag"),
    ({"prompt": "a cat <lora:x:1>"}, "no file was given for it"),
    ({"prompt": "nul\x00byte"}, "NUL"),
    ({"prompt": "x" * 4001}, "at most 4000"),
    ({"negative_prompt": " BREAK ".join(["x"] * 21)}, "negative_prompt has 21 parts separated by BREAK; at most 20"),
    ({"guidance_scale": -1}, "guidance_scale must be a number from 0 to 30"),
    ({"num_images": 0}, "num_images must be from 1 to 4"),
    ({"seed": -2}, "seed must be -1"),
    ({"seed": 2**32}, "seed must be -1"),
    ({"model": ""}, "model is required"),
    ({"model": "/nowhere/model"}, "unknown model 'model'"),  # no server folders shown
])
def test_bad_input_raises_a_value_error_a_user_can_act_on(test_model, fields, message):
    request = GenerationRequest(**{"prompt": "a cat", "model": test_model, "width": 256, "height": 256,
                                   "steps": 2, **fields})
    with pytest.raises(ValueError) as error:
        generate(request, checker=None)
    assert message in str(error.value)


def test_the_size_limit_is_the_callers(test_model):
    request = GenerationRequest(prompt="a cat", model=test_model, width=768, height=256, steps=2)
    with pytest.raises(ValueError, match="between 256 and 512"):
        generate(request, limits=Limits(max_side=512))
