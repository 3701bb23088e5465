"""An ESRGAN-family (RRDBNet) file read without torch, as a scan in a web process reads it: its
tensor names and shapes (a .safetensors header; a .pth's pickle read by an unpickler that knows
only tensors and dicts, so nothing in the file runs), either key layout mapped to one, and the
network's sizes told from the shapes, every tensor checked against them."""

import pickle
import re
import zipfile
from pathlib import Path

MAX_FILE_BYTES = 512 * 2**20  # real ones are 17-70 MB
WRAPPERS = ("params_ema", "params", "state_dict")  # Real-ESRGAN's and trainers' wrappers


def check_size(path: Path) -> None:
    if path.stat().st_size > MAX_FILE_BYTES:
        raise ValueError(f"{path.name} is larger than an upscaler can be ({MAX_FILE_BYTES // 2**20} MB)")


def unwrapped(state):
    for wrapper in WRAPPERS:
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            return state[wrapper]
    return state


def torch_load(path: Path) -> dict:
    """A .pth's tensors read by torch with weights_only: a pickle that names any code is refused
    before it runs."""
    import torch

    try:
        state = unwrapped(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as error:
        raise ValueError(f"{path.name} is not a weights-only PyTorch file (.pth)") from error
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path.name} holds no state dict of tensors")
    return state


class _Dict(dict):
    """collections.OrderedDict as a state dict pickles it (it may carry _metadata)."""


class _Shapes(pickle.Unpickler):
    """A torch zip file's data.pkl with every tensor read as its shape; any other global refused."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return _Dict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, *rest: tuple(size)
        if (module, name) == ("torch._utils", "_rebuild_parameter"):
            return lambda data, *rest: data
        if module == "torch" and name.endswith("Storage"):
            return name
        raise pickle.UnpicklingError(f"it names {module}.{name}")

    def persistent_load(self, pid):
        return None  # the storage itself: not needed for its shape


def read_shapes(path) -> dict[str, tuple]:
    """{tensor name: shape} of an upscaler file; ValueError for anything that is not one."""
    path = Path(path)
    check_size(path)
    if path.suffix.lower() == ".safetensors":
        from .families import _check_tensors, read_header

        header = read_header(path)
        _check_tensors(header, path.name)
        return {k: tuple(v["shape"]) for k, v in header.items()}
    if not zipfile.is_zipfile(path):  # torch's legacy format: torch reads it
        return {k: tuple(v.shape) for k, v in torch_load(path).items()}
    try:
        with zipfile.ZipFile(path) as archive:
            pickled = next(n for n in archive.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            state = unwrapped(_Shapes(archive.open(pickled)).load())
    except (StopIteration, pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as error:
        raise ValueError(f"{path.name} is not a weights-only PyTorch file (.pth)") from error
    if not isinstance(state, dict) or not all(isinstance(v, tuple) for v in state.values()):
        raise ValueError(f"{path.name} holds no state dict of tensors")
    return state


_OLD_BLOCK = re.compile(r"model\.1\.sub\.(\d+)\.RDB([123])\.conv([1-5])\.0\.(weight|bias)$")
_NEW_BLOCK = re.compile(r"body\.(\d+)\.rdb([123])\.conv([1-5])\.(weight|bias)$")
_OLD_TOP = re.compile(r"model\.(\d+)\.(weight|bias)$")
_NEW_UP = re.compile(r"conv_up(\d+)\.(weight|bias)$")


def _block_key(found: re.Match) -> str:
    block, rdb, conv, part = found.groups()
    return f"body.{block}.blocks.{int(rdb) - 1}.convs.{int(conv) - 1}.{part}"


def renamed(state: dict, name: str) -> dict:
    """The file's tensors (or shapes) under esrgan.RRDBNet's names; ValueError when it is no RRDBNet."""
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


def layout(shapes: dict[str, tuple], name: str) -> dict:
    """RRDBNet's sizes from its (renamed) tensors' shapes; ValueError unless every tensor is
    exactly what those sizes make."""
    try:
        features, folded = shapes["first.weight"][:2]
        growth, channels = shapes["body.0.blocks.0.convs.0.weight"][0], shapes["last.weight"][0]
        sizes = {"channels": channels, "features": features, "growth": growth,
                 "blocks": 1 + max(int(k.split(".")[1]) for k in shapes if k.startswith("body.")),
                 "ups": sum(k.startswith("ups.") and k.endswith(".weight") for k in shapes),
                 "unshuffle": {1: 1, 4: 2, 16: 4}[folded // channels]}
    except (KeyError, ValueError, ZeroDivisionError, IndexError) as error:
        raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model its tensors agree on") from error
    if shapes != _expected(**sizes):
        raise ValueError(f"{name} is not an ESRGAN (RRDBNet) model its tensors agree on")
    if 2 ** sizes["ups"] // sizes["unshuffle"] < 2 or channels != 3:
        raise ValueError(f"{name} is not an upscaler of colour pictures (a 1× or other-channel model)")
    return sizes


def scale_of(sizes: dict) -> int:
    return 2 ** sizes["ups"] // sizes["unshuffle"]


def _expected(*, channels, features, growth, blocks, ups, unshuffle) -> dict:
    def conv(name, out, inp):
        return {f"{name}.weight": (out, inp, 3, 3), f"{name}.bias": (out,)}

    shapes = conv("first", features, channels * unshuffle**2) | conv("body_conv", features, features)
    for b in range(blocks):
        for r in range(3):
            for c in range(5):
                shapes |= conv(f"body.{b}.blocks.{r}.convs.{c}", growth if c < 4 else features, features + c * growth)
    for k in range(ups):
        shapes |= conv(f"ups.{k}", features, features)
    return shapes | conv("hr", features, features) | conv("last", channels, features)


def describe(path) -> int:
    """An upscaler file's scale (2, 4, ...); ValueError naming what is wrong with it."""
    name = Path(path).name
    return scale_of(layout(renamed(read_shapes(path), name), name))
