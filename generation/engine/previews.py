"""Live previews: latents -> a small JPEG/WebP, throttled by time, the last step always sent.

By default a linear latent->RGB approximation (about a millisecond) so previews never slow the
run; with a TAESD folder configured, the tiny autoencoder gives a truer picture.
"""

import concurrent.futures
import functools
import io
import math
import time
from dataclasses import dataclass

import torch
from PIL import Image

# Widely used approximate SD 1.x/2.x latent -> RGB factors (a published fact, not a model).
_LATENT_RGB = torch.tensor(
    [[0.298, 0.207, 0.208], [0.187, 0.286, 0.173], [-0.158, 0.189, 0.264], [-0.184, -0.271, -0.473]]
)


@dataclass(frozen=True)
class PreviewSettings:
    max_edge: int = 256
    min_interval: float = 0.25  # seconds; 0 sends every step
    format: str = "JPEG"  # or "WEBP"
    quality: int = 80
    taesd: str | None = None  # a diffusers AutoencoderTiny folder for SD's latents (TAESD, TAESDXL)...
    taef1: str | None = None  # ...one for FLUX.1's (TAEF1)...
    taesd3: str | None = None  # ...and one for SD 3.5's (TAESD3)


class PreviewThrottle:
    """Decides which steps get a preview: at most one per `min_interval`, and the last one."""

    def __init__(self, min_interval: float, clock=time.monotonic):
        self.min_interval, self.clock, self.last_sent = min_interval, clock, None

    def should_send(self, step: int, total: int) -> bool:
        now = self.clock()
        if step == total or self.last_sent is None or now - self.last_sent >= self.min_interval:
            self.last_sent = now
            return True
        return False


def latents_to_rgb(latents: torch.Tensor, taesd=None, factors=None) -> torch.Tensor:
    """(B, 4, h, w) latents -> (B, H, W, 3) uint8 on the CPU; `factors` (weights (C, 3), bias (3,))
    for latents of another kind (fitted_latent_rgb)."""
    if taesd is not None:
        with torch.no_grad():
            decoded = taesd.decode(latents.to(taesd.device, taesd.dtype)).sample  # (B, 3, H, W) in -1..1
        rgb = decoded.float().permute(0, 2, 3, 1)
    elif factors is not None:
        rgb = torch.einsum("bchw,cr->bhwr", latents.float().cpu(), factors[0]) + factors[1]
    else:
        rgb = torch.einsum("bchw,cr->bhwr", latents.float().cpu(), _LATENT_RGB)
    return ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).cpu()


def fitted_latent_rgb(vae) -> tuple[torch.Tensor, torch.Tensor]:
    """Latent -> RGB factors for a VAE with no published ones (FLUX's and SD 3.5's 16 channels), fitted to the
    VAE itself: smooth random pictures are encoded, and each latent pixel is regressed (least
    squares) on the mean colour of the patch it covers. Latents as the denoiser sees them (shifted,
    scaled)."""
    import torch.nn.functional as F

    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    coarse = torch.rand(8, 3, 6, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    pictures = F.interpolate(coarse, size=(16 * scale, 16 * scale), mode="bicubic").clamp(-1, 1)
    with torch.no_grad():
        latents = vae.encode(pictures.to(vae.device, vae.dtype)).latent_dist.mean.float().cpu()
    latents = (latents - (getattr(vae.config, "shift_factor", 0) or 0)) * vae.config.scaling_factor
    inputs = latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
    inputs = torch.cat([inputs, torch.ones(len(inputs), 1)], dim=1)
    colours = F.avg_pool2d(pictures, scale).permute(0, 2, 3, 1).reshape(-1, 3)
    solution = torch.linalg.lstsq(inputs, colours).solution
    return solution[:-1], solution[-1]


def encode_preview(rgb: torch.Tensor, settings: PreviewSettings, blur: bool = False) -> bytes:
    """A batch of previews tiled in one row (up to three) or a near-square grid, scaled to
    `max_edge`, as image bytes; an empty cell is grey, not black. `blur` (while a safety checker has
    yet to clear the images) leaves 12 blocks along an edge."""
    count, height, width, _ = rgb.shape
    columns = count if count <= 3 else math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    grid = Image.new("RGB", (columns * width, rows * height), (128, 128, 128))
    for k in range(count):
        grid.paste(Image.fromarray(rgb[k].numpy()), ((k % columns) * width, (k // columns) * height))
    scale = settings.max_edge / max(grid.size)
    grid = grid.resize((max(1, round(grid.width * scale)), max(1, round(grid.height * scale))), Image.BILINEAR)
    if blur:
        coarse = 12 / max(grid.size)
        grid = grid.resize((max(1, round(grid.width * coarse)), max(1, round(grid.height * coarse))),
                           Image.BOX).resize(grid.size, Image.BILINEAR)
    out = io.BytesIO()
    grid.save(out, format=settings.format, quality=settings.quality)
    return out.getvalue()


class PreviewMaker:
    """Makes a run's previews and hands each to `deliver`. On a GPU the latents are copied to the
    CPU without waiting (an event says when they have arrived) and the preview is made on a thread
    of its own, so the denoising loop never waits for a copy, an encode or a send; on the CPU,
    where that thread would only compete for the same cores, it is made at once (about a
    millisecond). `wait()` returns when every preview asked for is delivered."""

    def __init__(self, settings: PreviewSettings, taesd=None, blur: bool = False, beside: bool | None = None):
        self.settings, self.taesd, self.blur, self.beside = settings, taesd, blur, beside
        self.pending: list[concurrent.futures.Future] = []
        self.factors = self.unpack = None  # FLUX: its fitted factors, and its packed latents laid out

    def send(self, latents: torch.Tensor, deliver) -> None:
        if self.unpack is not None:
            latents = self.unpack(latents)
        beside = latents.device.type == "cuda" if self.beside is None else self.beside
        if not beside:
            deliver(self._make(latents))
            return
        if latents.device.type == "cuda" and self.taesd is None:
            copy = torch.empty(latents.shape, dtype=latents.dtype, pin_memory=True)
            copy.copy_(latents, non_blocking=True)
            arrived = torch.cuda.Event()
            arrived.record()
        else:  # TAESD decodes on the device: a copy there, ordered on the same stream
            copy, arrived = latents.detach().clone(), None
        self.pending.append(_preview_thread().submit(self._later, copy, arrived, deliver))

    def _later(self, latents, arrived, deliver) -> None:
        if arrived is not None:
            arrived.synchronize()
        deliver(self._make(latents))

    def _make(self, latents) -> bytes:
        return encode_preview(latents_to_rgb(latents, self.taesd, self.factors), self.settings, blur=self.blur)

    def wait(self) -> None:
        pending, self.pending = self.pending, []
        for future in pending:
            future.result()


@functools.cache
def _preview_thread() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="previews")


_TAESD = {}


def tiny_decoder(settings: PreviewSettings | None, model, wanted: bool = True):
    """The tiny autoencoder configured for `model`'s latents (TAEF1 for FLUX.1, TAESD3 for SD 3.5, TAESD
    for the others), loaded; None when none is, or no preview is `wanted`."""
    folder = settings and (settings.taef1 if model.flux else settings.taesd3 if model.sd3 else settings.taesd)
    return load_taesd(folder, model.device, model.dtype) if folder and wanted else None


def load_taesd(folder: str, device, dtype):
    from diffusers import AutoencoderTiny

    key = (folder, str(device), str(dtype))
    if key not in _TAESD:
        _TAESD[key] = AutoencoderTiny.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).to(device)
    return _TAESD[key]
