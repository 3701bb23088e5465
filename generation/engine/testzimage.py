"""A tiny Z-Image Turbo for the tests, written in the layouts people have it in (the transformer file
alone with ComfyUI's qwen_3_4b and FLUX.1's ae beside it, everything in one file, a diffusers
folder); random weights, made in code (testflux.py's sibling)."""

from pathlib import Path

CHAT_TEMPLATE = ("{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
                 "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def make_tiny_zimage(path) -> dict[str, Path]:
    """A tiny random-weight Z-Image Turbo written as: "transformer", the transformer file alone
    (the original names); "text_encoders" (qwen_3_4b.safetensors, in Qwen3ForCausalLM's names as
    ComfyUI has it, and a small Qwen-style tokenizer with a chat template in qwen3_tokenizer/); "vae"
    (ae.safetensors); "file", all of it in one file; "folder", a diffusers folder; "config", its
    diffusers configs."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from safetensors.torch import save_file
    from transformers import Qwen3Config, Qwen3Model

    from .families import family_config
    from .ldm import vae_to_ldm
    from .testflux import save_folders
    from .zimage import PREFIXES, to_original

    path = Path(path)
    tokenizer = _tiny_qwen_tokenizer()
    torch.manual_seed(0)
    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32, n_layers=2,
                                           n_refiner_layers=1, n_heads=2, n_kv_heads=2, cap_feat_dim=32, axes_dims=[4, 6, 6])
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 32, 64, 64], down_block_types=["DownEncoderBlock2D"] * 4,
                        up_block_types=["UpDecoderBlock2D"] * 4, latent_channels=16, sample_size=256,
                        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611, shift_factor=0.1159)
    torch.manual_seed(0)
    qwen = Qwen3Model(Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=3,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=1024,
                                  pad_token_id=tokenizer.pad_token_id))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(family_config("zimage-turbo") / "scheduler"))
    pipe = ZImagePipeline(transformer=transformer, vae=vae, text_encoder=qwen, tokenizer=tokenizer, scheduler=scheduler)
    files = {"folder": path / "z_image_turbo-diffusers", "config": path / "z_image_turbo-config",
             "file": path / "z_image_turbo-all.safetensors", "transformer": path / "z_image_turbo_bf16.safetensors",
             "text_encoders": path / "text_encoders", "vae": path / "ae.safetensors"}
    save_folders(pipe, files["folder"], files["config"])
    parts = {"transformer": to_original(transformer.state_dict()), "vae": vae_to_ldm(vae),
             "text_encoder": {"model." + k: v for k, v in qwen.state_dict().items()}}  # as Qwen3ForCausalLM saves it
    save_file({PREFIXES[p] + k: v.contiguous() for p, state in parts.items() for k, v in state.items()}, files["file"])
    save_file({k: v.contiguous() for k, v in parts["transformer"].items()}, files["transformer"])
    files["text_encoders"].mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in parts["text_encoder"].items()}, files["text_encoders"] / "qwen_3_4b.safetensors")
    tokenizer.save_pretrained(files["text_encoders"] / "qwen3_tokenizer")
    save_file({k: v.contiguous() for k, v in parts["vae"].items()}, files["vae"])
    return files


def _tiny_qwen_tokenizer():
    """A byte-level BPE tokenizer over a few words (Qwen's kind), with Qwen's special tokens and a
    chat template of its shape."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {symbol: k for k, symbol in enumerate(sorted(alphabet))}
    merges = []
    for word in ("Ġa", "Ġthe", "Ġcat", "Ġred", "Ġhouse", "Ġblue", "Ġsky", "user", "assistant"):
        piece = word[0]
        for letter in word[1:]:
            if piece + letter not in vocab:
                merges.append((piece, letter))
                vocab[piece + letter] = len(vocab)
            piece += letter
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                   chat_template=CHAT_TEMPLATE)
