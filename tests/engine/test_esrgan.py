"""ESRGAN-family upscalers read from files as people download them: the original layout (.pth),
BasicSR's (Real-ESRGAN's params_ema .pth, .safetensors), checked against a forward pass written
here from the architecture's definition."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from generation.engine import esrgan, esrgan_file
from tests.support import esrgan_new_layout, esrgan_state


def reference(state: dict, x: torch.Tensor) -> torch.Tensor:
    """ESRGAN by its definition, on the original layout's tensors: conv, 23 (here: n) RRDBs of
    three dense blocks of five convs (residuals × 0.2), trunk conv + skip, ×2 nearest + conv +
    LeakyReLU per upsampling step, HR conv + LeakyReLU, last conv."""
    def conv(name, h):
        return F.conv2d(h, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)

    def lrelu(h):
        return F.leaky_relu(h, 0.2)

    fea = conv("model.0", x)
    blocks = 1 + max(int(k.split(".")[3]) for k in state if ".RDB" in k)
    trunk = fea
    for b in range(blocks):
        rrdb_in = trunk
        for r in (1, 2, 3):
            h = [trunk]
            for c in range(1, 5):
                h.append(lrelu(conv(f"model.1.sub.{b}.RDB{r}.conv{c}.0", torch.cat(h, 1))))
            trunk = trunk + 0.2 * conv(f"model.1.sub.{b}.RDB{r}.conv5.0", torch.cat(h, 1))
        trunk = rrdb_in + 0.2 * trunk
    fea = fea + conv(f"model.1.sub.{blocks}", trunk)
    tops = sorted({int(k.split(".")[1]) for k in state if k.count(".") == 2 and k.endswith("weight")})
    for n in tops[1:-2]:
        fea = lrelu(conv(f"model.{n}", F.interpolate(fea, scale_factor=2, mode="nearest")))
    return conv(f"model.{tops[-1]}", lrelu(conv(f"model.{tops[-2]}", fea)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("esrgan")
    state = esrgan_state(blocks=2)
    torch.save(state, folder / "4x-old.pth")
    torch.save({"params_ema": esrgan_new_layout(state)}, folder / "RealESRGAN_x4plus.pth")
    save_file(esrgan_new_layout(state), folder / "4x-new.safetensors")
    torch.save(esrgan_state(ups=1, seed=3), folder / "2x-old.pth")
    torch.save(state, folder / "4x-legacy.pth", _use_new_zipfile_serialization=False)  # torch < 1.6's format
    return state, folder


def test_both_key_layouts_load_to_the_network_the_definition_describes(files):
    state, folder = files
    x = torch.rand(1, 3, 20, 28, generator=torch.Generator().manual_seed(1))
    expected = reference(state, x)
    assert expected.shape == (1, 3, 80, 112)
    for name in ("4x-old.pth", "RealESRGAN_x4plus.pth", "4x-new.safetensors", "4x-legacy.pth"):
        assert esrgan_file.describe(folder / name) == 4  # read without running torch's unpickler
        net = esrgan.load_upscaler(folder / name, "cpu", torch.float32)
        assert net.scale == 4
        torch.testing.assert_close(net(x), expected, rtol=1e-4, atol=1e-5)
    assert esrgan_file.describe(folder / "2x-old.pth") == 2


def test_an_upscaler_makes_the_size_asked_for_in_tiles_that_leave_no_seam(files, monkeypatch):
    _, folder = files
    net = esrgan.load_upscaler(folder / "4x-old.pth", "cpu", torch.float32)
    picture = Image.effect_noise((70, 45), 50).convert("RGB")
    whole = esrgan.esrgan_upscale(net, picture, (280, 180))
    assert whole.size == (280, 180) and np.asarray(whole).std() > 10
    # Tiles of 16 px with 40 px of context (the tiny net sees ~36 px around a pixel): the same picture.
    monkeypatch.setattr(esrgan, "TILE", 16)
    monkeypatch.setattr(esrgan, "TILE_PAD", 40)
    tiled = esrgan.esrgan_upscale(net, picture, (280, 180))
    assert np.abs(np.asarray(tiled, np.int16) - np.asarray(whole, np.int16)).max() <= 1
    # Asked for ×2 of a ×4 model: one pass, then down to the size; a ×2 model runs twice for ×4.
    assert esrgan.esrgan_upscale(net, picture, (140, 90)).size == (140, 90)
    two = esrgan.load_upscaler(folder / "2x-old.pth", "cpu", torch.float32)
    assert esrgan.esrgan_upscale(two, picture, (280, 180)).size == (280, 180)


def test_files_that_are_no_rrdbnet_or_that_would_run_code_are_refused_by_name(files, tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"model.0.weight": torch.zeros(1), "x": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="evil.pth is not a weights-only PyTorch file"):
        esrgan_file.describe(tmp_path / "evil.pth")
    save_file({"lora_unet_down.lora_down.weight": torch.zeros(2, 2)}, tmp_path / "lora.safetensors")
    with pytest.raises(ValueError, match="lora.safetensors is not an ESRGAN"):
        esrgan_file.describe(tmp_path / "lora.safetensors")
    state = esrgan_state()
    del state["model.1.sub.0.RDB2.conv3.0.weight"]
    torch.save(state, tmp_path / "damaged.pth")
    with pytest.raises(ValueError, match="damaged.pth is not an ESRGAN"):
        esrgan_file.describe(tmp_path / "damaged.pth")
