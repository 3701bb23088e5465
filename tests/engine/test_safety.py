import pytest
import torch

from generation.engine import DiffusersSafetyChecker, read_watermark


class FlagSecond:
    def check(self, images):
        return [k == 1 for k in range(len(images))]


class Broken:
    def check(self, images):
        raise OSError("weights missing")


def test_a_flagged_image_is_withheld_and_reported(run):
    result = run(num_images=3, seed=10, checker=FlagSecond(), watermark_payloads=[b"a" * 8, b"b" * 8, b"c" * 8])
    assert result.flagged == [1]
    assert result.indexes == [0, 2] and result.seeds == [10, 12]
    assert [read_watermark(im) for im in result.images] == [b"a" * 8, b"c" * 8]


def test_a_checker_error_fails_the_run(run):
    with pytest.raises(RuntimeError, match="safety checker failed"):
        run(checker=Broken())


def tiny_safety_checker(folder, threshold: float):
    """diffusers' real StableDiffusionSafetyChecker, tiny and random; `threshold` sets its verdict."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    small = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2)
    config = CLIPConfig(text_config=dict(small, vocab_size=100, bos_token_id=0, eos_token_id=1),
                        vision_config=dict(small, image_size=32, patch_size=4), projection_dim=32)
    torch.manual_seed(0)
    model = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        model.concept_embeds_weights.fill_(threshold)
        model.special_care_embeds_weights.fill_(threshold)
    model.save_pretrained(folder, safe_serialization=True)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


def test_diffusers_safety_checker_withholds_what_it_flags(run, tmp_path):
    strict = DiffusersSafetyChecker(tiny_safety_checker(tmp_path / "strict", threshold=-100.0))
    result = run(num_images=2, checker=strict)
    assert result.images == [] and result.flagged == [0, 1]


def test_diffusers_safety_checker_passes_what_it_clears(run, tmp_path):
    lenient = DiffusersSafetyChecker(tiny_safety_checker(tmp_path / "lenient", threshold=100.0))
    result = run(num_images=2, checker=lenient)
    assert len(result.images) == 2 and result.flagged == []

