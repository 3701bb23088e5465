"""X/Y/Z plot, as A1111's script defines it: up to three axes, each a setting and its values, one
image per combination (x varies fastest, then y, then z), and a labelled grid of them: a grid of
x columns and y rows for each z value, side by side under the z value's title."""

import re
import time
from dataclasses import dataclass, field

from PIL import Image, ImageDraw, ImageFont

# A1111's txt2img axis list in its order (script_args name an axis by its index here); those the
# studio runs map to the request field they set.
AXES = ("Nothing", "Seed", "Var. seed", "Var. strength", "Steps", "Hires steps", "CFG Scale", "Prompt S/R",
        "Prompt order", "Sampler", "Hires sampler", "Checkpoint name", "Negative Guidance minimum sigma",
        "Sigma Churn", "Sigma min", "Sigma max", "Sigma noise", "Schedule type", "Schedule min sigma",
        "Schedule max sigma", "Schedule rho", "Eta", "Clip skip", "Denoising", "Initial noise multiplier",
        "Extra noise", "Hires upscaler", "VAE", "Styles", "UniPC Order", "Face restore", "Token merging ratio",
        "Token merging ratio high-res", "Always discard next-to-last sigma", "SGM noise multiplier",
        "Refiner checkpoint", "Refiner switch at", "RNG source")
FIELDS = {"Seed": ("seed", int), "Var. seed": ("subseed", int), "Var. strength": ("subseed_strength", float),
          "Steps": ("steps", int), "Hires steps": ("hr_second_pass_steps", int), "CFG Scale": ("guidance_scale", float),
          "Prompt S/R": ("prompt", str), "Sampler": ("scheduler", str), "Checkpoint name": ("checkpoint", str),
          "Clip skip": ("clip_skip", int), "Denoising": ("denoising_strength", float),
          "Hires upscaler": ("hr_upscaler", str), "VAE": ("vae", str)}
SUPPORTED = ("Nothing", *FIELDS)
MAX_GRID_SIDE = 4096
_RANGE = re.compile(r"([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)\s*(?:\(([+-]?\d+(?:\.\d*)?)\)|\[(\d+)\])?")


def axis_values(axis: str, text: str) -> list:
    """An axis's values from the text A1111 takes: comma-separated, numbers also as ranges
    ("1-5", "10-30 (+10)", "0-1 [5]"); ValueError saying what is wrong."""
    kind = FIELDS[axis][1]
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    values = []
    for part in parts:
        found = _RANGE.fullmatch(part) if kind is not str else None
        if found:
            start, end = kind(float(found[1])), kind(float(found[2]))
            if found[4]:  # [count]: evenly spaced, ends included
                count = int(found[4])
                values += [kind(start + (end - start) * k / max(count - 1, 1)) for k in range(count)]
            else:
                step = kind(float(found[3])) if found[3] else 1
                if step == 0 or (end - start) / step < 0:
                    raise ValueError(f"{part!r} is a range that never ends")
                n = int(round((end - start) / step, 6)) + 1
                values += [kind(start + k * step) for k in range(min(n, 1000))]
            continue
        try:
            values.append(kind(part))
        except ValueError:
            raise ValueError(f"{part!r} is not {'a whole number' if kind is int else 'a number'}") from None
    if not values:
        raise ValueError("give at least one value")
    return values


def label(axis: str, value) -> str:
    """How the grid names a value: "Steps: 20"; a prompt replacement and a choice by the value alone."""
    shown = f"{value:g}" if isinstance(value, float) else str(value)
    return shown if FIELDS[axis][1] is str else f"{axis}: {shown}"


def grid(cells: list, columns: int, rows: int, x_labels, y_labels, z_labels) -> Image.Image:
    """The cells (x fastest, then y, then z; None for one withheld: black) in a grid per z value,
    labelled along the top (x) and the left (y), titled with the z value; the grids side by side."""
    width, height = next(c.size for c in cells if c is not None)
    font = ImageFont.load_default(size=max(12, width // 16))
    pad = font.size // 2
    top = (font.size + 2 * pad) * (1 + bool(z_labels)) if x_labels else (font.size + 2 * pad) * bool(z_labels)
    left = max((int(font.getlength(text)) for text in y_labels), default=0) + 2 * pad if y_labels else 0
    sub = (left + columns * width, top + rows * height)
    layers = max(1, len(z_labels))
    picture = Image.new("RGB", (sub[0] * layers, sub[1]), "white")
    draw = ImageDraw.Draw(picture)
    for z in range(layers):
        x0 = z * sub[0]
        if z_labels:
            draw.text((x0 + left + columns * width / 2, pad), z_labels[z], fill="black", font=font, anchor="mt")
        for col, text in enumerate(x_labels):
            draw.text((x0 + left + col * width + width / 2, top - pad), text, fill="black", font=font, anchor="mb")
        for row, text in enumerate(y_labels):
            draw.text((x0 + left - pad, top + row * height + height / 2), text, fill="black", font=font, anchor="rm")
        for row in range(rows):
            for col in range(columns):
                cell = cells[(z * rows + row) * columns + col]
                if cell is None:
                    cell = Image.new("RGB", (width, height), "black")
                picture.paste(cell.resize((width, height)), (x0 + left + col * width, top + row * height))
    picture.thumbnail((MAX_GRID_SIDE, MAX_GRID_SIDE))  # the cells are stored at full size beside it
    return picture


@dataclass
class PlotResult:
    """Shaped like GenerationResult where the studio stores images: the cells that were not
    withheld, then the grid (index: the number of cells)."""

    images: list[Image.Image]
    seeds: list[int]
    indexes: list[int]
    texts: list[str]
    flagged: list[int] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def parameters(self, k: int) -> str:
        return self.texts[k]


def plot_result(results: list, axes: list[dict], started: float) -> PlotResult:
    """The cells' GenerationResults (one image each, or none when withheld) and their grid; the
    grid's infotext is the first cell's with A1111's script keys."""
    pictures = [r.images[0] if r.images else None for r in results]
    if not any(pictures):
        pictures = [Image.new("RGB", (r.request.width, r.request.height), "black") for r in results]
    named = dict(zip("XYZ", axes))
    counts = [len(named[a]["values"]) if a in named else 1 for a in "XYZ"]
    labels = [[label(named[a]["type"], v) for v in named[a]["values"]] if a in named else [] for a in "XYZ"]
    picture = grid(pictures, counts[0], counts[1], *labels)
    script = {"Script": "X/Y/Z plot"} | {f"{a} {what}": value for a in named for what, value in (
        ("Type", named[a]["type"]), ("Values", ", ".join(map(str, named[a]["values"]))))}
    kept = [k for k, r in enumerate(results) if r.images]
    text = results[kept[0]].parameters(0) if kept else ""
    return PlotResult(
        images=[results[k].images[0] for k in kept] + [picture],
        seeds=[results[k].seeds[0] for k in kept] + [results[0].request.seed],
        indexes=kept + [len(results)], texts=[results[k].parameters(0) for k in kept] + [
            ", ".join([text, *(f"{key}: {_quoted(value)}" for key, value in script.items())]) if text else ""],
        flagged=[k for k, r in enumerate(results) if not r.images], timings={"total": time.perf_counter() - started})


def _quoted(value: str) -> str:
    return f'"{value}"' if "," in value or ":" in value else value
