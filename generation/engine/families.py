"""Single-file checkpoints (the original LDM layout) and add-on files (LoRA, embeddings, ControlNet):
what family a file is, told from its tensor names and shapes without loading a weight, and the
diffusers configs shipped for each family. No torch."""

import hashlib
import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from . import flux, sd3, zimage
from .request import JobError

CONFIGS = Path(__file__).parent / "configs"  # model configs of each family (facts, not weights)
UNET = "model.diffusion_model."
_MAX_HEADER = 16 * 2**20  # an SDXL checkpoint's is ~0.3 MB; kohya's training metadata can add a few MB
_MAX_TENSORS = 20_000  # an SDXL checkpoint has ~2 500, a LyCORIS for it ~5 000


@dataclass(frozen=True)
class Family:
    label: str
    pipeline: str  # the diffusers pipeline class
    side: int  # the size it was trained at
    xl: bool = False
    role: str = "txt2img"  # or "inpaint" (9-channel UNet), "refiner"
    flux: bool = False  # a FLUX.1 transformer: flow matching, T5 and CLIP-L, no negative prompt
    sd3: bool = False  # an SD 3.5 MMDiT: flow matching, CLIP-L, CLIP-G and T5, CFG
    zimage: bool = False  # Z-Image: a single-stream transformer, flow matching, Qwen3 4B, FLUX.1's VAE
    steps: int = 20  # a good default number of steps
    guidance: float = 7.0  # ...and CFG scale

    @property
    def group(self) -> str:
        """What messages call a transformer family's models ("FLUX.1", "SD 3.5", "Z-Image"), else ""."""
        return "FLUX.1" if self.flux else "SD 3.5" if self.sd3 else "Z-Image" if self.zimage else ""

    @property
    def transformer(self) -> bool:
        """FLUX.1, SD 3.5 or Z-Image: a transformer over 16-channel latents, flow matching (parts.py)."""
        return bool(self.group)

    @property
    def big_encoder(self) -> str:
        """The pipeline part holding its large text encoder (T5-XXL, Qwen3 4B), which may live on the CPU."""
        return {"FLUX.1": "text_encoder_2", "SD 3.5": "text_encoder_3", "Z-Image": "text_encoder"}.get(self.group, "")


FAMILIES = {
    "sd1": Family("SD 1.x", "StableDiffusionPipeline", 512),
    "sd1-inpaint": Family("SD 1.x inpainting", "StableDiffusionInpaintPipeline", 512, role="inpaint"),
    "sd2": Family("SD 2.x (epsilon, 512)", "StableDiffusionPipeline", 512),
    "sd2-v": Family("SD 2.x (v-prediction, 768)", "StableDiffusionPipeline", 768),
    "sdxl": Family("SDXL", "StableDiffusionXLPipeline", 1024, xl=True),
    "sdxl-inpaint": Family("SDXL inpainting", "StableDiffusionXLInpaintPipeline", 1024, xl=True, role="inpaint"),
    "sdxl-refiner": Family("SDXL refiner", "StableDiffusionXLImg2ImgPipeline", 1024, xl=True, role="refiner"),
    "flux-dev": Family("FLUX.1 [dev]", "FluxPipeline", 1024, flux=True, steps=28),
    "flux-schnell": Family("FLUX.1 [schnell]", "FluxPipeline", 1024, flux=True, steps=4),
    "sd35-large": Family("SD 3.5 Large", "StableDiffusion3Pipeline", 1024, sd3=True, steps=28, guidance=3.5),
    "sd35-large-turbo": Family("SD 3.5 Large Turbo", "StableDiffusion3Pipeline", 1024, sd3=True, steps=4, guidance=1.0),
    "sd35-medium": Family("SD 3.5 Medium", "StableDiffusion3Pipeline", 1024, sd3=True, steps=40, guidance=4.5),
    "zimage-turbo": Family("Z-Image Turbo", "ZImagePipeline", 1024, zimage=True, steps=8, guidance=1.0),
}
TXT2IMG_FAMILIES = [name for name, family in FAMILIES.items() if family.role == "txt2img"]  # (not refiners)


def role_problem(family: str, mode: str) -> str:
    """Why a model of `family` can't run `mode` (txt2img, img2img, inpaint), or "": a refiner makes
    nothing of its own, an inpainting model needs a mask. The submit check and the engine ask this."""
    role = FAMILIES[family].role if family in FAMILIES else "txt2img"
    if role == "refiner" or role == "inpaint" and mode != "inpaint":
        return (f"is {FAMILIES[family].label}: it can't make an image "
                + ("without a mask" if role == "inpaint" else "from text alone"))
    return ""


def refiner_problem(family: str, refiner_family: str) -> str:
    """Why a model of `refiner_family` can't refine one of `family`, or "": refiners are SDXL refiners
    or SDXL bases, for SDXL checkpoints."""
    xl = family in FAMILIES and FAMILIES[family].xl
    if xl and refiner_family in FAMILIES and FAMILIES[refiner_family].xl and FAMILIES[refiner_family].role != "inpaint":
        return ""
    return "a refiner must be an SDXL refiner or base, for an SDXL checkpoint"


def family_config(family: str) -> Path:
    """The shipped diffusers config folder of `family`."""
    if family not in FAMILIES:
        raise JobError(f"family must be one of {', '.join(FAMILIES)} (got {family!r})")
    return CONFIGS / family


def read_header(path) -> dict:
    """The tensor table of a .safetensors file, {name: {"dtype", "shape", "data_offsets"}}, checked
    against the file's size; ValueError for anything that is not a whole safetensors file. A .gguf
    file's: {name: {"dtype", "shape"}}."""
    path = Path(path)
    if path.suffix.lower() == ".gguf":
        return _gguf_header(path)
    size = path.stat().st_size
    with open(path, "rb") as file:
        head = file.read(8)
        if len(head) < 8:
            raise JobError(f"{path.name} is not a safetensors file: it is only {size} bytes long")
        (length,) = struct.unpack("<Q", head)
        if _MAX_HEADER < length <= size - 8:
            raise JobError(f"{path.name}'s header is {length / 2**20:.0f} MB; at most {_MAX_HEADER // 2**20} MB "
                             "is accepted")
        if not 2 <= length <= size - 8:
            raise JobError(f"{path.name} is not a safetensors file (or it is truncated): its header length is invalid")
        try:
            header = json.loads(file.read(length))
        except (ValueError, RecursionError):
            raise JobError(f"{path.name} is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise JobError(f"{path.name} is not a safetensors file: its header is not a table of tensors")
    header.pop("__metadata__", None)
    if len(header) > _MAX_TENSORS:
        raise JobError(f"{path.name} has {len(header)} tensors; at most {_MAX_TENSORS} are accepted")
    try:
        spans = sorted((int(t["data_offsets"][0]), int(t["data_offsets"][1])) for t in header.values())
    except (TypeError, KeyError, IndexError, ValueError):
        raise JobError(f"{path.name} is not a safetensors file: its tensor table is malformed") from None
    end = 0
    for start, stop in spans:  # the format's rule, which the loader enforces only when a job runs
        if start != end or stop < start:
            raise JobError(f"{path.name} is damaged: its tensors overlap or leave gaps in the data")
        end = stop
    if 8 + length + end != size:
        raise JobError(f"{path.name} is truncated or damaged: its header describes {8 + length + end} bytes, "
                         f"the file has {size}")
    return header


def _gguf_header(path: Path) -> dict:
    """A GGUF file's tensors (names, quantization type, shapes in torch's order), read from its
    header without loading a weight."""
    from gguf import GGUFReader

    try:
        tensors = GGUFReader(path).tensors
    except (ValueError, KeyError, IndexError, OSError):
        raise JobError(f"{path.name} is not a GGUF file (or it is truncated)") from None
    if len(tensors) > _MAX_TENSORS:
        raise JobError(f"{path.name} has {len(tensors)} tensors; at most {_MAX_TENSORS} are accepted")
    return {t.name: {"dtype": t.tensor_type.name, "shape": [int(side) for side in reversed(t.shape)]} for t in tensors}


def file_family(path) -> str:
    """detect_family of the file at `path`, with what only its neighbours and name tell."""
    return detect_family(read_header(path), v_prediction=v_prediction_beside(path), turbo="turbo" in Path(path).name.lower())


def detect_family(header: dict, *, v_prediction: bool = False, turbo: bool = False) -> str:
    """The family of an LDM-layout checkpoint from its tensor names; ValueError naming what the
    file is when it is not a checkpoint this studio runs. SD 2.x epsilon and v-prediction models
    have the same names: `v_prediction` (from a .yaml beside the file, or the operator) decides; so
    do SD 3.5 Large and Large Turbo: `turbo` (its file name, or the operator)."""
    keys = header.keys()
    first_conv = header.get(UNET + "input_blocks.0.0.weight")
    if (other := other_family(header)) and not any(prefix + zimage.MARKER in header for prefix in (UNET, "")):
        raise JobError(f"this is a {other} model: this studio runs SD 1.x, SD 2.x, SDXL, SD 3.5, FLUX.1 and Z-Image "
                       f"checkpoints, not {other} (yet)")
    for prefix in (UNET, ""):
        if prefix + flux.MARKER in header:
            return flux.flux_family(header, prefix)
        if prefix + sd3.MARKER in header:
            return sd3.sd3_family(header, prefix, turbo)
        if prefix + zimage.MARKER in header:
            return "zimage-turbo"
    if first_conv is None:
        raise JobError(f"this is not a Stable Diffusion checkpoint: it looks like {_what_else(keys)}")
    if not any(k.startswith("first_stage_model.") for k in keys):
        raise JobError("this checkpoint has no VAE (first_stage_model.*): a complete checkpoint is needed")
    channels = first_conv["shape"][1]
    if channels not in (4, 9):
        raise JobError(f"this checkpoint's UNet takes {channels} input channels; only 4 (txt2img) and 9 "
                         "(inpainting) are supported")
    inpaint = channels == 9
    if any(k.startswith("conditioner.embedders.1.model.") for k in keys):
        family = "sdxl"
    elif any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        family = "sdxl-refiner"
    elif any(k.startswith("cond_stage_model.model.") for k in keys):
        family = "sd2-v" if v_prediction else "sd2"
    elif any(k.startswith("cond_stage_model.transformer.") for k in keys):
        family = "sd1"
    else:
        raise JobError("this checkpoint has a UNet but no text encoder this studio knows (neither CLIP nor OpenCLIP)")
    if inpaint:
        if family not in ("sd1", "sdxl"):
            raise JobError(f"{FAMILIES[family].label} inpainting checkpoints are not supported "
                             "(SD 1.x and SDXL inpainting are)")
        family += "-inpaint"
    return family


def vae_layout(header: dict) -> str:
    """"ldm" or "diffusers" for a VAE on its own; ValueError naming what else the file is."""
    if "encoder.down.0.block.0.conv1.weight" in header and "decoder.conv_out.weight" in header:
        return "ldm"
    if "encoder.down_blocks.0.resnets.0.conv1.weight" in header and "decoder.conv_out.weight" in header:
        return "diffusers"
    what = "a whole checkpoint" if UNET + "input_blocks.0.0.weight" in header else _what_else(header.keys())
    raise JobError(f"this is not a VAE: it looks like {what}")


# Families this studio doesn't run yet, each told by a tensor only it has (in a whole file under
# UNET's prefix, or in its transformer's file alone); the first that matches names the file.
OTHER_FAMILIES = (
    ("FLUX.2", "single_stream_modulation.lin.weight"),
    ("Chroma", "distilled_guidance_layer.in_proj.bias"),
    ("Lumina 2", "cap_embedder.0.weight"),
    ("HiDream", "double_stream_blocks.0.block.adaLN_modulation.1.bias"),
    ("Qwen-Image", "txt_in.text_norm.weight"),
    ("AuraFlow", "double_layers.0.attn.w2q.weight"),
    ("Sana", "blocks.0.cross_attn.q_linear.weight"),
    ("Stable Cascade", "clip_txt_mapper.weight"),
    ("HunyuanVideo", "txt_in.individual_token_refiner.blocks.0.adaLN_modulation.1.bias"),
    ("LTX-Video", "patchify_proj.weight"),
    ("Wan", "head.modulation"),
)


def other_family(header: dict) -> str:
    """The name of a model family this studio doesn't run, if the file is one; else ""."""
    for label, marker in OTHER_FAMILIES:
        for prefix in (UNET, ""):
            if prefix + marker in header:
                return label
    return ""


def _what_else(keys) -> str:
    keys = list(keys)
    joined = "\n".join(keys)
    if re.search(r"lora_|\.lora_(down|up|A|B)\.|\.alpha$", joined, re.M):
        return "a LoRA (add it as a LoRA, not a checkpoint)"
    if any(k in ("emb_params", "string_to_param", "clip_l", "clip_g") for k in keys):
        return "a textual-inversion embedding"
    if any(k.startswith(("control_model.", "controlnet_", "input_hint_block.")) for k in keys):
        return "a ControlNet"
    if any(k.startswith(("encoder.down.", "decoder.up.", "first_stage_model.")) for k in keys):
        return "a VAE on its own"
    if any(k.startswith(("down_blocks.", "conv_in.")) for k in keys):
        return "one diffusers component (give the whole diffusers folder instead)"
    if not keys:
        return "an empty file"
    return f"something else ({len(keys)} tensors, the first named {sorted(keys)[0][:80]!r})"


def v_prediction_beside(path) -> bool:
    """True when a .yaml beside the file says v-prediction, as A1111 reads it for SD 2.x."""
    yaml = Path(path).with_suffix(".yaml")
    return yaml.is_file() and re.search(r"parameterization:\s*['\"]?v['\"]?\s*$", yaml.read_text(errors="replace"),
                                        re.M) is not None


def file_sha256(path, progress=None) -> str:
    """The SHA-256 of a file (A1111's model hash is its first 10 hex digits). `progress(n)` is
    told each block's size."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(8 << 20), b""):
            digest.update(block)
            if progress:
                progress(len(block))
    return digest.hexdigest()


# Add-on files: LoRA (Kohya and PEFT layouts), textual-inversion embeddings, ControlNets.
KOHYA_LORA_KEY = re.compile(r"^(?P<base>.+?)\.(?P<part>lora_down\.weight|lora_up\.weight|alpha|lora_A\.weight|lora_B\.weight)$")
LYCORIS_KEY = re.compile(r"\.(hada_|lokr_|oft_|boft_|diff$|diff_b$|dora_scale$)")


def addon_family(kind: str, path) -> str:
    """The base family an add-on file is for ("sd1", "sd2", "sdxl", "flux", "sd35", "zimage"), from its tensor names and
    shapes; ValueError naming what is wrong with a file that is not the kind it claims to be."""
    header = read_header(path)
    _check_tensors(header, Path(path).name)
    keys = list(header)
    if kind == "lora":
        if not any(KOHYA_LORA_KEY.match(k) for k in keys):
            raise JobError(f"{Path(path).name} is not a LoRA: it has no lora_down/lora_up (or lora_A/lora_B) tensors"
                             + (" (LoHa/LoKr/OFT layers are not supported)" if any(LYCORIS_KEY.search(k) for k in keys)
                                else ""))
        if any(re.search(r"(double|single)_blocks|single_transformer_blocks", k) for k in keys):
            return "flux"
        if any(re.match(r"(lora_unet_|diffusion_model\.|transformer\.)?(layers|context_refiner|noise_refiner)[._]\d+[._]"
                        r"(attention|feed_forward|adaLN)", k) for k in keys):
            return "zimage"
        if any(re.match(r"(lora_unet_|diffusion_model\.)?joint_blocks|(transformer\.|lora_transformer_)transformer_blocks",
                        k) for k in keys):
            return "sd35"  # (a FLUX.1 LoRA of double blocks only would land here: it fits no SD 3.5 layer)
        if any(k.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks", "lora_unet_output_blocks",
                             "text_encoder_2.")) for k in keys):
            return "sdxl"
        widths = [header[k]["shape"][-1] for k in keys if "attn2_to_k.lora_down" in k or "attn2.to_k.lora_A" in k]
        return "sd2" if widths and widths[0] == 1024 else "sd1"
    if kind == "embedding":
        if {"clip_l", "clip_g"} <= set(keys):
            return "sdxl"
        vectors = header.get("emb_params") or (header[keys[0]] if len(keys) == 1 else None)
        if vectors is None or len(vectors["shape"]) not in (1, 2):
            raise JobError(f"{Path(path).name} is not an embedding: it needs one emb_params tensor (A1111), one "
                             "tensor (diffusers) or clip_l and clip_g (SDXL)")
        return "sd2" if vectors["shape"][-1] == 1024 else "sd1"
    if kind == "controlnet":
        if "controlnet_x_embedder.weight" in header:  # InstantX's and Shakker-Labs' layout (diffusers')
            return "flux"
        if any(k.startswith("double_blocks.") for k in keys):
            raise JobError(f"{Path(path).name} is an XLabs FLUX.1 ControlNet: its layout is not read here yet (the "
                           "diffusers-layout FLUX.1 ControlNets, InstantX's and Shakker-Labs', are)")
        if not any(k.startswith(("controlnet_cond_embedding.", "control_model.input_hint_block.", "input_hint_block."))
                   for k in keys):
            raise JobError(f"{Path(path).name} is not a ControlNet: it has no conditioning (hint) block")
        if any(k.startswith(("add_embedding.", "control_model.label_emb.", "label_emb.")) for k in keys):
            return "sdxl"
        widths = [header[k]["shape"][-1] for k in keys if k.endswith("attn2.to_k.weight")]
        return "sd2" if widths and widths[0] == 1024 else "sd1"
    raise JobError(f"kind must be lora, embedding or controlnet (got {kind!r})")


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
                "F8_E4M3": 1, "F8_E5M2": 1}


def _check_tensors(header: dict, name: str) -> None:
    """Every tensor of a known type, its bytes exactly its shape's: a file that says it is
    weights is weights."""
    for key, tensor in header.items():
        try:
            count = 1
            for side in tensor["shape"]:
                count *= int(side)
            start, end = (int(x) for x in tensor["data_offsets"])
            ok = tensor["dtype"] in _DTYPE_BYTES and end - start == count * _DTYPE_BYTES[tensor["dtype"]]
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise JobError(f"{name} is damaged: tensor {key[:80]!r} does not match its declared type and shape")


def file_metadata(path) -> dict:
    """The __metadata__ strings of a .safetensors file (training tags live there)."""
    with open(path, "rb") as file:
        length = int.from_bytes(file.read(8), "little")
        return json.loads(file.read(length)).get("__metadata__") or {}
