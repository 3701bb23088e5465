"""The shipped configs describe the real checkpoints: full-size models built from them on the meta
device (no memory) have the tensor names and shapes real files have, and diffusers' own LDM reader
maps those back onto every weight."""

import pytest
from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

from generation.engine.families import FAMILIES, detect_family
from generation.engine.ldm import pipeline_to_ldm
from generation.engine.testmodel import full_size

# Facts about real files (tensor shapes as published checkpoints hold them; UNet sizes as reported).
REAL = {
    "sd1": {"model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
            "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
            "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
            "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
            "cond_stage_model.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072)},
    "sd2": {"model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),
            "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
            "cond_stage_model.model.transformer.resblocks.22.attn.in_proj_weight": (3072, 1024)},
    "sdxl": {"model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
             "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight": (1280, 2048),
             "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
             "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
             "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
             "conditioner.embedders.1.model.text_projection": (1280, 1280)},
    "sdxl-refiner": {"model.diffusion_model.label_emb.0.0.weight": (1536, 2560),
                     "conditioner.embedders.0.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280)},
    "sdxl-inpaint": {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)},
    "sd1-inpaint": {"model.diffusion_model.input_blocks.0.0.weight": (320, 9, 3, 3)},
}
UNET_PARAMETERS = {"sd1": 859_520_964, "sdxl": 2_567_463_684}
SD = [name for name, family in FAMILIES.items() if not family.transformer]  # FLUX.1, SD 3.5: test_flux.py, test_sd3.py


@pytest.mark.parametrize("family", SD)
def test_a_full_size_model_from_the_shipped_config_has_the_layout_of_real_files(family):
    pipe = full_size(family)
    ldm = pipeline_to_ldm(pipe)
    header = {k: {"shape": list(v.shape)} for k, v in ldm.items()}
    assert detect_family(header, v_prediction=family == "sd2-v") == family
    for key, shape in REAL.get(family.removesuffix("-v"), {}).items():
        assert tuple(ldm[key].shape) == shape, key
    if family in UNET_PARAMETERS:
        assert sum(p.numel() for p in pipe.unet.parameters()) == UNET_PARAMETERS[family]


@pytest.mark.parametrize("family", SD)
def test_diffusers_reads_every_weight_of_that_layout_back(family):
    pipe = full_size(family)
    ldm = pipeline_to_ldm(pipe)
    for module, convert in ((pipe.unet, convert_ldm_unet_checkpoint), (pipe.vae, convert_ldm_vae_checkpoint)):
        converted = convert(ldm, module.config)
        expected = module.state_dict()
        assert set(converted) == set(expected)
        assert all(converted[k].shape == v.shape for k, v in expected.items())


@pytest.fixture(scope="module")
def full_size_sd15(tmp_path_factory):
    """A random-weight SD 1.5 checkpoint as real ones are written: LDM layout, float16, ~2 GB,
    built in a temporary folder, never in the repository."""
    from generation.engine.testmodel import make_full_size_file

    return make_full_size_file("sd1", tmp_path_factory.mktemp("full-size") / "random-sd15.safetensors")


def test_a_full_size_random_sd15_file_loads_with_the_shipped_config_and_makes_an_image(full_size_sd15):
    from generation.engine import GenerationRequest, generate, load_pipeline
    from generation.engine.loading import PIPELINES

    assert full_size_sd15.stat().st_size > 1.9e9
    try:
        loaded = load_pipeline(str(full_size_sd15))  # no config: the one shipped for its family
        assert loaded.family == "sd1"
        assert sum(p.numel() for p in loaded.pipe.unet.parameters()) == UNET_PARAMETERS["sd1"]
        result = generate(GenerationRequest(prompt="a lighthouse", model=str(full_size_sd15), width=256, height=256,
                                            steps=1, seed=1))
        assert result.images[0].size == (256, 256) and result.model_name == "random-sd15"
    finally:
        PIPELINES.clear()  # 4 GB in float32: don't keep it for the tests after this one
