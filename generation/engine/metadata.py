"""PNG metadata in AUTOMATIC1111's `parameters` text format, so tools that read A1111 images
read ours, and A1111's own infotexts read back here.

The format: the prompt (possibly several lines), then a `Negative prompt: ...` line when there is
one, then one line of `Key: value` pairs joined by ", ". A value containing a comma, colon or
newline is written as a JSON string.
"""

import json
import re

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from . import __version__
from .schedulers import resolve_scheduler, scheduler_spec

_NEGATIVE = "Negative prompt:"
_INT_KEYS = {"Steps": "steps", "Seed": "seed", "Clip skip": "clip_skip", "Variation seed": "subseed"}
_FLOAT_KEYS = {"CFG scale": "cfg_scale", "Variation seed strength": "subseed_strength"}
_TEXT_KEYS = {"Sampler": "sampler", "Schedule type": "schedule_type", "Model hash": "model_hash",
              "Model": "model", "Version": "version"}


def format_parameters(
    *, prompt: str, negative_prompt: str = "", steps: int, scheduler: str, guidance_scale: float,
    seed: int, width: int, height: int, model_hash: str | None = None, model_name: str | None = None,
    extra: dict | None = None,
) -> str:
    spec = scheduler_spec(scheduler)
    fields = {
        "Steps": steps,
        "Sampler": spec.sampler,
        "Schedule type": spec.schedule_type,
        "CFG scale": _number(guidance_scale),
        "Seed": seed,
        "Size": f"{width}x{height}",
        "Model hash": model_hash,
        "Model": model_name,
        **(extra or {}),
        "Version": f"sdweb {__version__}",
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in fields.items() if value is not None)
    lines = [prompt]
    if negative_prompt:
        lines.append(f"{_NEGATIVE} {negative_prompt}")
    return "\n".join(lines + [line])


def parse_parameters(text: str) -> dict:
    """Read an A1111-style infotext. Known keys come back typed under snake_case names (with
    `scheduler`, our name for the sampler and schedule type); other keys stay strings as written."""
    *head, last = text.strip("\n").split("\n")
    pairs = _parse_pairs(last)
    if len(pairs) < 3:  # no parameter line: it is all prompt
        head, pairs = head + [last], {}
    prompt_lines, negative_lines = [], None
    for line in head:
        if negative_lines is None and line.startswith(_NEGATIVE):
            negative_lines = [line[len(_NEGATIVE):].lstrip(" ")]
        elif negative_lines is not None:
            negative_lines.append(line)
        else:
            prompt_lines.append(line)
    result = {"prompt": "\n".join(prompt_lines), "negative_prompt": "\n".join(negative_lines or [])}
    for key, value in pairs.items():
        if key in _INT_KEYS:
            result[_INT_KEYS[key]] = int(value)
        elif key in _FLOAT_KEYS:
            result[_FLOAT_KEYS[key]] = float(value)
        elif key in _TEXT_KEYS:
            result[_TEXT_KEYS[key]] = value
        elif key == "Size" and "x" in value:
            width, height = value.split("x", 1)
            result["width"], result["height"] = int(width), int(height)
        else:
            result[key] = value
    if "sampler" in result:
        try:
            # Without a Schedule type key (A1111 before 1.9) the sampler name says it all.
            result["scheduler"] = (
                resolve_scheduler(result["sampler"], result["schedule_type"])
                if "schedule_type" in result else scheduler_spec(result["sampler"]).name
            )
        except ValueError:
            pass  # a sampler we don't run: the raw names are still there
    return result


AI_GENERATED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
_XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/" '
        'xmlns:sdweb="urn:sdweb:1.0:" Iptc4xmpExt:DigitalSourceType="{source}" sdweb:ImageId="{image_id}"/>'
        '</rdf:RDF></x:xmpmeta>')


def save_png(image: Image.Image, fp, parameters: str, image_id: str = "") -> None:
    """Save `image` as PNG with the `parameters` text chunk (iTXt when it isn't Latin-1) and an
    XMP packet marking it as made by a trained algorithm (IPTC's digital source type), with
    `image_id` for tracing when the watermark can't be read."""
    info = PngInfo()
    info.add_text("parameters", parameters)
    info.add_itxt("XML:com.adobe.xmp", _XMP.format(source=AI_GENERATED, image_id=image_id))
    image.save(fp, format="PNG", pnginfo=info)


def read_png_parameters(image: Image.Image) -> str | None:
    return image.info.get("parameters")


def read_png_marking(image: Image.Image) -> dict:
    """{"ai_generated": bool, "image_id": str} from the XMP packet that `save_png` writes."""
    xmp = str(image.info.get("XML:com.adobe.xmp", ""))
    found = re.search(r'sdweb:ImageId="([0-9a-f]*)"', xmp)
    return {"ai_generated": f'DigitalSourceType="{AI_GENERATED}"' in xmp, "image_id": found.group(1) if found else ""}


def _quote(value) -> str:
    text = str(value)
    if any(c in text for c in ",:\n") or text.startswith('"'):
        return json.dumps(text, ensure_ascii=False)
    return text


def _number(value: float):
    return int(value) if float(value).is_integer() else value


def _parse_pairs(line: str) -> dict:
    """`Key: value, Key: "quoted, value", ...` -> dict; {} when the line isn't such a list."""
    pairs, i, n = {}, 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        colon = line.find(":", i)
        if colon < 0:
            return pairs
        key = line[i:colon].strip()
        if not key or "," in key or '"' in key:
            return pairs
        i = colon + 1
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] == '"':
            try:
                value, end = json.JSONDecoder().raw_decode(line, i)
            except json.JSONDecodeError:
                return pairs
            i = end
        else:
            end = line.find(",", i)
            end = n if end < 0 else end
            value, i = line[i:end].strip(), end
        pairs[key] = value
        while i < n and line[i] == " ":
            i += 1
        if i < n and line[i] != ",":
            return pairs
        i += 1
    return pairs
