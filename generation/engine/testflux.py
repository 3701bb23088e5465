"""Tiny FLUX.1 models for the tests, written in every layout people have them in (BFL's
transformer file alone or with everything in one file, ComfyUI's text-encoder files, a diffusers
folder, GGUF), and LoRAs for them; random weights, made in code (testmodel.py's sibling)."""

from pathlib import Path


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
    t5_tokens = tiny_t5_tokenizer()
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
    save_folders(pipe, files["folder"], files["config"])
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


def save_folders(pipe, folder: Path, config: Path) -> None:
    """`pipe` as a diffusers folder, and its configs alone (without weights or tokenizers) in `config`."""
    pipe.save_pretrained(folder, safe_serialization=True)
    for file in folder.rglob("*.json"):
        if not file.parent.name.startswith("tokenizer"):
            target = config / file.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(file.read_bytes())


def tiny_t5_tokenizer():
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
    """tiny_loras for a tiny FLUX.1 transformer, Kohya's file in BFL's layer names."""
    from .flux import _modules

    config = transformer.config
    return tiny_loras(transformer, path, _modules(config.num_layers, config.num_single_layers), "tiny-flux-lora", seed)


def tiny_loras(transformer, path, table, stem: str, seed: int = 1, within: str = "transformer_blocks.") -> dict[str, Path]:
    """One random LoRA for a tiny transformer, written in the two layouts people trade: "peft",
    diffusers' own layer names (lora_A/lora_B, as diffusers and ai-toolkit save them); and "kohya",
    the original layer names of `table` ((name, (diffusers names, ...)[, are its halves swapped]), ...:
    lora_down/lora_up/alpha,
    as sd-scripts trains them), each fused layer holding its parts' LoRAs side by side; for the
    linear layers `within` the blocks. The two change the weights alike."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rank, modules = 2, dict(transformer.named_modules())
    pairs = {}
    for name, module in modules.items():
        if isinstance(module, torch.nn.Linear) and within in name:
            pairs[name] = (torch.randn(rank, module.in_features) * 0.3, torch.randn(module.out_features, rank) * 0.3)
    peft = {f"transformer.{name}.lora_{part}.weight": tensor for name, (down, up) in pairs.items()
            for part, tensor in (("A", down), ("B", up))}
    kohya = {}
    for original, ours, *swapped in table:
        if all(name in pairs for name in ours):
            key = "lora_unet_" + original.replace(".", "_")
            up = torch.block_diag(*(pairs[name][1] for name in ours))
            kohya[f"{key}.lora_down.weight"] = torch.cat([pairs[name][0] for name in ours])
            kohya[f"{key}.lora_up.weight"] = torch.cat(up.chunk(2)[::-1]) if swapped and swapped[0] else up
            kohya[f"{key}.alpha"] = torch.tensor(float(rank * len(ours)))  # scale 1, as the parts' own
    files = {"peft": path / f"{stem}-peft.safetensors", "kohya": path / f"{stem}-kohya.safetensors"}
    save_file(peft, files["peft"])
    save_file(kohya, files["kohya"])
    return files


def write_gguf(state: dict, path, quantization: str = "Q8_0") -> Path:
    """A state dict as a GGUF file, as people quantize FLUX.1 (city96's layout): each 2-D weight
    (not a learnt token, as Z-Image's padding) whose rows fit the blocks in `quantization` (Q8_0,
    Q5_1, Q5_0, Q4_1, Q4_0: those gguf can write), everything else in float32."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.constants import GGML_QUANT_SIZES
    from gguf.quants import quantize

    kind = GGMLQuantizationType[quantization]
    writer = GGUFWriter(str(path), "flux")
    for name, tensor in state.items():
        array = tensor.float().numpy()
        if array.ndim == 2 and name.endswith(".weight") and array.shape[1] % GGML_QUANT_SIZES[kind][0] == 0:
            blocks = quantize(array, kind)
            writer.add_tensor(name, blocks, raw_shape=blocks.shape, raw_dtype=kind)
        else:
            writer.add_tensor(name, np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def make_tiny_flux_controlnet(path, *, union: bool = False) -> dict[str, Path]:
    """A tiny random-weight FLUX.1 [dev] ControlNet in diffusers' layout (InstantX's kind; `union`:
    Shakker-Labs' union, with its mode embedding): "folder", with its config.json, and "file", its
    .safetensors alone. Its attention heads are 32 wide (the tiny transformer's width in one head),
    so its rotary axes follow FLUX.1's proportions (4, 14, 14) as a real one's do."""
    import torch
    from diffusers import FluxControlNetModel
    from safetensors.torch import save_file

    torch.manual_seed(2)
    net = FluxControlNetModel(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=32,
                              num_attention_heads=1, joint_attention_dim=32, pooled_projection_dim=32,
                              guidance_embeds=True, axes_dims_rope=[4, 14, 14], num_mode=7 if union else None)
    with torch.no_grad():  # diffusers starts the map's input and the output layers at zero: training moves them
        for layer in [net.controlnet_x_embedder, *net.controlnet_blocks, *net.controlnet_single_blocks]:
            layer.weight.normal_(0, 0.5)
    name = "flux-controlnet-union" if union else "flux-controlnet-canny"
    files = {"folder": Path(path) / name, "file": Path(path) / f"{name}.safetensors"}
    net.save_pretrained(files["folder"], safe_serialization=True)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, files["file"])
    return files
