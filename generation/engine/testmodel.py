"""The built-in test model: a tiny random-weight Stable Diffusion pipeline built from real
diffusers classes, so the whole product runs and is tested on any machine without downloads.

It makes noise, honestly. It is saved with `save_pretrained` and loaded through exactly the same
code as any other diffusers folder.
"""

import json
from pathlib import Path

TEST_MODEL_NAME = "sdweb-test-tiny"


def make_test_model(path) -> Path:
    """Build the test model into `path` (a folder) and return it. Same files every time."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    path = Path(path)
    tokenizer = _byte_level_tokenizer()

    # One seed before each module: the files depend only on the library versions.
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
    )
    torch.manual_seed(0)
    # Four blocks give the latent scale factor 8 of real SD, so sizes and costs scale alike.
    vae = AutoencoderKL(
        block_out_channels=[32, 32, 64, 64],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4,
        latent_channels=4,
        sample_size=256,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=5,
            max_position_embeddings=77,
            vocab_size=len(tokenizer),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path, safe_serialization=True)
    (path / "sdweb.json").write_text(json.dumps({"name": TEST_MODEL_NAME, "test_model": True}))
    return path


def _byte_level_tokenizer():
    """A CLIP tokenizer with one symbol per byte and no merges: built in code, no download."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _byte_symbols() -> list[str]:
    # The byte-level pre-tokenizer shows printable Latin-1 bytes as themselves and moves the
    # rest above U+0100; the vocabulary must use the same alphabet.
    printable = {*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)}
    symbols, moved = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(0x100 + moved))
            moved += 1
    return symbols


def make_tiny_family(family: str, path) -> dict[str, Path]:
    """A tiny random-weight model of `family` (see families.FAMILIES), written three ways into
    `path`: "file", the single LDM-layout .safetensors people trade; "config", its diffusers
    configs only (passed to the loader the way the shipped configs of real families are); and
    "folder", the same model as a diffusers folder. Text encoders use the real CLIP vocabulary."""
    from safetensors.torch import save_file

    from .families import FAMILIES
    from .ldm import pipeline_to_ldm

    path = Path(path)
    pipe = _tiny_pipeline(family, FAMILIES[family])
    folder, config = path / f"{family}-diffusers", path / f"{family}-config"
    pipe.save_pretrained(folder, safe_serialization=True)
    for file in folder.rglob("*"):  # the configs without weights or tokenizer files
        if file.suffix == ".json" and file.parent.name not in ("tokenizer", "tokenizer_2"):
            target = config / file.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    single = path / f"{family}.safetensors"
    save_file({k: v.contiguous() for k, v in pipeline_to_ldm(pipe).items()}, single)
    return {"file": single, "config": config, "folder": folder}


def make_tiny_vae(family: str, path, *, layout: str = "ldm", seed: int = 1) -> Path:
    """A VAE file that fits the tiny models of `family`, with weights of its own, as a VAE
    downloaded on its own is written: LDM keys (or diffusers keys with layout="diffusers")."""
    import torch
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from .families import FAMILIES
    from .ldm import vae_to_ldm

    torch.manual_seed(seed)
    xl = FAMILIES[family].xl
    vae = AutoencoderKL(block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, sample_size=256,
                        **({"scaling_factor": 0.13025, "force_upcast": True} if xl else {}))
    state = vae_to_ldm(vae) if layout == "ldm" else vae.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, path)
    return Path(path)


def _tiny_pipeline(family_name: str, family):
    import diffusers
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .tokenizer import VOCAB_SIZE, clip_tokenizer

    def text_config(hidden, layers, act, projection=32):
        return CLIPTextConfig(hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
                              num_hidden_layers=layers, max_position_embeddings=77, vocab_size=VOCAB_SIZE,
                              hidden_act=act, projection_dim=projection, bos_token_id=0, eos_token_id=2, pad_token_id=1)

    in_channels = 9 if family.role == "inpaint" else 4
    unet_args = dict(block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels,
                     out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                     up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    if family_name.startswith("sd2") or family.xl:
        unet_args |= dict(attention_head_dim=(2, 4), use_linear_projection=True)
    if family.xl:
        # The two encoders need different widths, and the second >= 10 layers, to be told apart.
        refiner = family.role == "refiner"
        unet_args |= dict(addition_embed_type="text_time", addition_time_embed_dim=8,
                          transformer_layers_per_block=(1, 2), cross_attention_dim=64 if refiner else 96,
                          projection_class_embeddings_input_dim=(5 if refiner else 6) * 8 + 32)
    torch.manual_seed(0)
    parts = {"unet": UNet2DConditionModel(**unet_args)}
    torch.manual_seed(0)
    parts["vae"] = AutoencoderKL(block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                                 up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=4, sample_size=256,
                                 **({"scaling_factor": 0.13025, "force_upcast": True} if family.xl else {}))
    torch.manual_seed(0)
    if family.xl:
        if family.role != "refiner":
            parts |= {"text_encoder": CLIPTextModel(text_config(32, 5, "quick_gelu")), "tokenizer": clip_tokenizer()}
        torch.manual_seed(0)
        parts |= {"text_encoder_2": CLIPTextModelWithProjection(text_config(64, 10, "gelu")),
                  "tokenizer_2": clip_tokenizer("!")}
    elif family_name.startswith("sd2"):
        parts |= {"text_encoder": CLIPTextModel(text_config(32, 5, "gelu")), "tokenizer": clip_tokenizer("!")}
    else:
        parts |= {"text_encoder": CLIPTextModel(text_config(32, 5, "quick_gelu")), "tokenizer": clip_tokenizer()}
    parts["scheduler"] = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
        steps_offset=1, prediction_type="v_prediction" if family_name == "sd2-v" else "epsilon")
    cls = getattr(diffusers, family.pipeline)
    if family.xl:
        extra = {"add_watermarker": False}
        if family.role == "refiner":
            extra |= {"text_encoder": None, "tokenizer": None, "requires_aesthetics_score": True}
        return cls(**parts, **extra)
    return cls(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def full_size(family: str):
    """The full-size modules of `family`, built from its shipped configs on the meta device (no
    memory, no weights): unet, vae, text_encoder and text_encoder_2 (None where it has none)."""
    from types import SimpleNamespace

    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from .families import family_config

    config = family_config(family)
    with torch.device("meta"):
        parts = {"unet": UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet")),
                 "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))}
        for name, cls in (("text_encoder", CLIPTextModel), ("text_encoder_2", CLIPTextModelWithProjection)):
            parts[name] = cls(CLIPTextConfig.from_pretrained(config / name)) if (config / name).is_dir() else None
    return SimpleNamespace(**parts)


def make_full_size_file(family: str, path) -> Path:
    """A random-weight checkpoint of `family` at full size, written as real ones are: one LDM-layout
    float16 .safetensors (SD 1.5: ~2 GB; keep it out of the repository)."""
    import torch
    from safetensors.torch import save_file

    from .ldm import pipeline_to_ldm

    torch.manual_seed(0)
    # Small random weights keep every activation finite.
    save_file({k: (torch.randn(v.shape) * 0.02).half() for k, v in pipeline_to_ldm(full_size(family)).items()}, path)
    return Path(path)


def make_tiny_addons(pipe, path, *, seed: int = 1) -> dict[str, Path]:
    """Random add-ons that fit `pipe` (a tiny pipeline of any family), written as people trade
    them: "lora", a LoRA in Kohya's layout (LDM block names for SDXL) with training tags in its
    metadata; "embedding", a 3-vector textual inversion (A1111's emb_params; clip_l/clip_g for
    SDXL); "controlnet", a ControlNet made from the UNet with non-zero zero-convs, one diffusers-
    layout .safetensors ("controlnet_ldm": the same in the original layout), and "controlnet_config",
    its config folder. Each changes the image."""
    import torch
    from diffusers import ControlNetModel
    from safetensors.torch import save_file

    from .ldm import controlnet_to_ldm, unet_key_to_ldm

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    xl = getattr(pipe, "text_encoder_2", None) is not None
    encoders = [("te1", pipe.text_encoder), ("te2", pipe.text_encoder_2)] if xl else [("te", pipe.text_encoder)]
    lora = {}

    def low_rank(key, module, rank=4):
        lora[f"{key}.lora_down.weight"] = torch.randn(rank, module.in_features) * 0.3
        lora[f"{key}.lora_up.weight"] = torch.randn(module.out_features, rank) * 0.3
        lora[f"{key}.alpha"] = torch.tensor(float(rank))

    for name, module in pipe.unet.named_modules():
        if isinstance(module, torch.nn.Linear) and (".attn1." in name or ".attn2." in name):
            low_rank("lora_unet_" + (unet_key_to_ldm(name, pipe.unet.config) if xl else name).replace(".", "_"), module)
    for prefix, encoder in encoders:
        for name, module in encoder.named_modules():
            if isinstance(module, torch.nn.Linear) and ".self_attn." in name:
                low_rank(f"lora_{prefix}_text_model_" + name.removeprefix("text_model.").replace(".", "_"), module)
    files = {"lora": path / "tiny-lora.safetensors", "embedding": path / "tiny-embedding.safetensors",
             "controlnet": path / "tiny-controlnet.safetensors", "controlnet_config": path / "tiny-controlnet-config",
             "controlnet_ldm": path / "tiny-controlnet-ldm.safetensors"}
    save_file(lora, files["lora"], metadata={"ss_tag_frequency": json.dumps({"10_tiny": {"tinystyle": 12, "noise": 3}}),
                                             "ss_base_model_version": "sdxl_base_v1-0" if xl else "sd_v1"})
    widths = [encoder.get_input_embeddings().embedding_dim for _, encoder in encoders]
    vectors = [torch.randn(3, width) for width in widths]
    save_file(dict(zip(("clip_l", "clip_g"), vectors)) if xl else {"emb_params": vectors[0]}, files["embedding"])
    controlnet = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 8, 16, 16))
    with torch.no_grad():
        for zero_conv in [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block,
                          controlnet.controlnet_cond_embedding.conv_out]:
            zero_conv.weight.normal_(std=0.3)
    save_file({k: v.contiguous() for k, v in controlnet.state_dict().items()}, files["controlnet"])
    save_file({k: v.contiguous() for k, v in controlnet_to_ldm(controlnet).items()}, files["controlnet_ldm"])
    controlnet.save_config(files["controlnet_config"])
    return files

