"""ESRGAN-family upscalers (RRDBNet: ESRGAN, Real-ESRGAN x4plus/x2plus, 4x-UltraSharp and most
community models), read from the file people download: a .pth (read with weights_only) or a
.safetensors, in either key layout they ship in. The original ESRGAN layout numbers its layers
(model.0, model.1.sub.N.RDB1.conv1.0, ...); BasicSR's names them (conv_first, body.N.rdb1.conv1, ...).
Both are read into one module written from the architecture: 3x3 convolutions, dense blocks of
five, residuals scaled by 0.2, LeakyReLU(0.2), nearest-neighbour ×2 upsampling steps."""

import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from .esrgan_file import check_size, layout, renamed, torch_load

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


def read_weights(path) -> dict:
    """The tensors of an upscaler file (a .pth read weights-only); ValueError for anything else."""
    path = Path(path)
    check_size(path)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch_load(path)


def build(state: dict, name: str) -> RRDBNet:
    """The network a file's tensors describe, weights loaded; ValueError when they describe none."""
    tensors = renamed(state, name)
    net = RRDBNet(**layout({k: tuple(v.shape) for k, v in tensors.items()}, name))
    net.load_state_dict(tensors)
    return net.eval().requires_grad_(False)


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
