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


def make_tiny_flux(family: str, path) -> dict[str, Path]:
    """A tiny random-weight FLUX.1 model ("flux-dev" or "flux-schnell") written in every layout
    people have: "file", one file holding all of it (ComfyUI's checkpoint layout); "transformer",
    BFL's transformer file alone, with "text_encoders" (clip_l, t5xxl_fp16 and T5's tokenizer in
    t5_tokenizer/) and "vae" (ae.safetensors) beside it; "folder", a diffusers folder; and
    "config", its diffusers configs. The T5 tokenizer is a small one made with `tokenizers`."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from .families import family_config
    from .flux import PREFIXES, to_bfl
    from .ldm import clip_to_ldm, vae_to_ldm
    from .tokenizer import VOCAB_SIZE, clip_tokenizer

    path = Path(path)
    t5_tokens = _tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, guidance_embeds=family == "flux-dev",
                                         axes_dims_rope=[4, 6, 6])
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=16, sample_size=256,
                        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
    torch.manual_seed(0)
    clip = CLIPTextModel(CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5,
                                        max_position_embeddings=77, vocab_size=VOCAB_SIZE, hidden_act="quick_gelu",
                                        projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1))
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokens), d_model=32, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(family_config(family) / "scheduler"))
    pipe = FluxPipeline(transformer=transformer, vae=vae, text_encoder=clip, text_encoder_2=t5, tokenizer=clip_tokenizer(),
                        tokenizer_2=t5_tokens, scheduler=scheduler)
    files = {"folder": path / f"{family}-diffusers", "config": path / f"{family}-config",
             "file": path / f"{family}.safetensors", "transformer": path / f"{family}-transformer.safetensors",
             "text_encoders": path / "text_encoders", "vae": path / "ae.safetensors"}
    pipe.save_pretrained(files["folder"], safe_serialization=True)
    for file in files["folder"].rglob("*.json"):  # the configs without weights or tokenizer files
        if file.parent.name not in ("tokenizer", "tokenizer_2"):
            target = files["config"] / file.relative_to(files["folder"])
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())
    parts = {"transformer": to_bfl(transformer.state_dict()), "text_encoder": clip_to_ldm(clip),
             "text_encoder_2": t5.state_dict(), "vae": vae_to_ldm(vae)}
    parts["text_encoder_2"].pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, stored once
    save_file({PREFIXES[p] + k: v.contiguous() for p, state in parts.items() for k, v in state.items()}, files["file"])
    save_file({k: v.contiguous() for k, v in parts["transformer"].items()}, files["transformer"])
    files["text_encoders"].mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in parts["text_encoder"].items()}, files["text_encoders"] / "clip_l.safetensors")
    save_file({k: v.contiguous() for k, v in parts["text_encoder_2"].items()},
              files["text_encoders"] / "t5xxl_fp16.safetensors")
    t5_tokens.save_pretrained(files["text_encoders"] / "t5_tokenizer")
    save_file({k: v.contiguous() for k, v in parts["vae"].items()}, files["vae"])
    return files


def _tiny_t5_tokenizer():
    """A T5 tokenizer (SentencePiece unigram: <pad> 0, </s> 1, <unk> 2) over a few words and every
    lower-case letter and digit, so any prompt tokenizes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5TokenizerFast

    words = ["a", "the", "cat", "dog", "photo", "of", "red", "blue", "house", "tree", "sky", "sea"]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [("▁" + w, -1.0) for w in words] + [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    tokenizer = Tokenizer(models.Unigram(pieces, unk_id=2))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return T5TokenizerFast(tokenizer_object=tokenizer, extra_ids=0, pad_token="<pad>", eos_token="</s>",
                           unk_token="<unk>")


def make_tiny_flux_loras(transformer, path, *, seed: int = 1) -> dict[str, Path]:
    """One random LoRA for a tiny FLUX.1 transformer, written in the two layouts people trade:
    "peft", diffusers' own layer names (lora_A/lora_B, as diffusers and ai-toolkit save them); and
    "kohya", BFL's layer names (lora_down/lora_up/alpha, as sd-scripts trains them), each fused
    layer holding its parts' LoRAs side by side. The two change the weights alike."""
    import torch
    from safetensors.torch import save_file

    from .flux import _modules

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rank, modules, config = 2, dict(transformer.named_modules()), transformer.config
    pairs = {}
    for name, module in modules.items():
        if isinstance(module, torch.nn.Linear) and "transformer_blocks." in name:
            pairs[name] = (torch.randn(rank, module.in_features) * 0.3, torch.randn(module.out_features, rank) * 0.3)
    peft = {f"transformer.{name}.lora_{part}.weight": tensor for name, (down, up) in pairs.items()
            for part, tensor in (("A", down), ("B", up))}
    kohya = {}
    for bfl, ours in _modules(config.num_layers, config.num_single_layers):
        if all(name in pairs for name in ours):
            key = "lora_unet_" + bfl.replace(".", "_")
            kohya[f"{key}.lora_down.weight"] = torch.cat([pairs[name][0] for name in ours])
            kohya[f"{key}.lora_up.weight"] = torch.block_diag(*(pairs[name][1] for name in ours))
            kohya[f"{key}.alpha"] = torch.tensor(float(rank * len(ours)))  # scale 1, as the parts' own
    files = {"peft": path / "tiny-flux-lora-peft.safetensors", "kohya": path / "tiny-flux-lora-kohya.safetensors"}
    save_file(peft, files["peft"])
    save_file(kohya, files["kohya"])
    return files


def write_gguf(state: dict, path, quantization: str = "Q8_0") -> Path:
    """A state dict as a GGUF file, as people quantize FLUX.1 (city96's layout): each 2-D weight
    whose rows fit the blocks in `quantization` (Q8_0, Q5_1, Q5_0, Q4_1, Q4_0: those gguf can
    write), everything else in float32."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import quantize

    kind = GGMLQuantizationType[quantization]
    writer = GGUFWriter(str(path), "flux")
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and array.shape[1] % GGML_QUANT_SIZES[kind][0] == 0:
            blocks = quantize(array, kind)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)
