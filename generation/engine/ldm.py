"""diffusers -> original LDM key layout, the layout of every single-file checkpoint people trade.
The test and benchmark builders write their models with it, so single files are loaded back
through exactly the code that loads real ones. (diffusers has only the other direction.)"""

import re

import torch

_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("time_emb_proj", "emb_layers.1"),
           ("norm2", "out_layers.0"), ("conv2", "out_layers.3"), ("conv_shortcut", "skip_connection")]
_VAE_ATTENTION = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]
_OPEN_CLIP = [("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("layer_norm2", "ln_2"),
              ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")]


def pipeline_to_ldm(pipe) -> dict[str, torch.Tensor]:
    """The whole pipeline (SD 1.x, 2.x, SDXL base or refiner) as one LDM-layout state dict."""
    state = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(pipe.unet).items()}
    state |= {"first_stage_model." + k: v for k, v in vae_to_ldm(pipe.vae).items()}
    encoder, encoder_2 = getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)
    if encoder_2 is not None:  # SDXL: CLIP-L (base only) as embedders.0, OpenCLIP-G after it
        if encoder is not None:
            state |= _prefixed("conditioner.embedders.0.transformer.", clip_to_ldm(encoder))
        state |= _prefixed(f"conditioner.embedders.{0 if encoder is None else 1}.model.", open_clip_to_ldm(encoder_2))
    elif encoder.config.hidden_act == "gelu":  # SD 2.x: OpenCLIP-H
        state |= _prefixed("cond_stage_model.model.", open_clip_to_ldm(encoder))
    else:
        state |= _prefixed("cond_stage_model.transformer.", clip_to_ldm(encoder))
    return state


def unet_to_ldm(unet) -> dict[str, torch.Tensor]:
    return {unet_key_to_ldm(key, unet.config): value for key, value in unet.state_dict().items()}


def unet_key_to_ldm(key: str, config) -> str:
    """One diffusers UNet tensor (or module) name in LDM's numbering."""
    blocks = config.layers_per_block + 1  # LDM numbers its blocks straight through: resnets + a resampler per level

    def down(m):  # input block 0 is conv_in
        return 1 + int(m[1]) * blocks + int(m[2])

    new = key
    for pattern, repl in [
        (r"^time_embedding\.linear_1", "time_embed.0"), (r"^time_embedding\.linear_2", "time_embed.2"),
        (r"^add_embedding\.linear_1", "label_emb.0.0"), (r"^add_embedding\.linear_2", "label_emb.0.2"),
        (r"^conv_in", "input_blocks.0.0"), (r"^conv_norm_out", "out.0"), (r"^conv_out", "out.2"),
        (r"^mid_block\.resnets\.(\d)", lambda m: f"middle_block.{2 * int(m[1])}"),
        (r"^mid_block\.attentions\.0", "middle_block.1"),
        (r"^down_blocks\.(\d+)\.resnets\.(\d+)", lambda m: f"input_blocks.{down(m)}.0"),
        (r"^down_blocks\.(\d+)\.attentions\.(\d+)", lambda m: f"input_blocks.{down(m)}.1"),
        (r"^down_blocks\.(\d+)\.downsamplers\.0\.conv", lambda m: f"input_blocks.{(int(m[1]) + 1) * blocks}.0.op"),
        (r"^up_blocks\.(\d+)\.resnets\.(\d+)", lambda m: f"output_blocks.{int(m[1]) * blocks + int(m[2])}.0"),
        (r"^up_blocks\.(\d+)\.attentions\.(\d+)", lambda m: f"output_blocks.{int(m[1]) * blocks + int(m[2])}.1"),
        (r"^up_blocks\.(\d+)\.upsamplers\.0", lambda m: _upsampler(config, int(m[1]))),
    ]:
        new, found = re.subn(pattern, repl, new)
        if found:
            break
    if re.match(r"^(input|output|middle)_blocks?\.\d+\.0\.|^middle_block\.[02]\.", new + "."):  # a resnet
        for old, ldm in _RESNET:
            new = (new + ".").replace(f".{old}.", f".{ldm}.")[:-1]
    return new


def controlnet_to_ldm(controlnet) -> dict[str, torch.Tensor]:
    """A ControlNetModel as the original ControlNet files hold one (`control_model.` keys)."""
    out = {}
    for key, value in controlnet.state_dict().items():
        new = re.sub(r"^controlnet_cond_embedding\.blocks\.(\d+)", lambda m: f"input_hint_block.{2 * int(m[1]) + 2}", key)
        new = re.sub(r"^controlnet_down_blocks\.(\d+)", r"zero_convs.\1.0", new)
        for old, ldm in (("controlnet_cond_embedding.conv_in", "input_hint_block.0"),
                         ("controlnet_cond_embedding.conv_out", "input_hint_block.14"),
                         ("controlnet_mid_block", "middle_block_out.0")):
            new = new.replace(old, ldm) if new.startswith(old) else new
        out["control_model." + (new if new != key else unet_key_to_ldm(key, controlnet.config))] = value
    return out


def _upsampler(config, level: int) -> str:
    has_attention = config.up_block_types[level].startswith("CrossAttn")
    return f"output_blocks.{level * (config.layers_per_block + 1) + config.layers_per_block}.{2 if has_attention else 1}"


def vae_to_ldm(vae) -> dict[str, torch.Tensor]:
    levels, out = len(vae.config.block_out_channels), {}
    for key, value in vae.state_dict().items():
        new = key.replace("conv_norm_out", "norm_out")
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.", r"encoder.down.\1.block.", new)
        new = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", new)
        # diffusers counts the decoder's levels from the bottom, LDM from the top.
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.", lambda m: f"decoder.up.{levels - 1 - int(m[1])}.block.",
                     new)
        new = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
                     lambda m: f"decoder.up.{levels - 1 - int(m[1])}.upsample.", new)
        new = re.sub(r"\.mid_block\.resnets\.(\d)\.", lambda m: f".mid.block_{int(m[1]) + 1}.", new)
        new = new.replace(".conv_shortcut.", ".nin_shortcut.")
        if ".mid_block.attentions.0." in new:
            new = new.replace(".mid_block.attentions.0.", ".mid.attn_1.")
            for old, ldm in _VAE_ATTENTION:
                new = new.replace(f".{old}.", f".{ldm}.")
            if value.ndim == 2:  # LDM's attention projections are 1x1 convolutions
                value = value[:, :, None, None]
        out[new] = value
    return out


def clip_to_ldm(encoder) -> dict[str, torch.Tensor]:
    """A CLIPTextModel(WithProjection) as LDM keeps the HF one: under `text_model.`, its projection beside."""
    return {("" if k.startswith(("text_model.", "text_projection.")) else "text_model.") + k: v
            for k, v in encoder.state_dict().items() if not k.endswith("position_ids")}


def open_clip_to_ldm(encoder) -> dict[str, torch.Tensor]:
    """A CLIPTextModel(WithProjection) in OpenCLIP's names: fused q/k/v, a transposed projection."""
    state = {k.removeprefix("text_model."): v for k, v in encoder.state_dict().items()}
    out = {"token_embedding.weight": state.pop("embeddings.token_embedding.weight"),
           "positional_embedding": state.pop("embeddings.position_embedding.weight"),
           "ln_final.weight": state.pop("final_layer_norm.weight"), "ln_final.bias": state.pop("final_layer_norm.bias")}
    if "text_projection.weight" in state:
        out["text_projection"] = state.pop("text_projection.weight").T.contiguous()
    for layer in range(encoder.config.num_hidden_layers):
        old, new = f"encoder.layers.{layer}.", f"transformer.resblocks.{layer}."
        for kind in ("weight", "bias"):
            out[f"{new}attn.in_proj_{kind}"] = torch.cat([state.pop(f"{old}self_attn.{p}_proj.{kind}") for p in "qkv"])
            for hf, oc in _OPEN_CLIP:
                out[f"{new}{oc}.{kind}"] = state.pop(f"{old}{hf}.{kind}")
    state = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    if state:
        raise ValueError(f"open_clip_to_ldm left tensors unmapped: {sorted(state)[:5]}")
    return out


def _prefixed(prefix: str, state: dict) -> dict:
    return {prefix + k: v for k, v in state.items()}
