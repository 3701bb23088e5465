"""Tiny SD 3.5 models for the tests, written in every layout people have them in (Stability's file
with its VAE, everything in one file, the transformer alone, ComfyUI's text-encoder files, a
diffusers folder), and LoRAs for them; random weights, made in code (testflux.py's sibling)."""

from pathlib import Path


def make_tiny_sd3(family: str, path) -> dict[str, Path]:
    """A tiny random-weight SD 3.5 model ("sd35-large" or "sd35-medium": the latter's first block has
    a second attention) written as: "checkpoint", the MMDiT and its VAE in one file (Stability's
    sd3.5_large.safetensors); "file", with CLIP-L, CLIP-G and T5 too; "transformer", the MMDiT alone;
    "text_encoders" (clip_l, clip_g, t5xxl_fp16 and T5's tokenizer in t5_tokenizer/); "vae"
    (sd3.5_vae.safetensors); "folder", a diffusers folder; and "config", its diffusers configs."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from .families import family_config
    from .ldm import clip_to_ldm, vae_to_ldm
    from .sd3 import PREFIXES, to_sai
    from .testflux import save_folders, tiny_t5_tokenizer
    from .tokenizer import VOCAB_SIZE, clip_tokenizer

    path = Path(path)
    t5_tokens = tiny_t5_tokenizer()
    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=2, in_channels=16, num_layers=2, attention_head_dim=8,
                                        num_attention_heads=4, joint_attention_dim=64, caption_projection_dim=32,
                                        pooled_projection_dim=64, out_channels=16, pos_embed_max_size=96, qk_norm="rms_norm",
                                        dual_attention_layers=(0,) if family == "sd35-medium" else ())
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=16, sample_size=256,
                        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=1.5305, shift_factor=0.0609)
    clips = []
    for act in ("quick_gelu", "gelu"):  # CLIP-L, CLIP-G
        torch.manual_seed(len(clips))
        clips.append(CLIPTextModelWithProjection(CLIPTextConfig(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=5, max_position_embeddings=77,
            vocab_size=VOCAB_SIZE, hidden_act=act, projection_dim=32, bos_token_id=0, eos_token_id=2, pad_token_id=1)))
    torch.manual_seed(0)
    t5 = T5EncoderModel(T5Config(vocab_size=len(t5_tokens), d_model=64, d_ff=37, d_kv=8, num_heads=4, num_layers=2,
                                 feed_forward_proj="gated-gelu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(family_config(family) / "scheduler"))
    pipe = StableDiffusion3Pipeline(transformer=transformer, vae=vae, text_encoder=clips[0], text_encoder_2=clips[1],
                                    text_encoder_3=t5, tokenizer=clip_tokenizer(), tokenizer_2=clip_tokenizer("!"),
                                    tokenizer_3=t5_tokens, scheduler=scheduler)
    name = family.replace("sd35", "sd3.5").replace("-", "_")
    files = {"folder": path / f"{name}-diffusers", "config": path / f"{name}-config", "file": path / f"{name}-all.safetensors",
             "checkpoint": path / f"{name}.safetensors", "transformer": path / f"{name}-transformer.safetensors",
             "text_encoders": path / "text_encoders", "vae": path / "sd3.5_vae.safetensors"}
    save_folders(pipe, files["folder"], files["config"])
    parts = {"transformer": to_sai(transformer.state_dict()), "text_encoder": clip_to_ldm(clips[0]),
             "text_encoder_2": clip_to_ldm(clips[1]), "text_encoder_3": t5.state_dict(), "vae": vae_to_ldm(vae)}
    parts["text_encoder_3"].pop("encoder.embed_tokens.weight", None)  # tied to shared.weight, stored once

    def save(names, file):
        save_file({PREFIXES[p] + k: v.contiguous() for p in names for k, v in parts[p].items()}, file)

    save(parts, files["file"])
    save(("transformer", "vae"), files["checkpoint"])
    save_file({k: v.contiguous() for k, v in parts["transformer"].items()}, files["transformer"])
    files["text_encoders"].mkdir(parents=True, exist_ok=True)
    for part, file in (("text_encoder", "clip_l"), ("text_encoder_2", "clip_g"), ("text_encoder_3", "t5xxl_fp16")):
        save_file({k: v.contiguous() for k, v in parts[part].items()}, files["text_encoders"] / f"{file}.safetensors")
    t5_tokens.save_pretrained(files["text_encoders"] / "t5_tokenizer")
    save_file({k: v.contiguous() for k, v in parts["vae"].items()}, files["vae"])
    return files


def make_tiny_sd3_loras(transformer, path, *, seed: int = 1) -> dict[str, Path]:
    """testflux.tiny_loras for a tiny SD 3.5 transformer, Kohya's file in Stability's layer names."""
    from .sd3 import _modules
    from .testflux import tiny_loras

    return tiny_loras(transformer, path, _modules(transformer.config.num_layers), "tiny-sd3-lora", seed)
