"""ESRGAN-family upscalers (RRDBNet: ESRGAN, Real-ESRGAN x4plus/x2plus, 4x-UltraSharp and most
community models), read from the file people download: a .pth (read with weights_only) or a
.safetensors, in either key layout they ship in. The original ESRGAN layout numbers its layers
(model.0, model.1.sub.N.RDB1.conv1.0, ...); BasicSR's names them (conv_first, body.N.rdb1.conv1, ...).
Both are read into one module written from the architecture: 3x3 convolutions, dense blocks of
five, residuals scaled by 0.2, LeakyReLU(0.2), nearest-neighbour ×2 upsampling steps."""

import re
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

MAX_FILE_BYTES = 512 * 2**20  # real ones are 17-70 MB
TILE = 192  # input pixels per tile side: bounded memory at any picture size
TILE_PAD = 16  # context each tile borrows from its neighbours, cut away after


class DenseBlock(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(features + k * growth, growth if k < 4 else features, 3, padding=1)
                                   for k in range(5))

    def forward(self, x):
        found = [x]
        for k, conv in enumerate(self.convs):
            out = conv(torch.cat(found, 1))
            if k < 4:
                found.append(F.leaky_relu(out, 0.2))
        return x + 0.2 * out


class RRDB(nn.Module):
    def __init__(self, features: int, growth: int):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(features, growth) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class RRDBNet(nn.Module):
    """`unshuffle`: Real-ESRGAN's x2/x1 models fold 2×2 (4×4) pixels into channels first, then
    upsample ×4 like the rest."""

    def __init__(self, *, channels: int, features: int, growth: int, blocks: int, ups: int, unshuffle: int):
        super().__init__()
        self.unshuffle = unshuffle
        self.scale = 2**ups // unshuffle
        self.first = nn.Conv2d(channels * unshuffle**2, features, 3, padding=1)
        self.body = nn.Sequential(*(RRDB(features, growth) for _ in range(blocks)))
        self.body_conv = nn.Conv2d(features, features, 3, padding=1)
        self.ups = nn.ModuleList(nn.Conv2d(features, features, 3, padding=1) for _ in range(ups))
        self.hr = nn.Conv2d(features, features, 3, padding=1)
        self.last = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x):
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(x, self.unshuffle)
        feat = self.first(x)
        feat = feat + self.body_conv(self.body(feat))
        for conv in self.ups:
            feat = F.leaky_relu(conv(F.interpolate(feat, scale_factor=2, mode="nearest")), 0.2)
        return self.last(F.leaky_relu(self.hr(feat), 0.2))


_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_NEW_BLOCK = re.compile(r"body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")
_NEW_UP = re.compile(r"conv_up(\d+)\.(weight|bias)$")


def _block_key(found: re.Match) -> str:
    block, rdb, conv, part = found.groups()
    return f"body.{block}.blocks.{int(rdb) - 1}.convs.{int(conv) - 1}.{part}"


def _renamed(state: dict, name: str) -> dict:
    """The file's tensors under this module's names; ValueError when it is no RRDBNet."""
    out = {}
    if "model.0.weight" in state:  # the original ESRGAN layout
        tops = sorted({int(m[1]) for k in state if (m := _OLD_TOP.match(k)) and int(m[1]) > 1})
        if len(tops) < 3:
            raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model: it lacks the upsampling layers")
        names = {0: "first", **{n: f"ups.{k}" for k, n in enumerate(tops[:-2])}, tops[-2]: "hr", tops[-1]: "last"}
        trunk = max(int(m[1]) for k in state if (m := re.match(r"model\.1\.sub\.(\d+)\.weight$", k))) if any(
            re.match(r"model\.1\.sub\.\d+\.weight$", k) for k in state) else None
        for key, tensor in state.items():
            if found := _OLD_BLOCK.match(key):
                out[_block_key(found)] = tensor
            elif trunk is not None and key.startswith(f"model.1.sub.{trunk}."):
                out["body_conv." + key.rsplit(".", 1)[1]] = tensor
            elif (found := _OLD_TOP.match(key)) and int(found[1]) in names:
                out[f"{names[int(found[1])]}.{found[2]}"] = tensor
            else:
                raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model: unexpected tensor {key}")
        return out
    if "conv_first.weight" in state:  # BasicSR's (Real-ESRGAN's) layout
        fixed = {"conv_first": "first", "conv_body": "body_conv", "conv_hr": "hr", "conv_last": "last"}
        for key, tensor in state.items():
            base, _, part = key.rpartition(".")
            if found := _NEW_BLOCK.match(key):
                out[_block_key(found)] = tensor
            elif found := _NEW_UP.match(key):
                out[f"ups.{int(found[1]) - 1}.{part}"] = tensor
            elif base in fixed:
                out[f"{fixed[base]}.{part}"] = tensor
            else:
                raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model: unexpected tensor {key}")
        return out
    raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model (other upscaler architectures are not supported)")


def read_weights(path) -> dict:
    """The state dict of an upscaler file; ValueError for anything that is not one."""
    path = Path(path)
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is larger than an upscaler can be ({MAX_FILE_BYTES // 2**20} MB)")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        from .families import _check_tensors, read_header

        _check_tensors(read_header(path), path.name)
        return load_file(path)
    try:  # weights_only: a pickle that names any code is refused before it runs
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(f"{path.name} is not a weights-only PyTorch file (.pth)") from error
    for wrapper in ("params_ema", "params", "state_dict"):  # Real-ESRGAN's and trainers' wrappers
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} holds no state dict of tensors")
    return state


def build(state: dict, name: str) -> RRDBNet:
    """The network a state dict describes (its sizes read from its shapes), weights loaded."""
    tensors = _renamed(state, name)
    try:
        first, growth = tensors["first.weight"], tensors["body.0.blocks.0.convs.0.weight"]
        blocks = 1 + max(int(k.split(".")[1]) for k in tensors if k.startswith("body."))
        ups = sum(k.startswith("ups.") and k.endswith(".weight") for k in tensors)
        channels = tensors["last.weight"].shape[0]
        unshuffle = {1: 1, 4: 2, 16: 4}[first.shape[1] // channels]
        net = RRDBNet(channels=channels, features=first.shape[0], growth=growth.shape[0], blocks=blocks, ups=ups,
                      unshuffle=unshuffle)
        net.load_state_dict(tensors)
    except (KeyError, RuntimeError, ValueError) as error:
        raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model its tensors agree on") from error
    if net.scale < 2 or channels != 3:
        raise ValueError(f"{name} is not an upscaler of colour pictures (a 1× or other-channel model)")
    return net.eval().requires_grad_(False)


def describe(path) -> int:
    """An upscaler file's scale (2, 4, ...); ValueError naming what is wrong with it."""
    return build(read_weights(path), Path(path).name).scale


def load_upscaler(path, device, dtype) -> RRDBNet:
    started = time.perf_counter()
    net = build(read_weights(path), Path(path).name).to(device, dtype)
    net.load_seconds = time.perf_counter() - started
    return net


@torch.inference_mode()
def esrgan_upscale(net: RRDBNet, image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` made `size` with the network: as many passes as it takes to reach the size (a ×4
    model once for ×4, a ×2 model twice), then resized to exactly `size` with Lanczos."""
    while image.width < size[0] or image.height < size[1]:
        image = _pass(net, image)
    return image if image.size == size else image.resize(size, Image.LANCZOS)


def _pass(net: RRDBNet, image: Image.Image) -> Image.Image:
    """One pass in tiles (bounded memory at any size), each seeing TILE_PAD pixels of its
    neighbours so no seam shows."""
    param, s = next(net.parameters()), net.scale
    x = torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1)[None].to(param.device, param.dtype) / 255
    height, width = x.shape[2:]
    fold = net.unshuffle  # sides a multiple of it: reflected pixels added, cut away after
    if width % fold or height % fold:
        x = F.pad(x, (0, -width % fold, 0, -height % fold), mode="reflect")
    out = torch.empty(1, 3, x.shape[2] * s, x.shape[3] * s, device=x.device, dtype=x.dtype)
    for top in range(0, x.shape[2], TILE):
        for left in range(0, x.shape[3], TILE):
            t, l_ = max(0, top - TILE_PAD), max(0, left - TILE_PAD)
            bottom, right = min(top + TILE, x.shape[2]), min(left + TILE, x.shape[3])
            made = net(x[:, :, t:bottom + TILE_PAD, l_:right + TILE_PAD])
            out[:, :, top * s:bottom * s, left * s:right * s] = made[
                :, :, (top - t) * s:(bottom - t) * s, (left - l_) * s:(right - l_) * s]
    pixels = out[0, :, :height * s, :width * s].float().clamp(0, 1).mul(255).round().byte()
    return Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy())
