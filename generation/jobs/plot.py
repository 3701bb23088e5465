"""An X/Y/Z plot submitted as one job: every cell validated as a job of its own."""

import itertools
import math
import random

from django.conf import settings

from generation.engine.plot import AXES, FIELDS, SUPPORTED, axis_values
from generation.engine.plot import label as plot_label
from generation.engine.request import MAX_SEED
from generation.engine.schedulers import resolve_scheduler
from generation.jobs.models import Job
from generation.jobs.validation import Refused, validated
from generation.library.models import Checkpoint


def validated_plot(params: dict, inputs: dict, user) -> tuple[Checkpoint, dict]:
    """An X/Y/Z plot: every cell validated as a job of its own (one image), with the seed fixed once
    for all as A1111 does; the job makes the cells and their grid and costs what the cells cost."""
    plot = params["plot"]
    if not isinstance(plot, dict) or set(plot) - {"x", "y", "z"}:
        raise Refused("An X/Y/Z plot is {\"x\": {\"type\": …, \"values\": …}, \"y\": …, \"z\": …}.", field="plot")
    if "init_image" in inputs or params.get("controlnet"):
        raise Refused("An X/Y/Z plot runs from text here: no starting image or ControlNet.", field="plot")
    if params.get("num_images", 1) != 1:
        raise Refused("An X/Y/Z plot makes one image per cell: num_images must be 1.", field="num_images")
    base = {k: v for k, v in params.items() if k != "plot"}
    checkpoint, fields = validated(base, inputs, user)
    axes = _plot_axes(plot, base)
    count = math.prod(len(axis["values"]) for axis in axes)
    if count > settings.SDWEB["PLOT_MAX_CELLS"]:
        raise Refused(f"This plot has {count} cells; at most {settings.SDWEB['PLOT_MAX_CELLS']}.", field="plot")
    cells, passes = [], []
    subseed = fields["subseed"] if fields["subseed"] != -1 else random.SystemRandom().randint(0, MAX_SEED)
    for values in itertools.product(*(axis["values"] for axis in reversed(axes))):  # x varies fastest
        cell = {**base, "seed": fields["seed"], "subseed": subseed}
        for axis, value in zip(reversed(axes), values):
            cell = _plot_apply(axis, cell, value)
        try:
            cell_checkpoint, cell_fields = validated(cell, inputs, user)
        except Refused as refusal:
            raise Refused(f"Plot cell {', '.join(map(str, reversed(values)))}: {refusal}", field="plot") from None
        cells.append({"label": " · ".join(plot_label(axis["type"], value) for axis, value in zip(axes, values[::-1])),
                      "params": {f: cell_fields[f] for f in Job.PARAMS if cell_fields[f] != fields[f]},
                      "checkpoint": cell_checkpoint.pk, "vae": cell_fields["vae"] and cell_fields["vae"].pk,
                      "refiner": cell_fields["refiner"] and cell_fields["refiner"].pk, "addons": cell_fields["addons"]})
        passes += cell_fields["passes"]
    return checkpoint, {**fields, "num_images": len(cells) + 1, "passes": passes,
                        "plot": {"axes": [{k: a[k] for k in ("axis", "type", "values")} for a in axes], "cells": cells}}


def _plot_axes(plot: dict, base: dict) -> list[dict]:
    """The axes in x, y, z order, "Nothing" left out; a type is A1111's index or its label."""
    axes = []
    for name in ("x", "y", "z"):
        axis = plot.get(name) or {}
        kind, text = (axis.get("type", "Nothing"), axis.get("values", "")) if isinstance(axis, dict) else (None, None)
        if isinstance(kind, int) and not isinstance(kind, bool) and 0 <= kind < len(AXES):
            kind = AXES[kind]
        if kind not in AXES:
            raise Refused(f"plot.{name}.type must be one of {', '.join(SUPPORTED)} (or A1111's index).",
                          field=f"plot.{name}.type")
        if kind == "Nothing":
            continue
        if kind not in SUPPORTED:
            raise Refused(f"plot.{name}.type {kind!r} is not supported here; one of {', '.join(SUPPORTED)}.",
                          field=f"plot.{name}.type")
        try:
            values = axis_values(kind, ", ".join(map(str, text)) if isinstance(text, list) else text)
        except ValueError as error:
            raise Refused(f"plot.{name}.values for {kind}: {error}.", field=f"plot.{name}.values") from None
        if kind == "Prompt S/R" and not any(values[0] in (base.get(f) or "") for f in ("prompt", "negative_prompt")):
            raise Refused(f"plot.{name}.values: Prompt S/R replaces its first value, {values[0]!r}, which neither "
                          "prompt holds.", field=f"plot.{name}.values")
        axes.append({"axis": name, "type": kind, "values": values})
    if not axes:
        raise Refused("An X/Y/Z plot needs at least one axis.", field="plot.x.type")
    return axes


def _plot_apply(axis: dict, cell: dict, value) -> dict:
    """A cell's params with one axis's value set."""
    name = FIELDS[axis["type"]][0]
    if axis["type"] == "Prompt S/R":
        search = axis["values"][0]
        return {**cell, **{f: (cell.get(f) or "").replace(search, value) for f in ("prompt", "negative_prompt")}}
    if axis["type"] == "Sampler":
        try:
            value = resolve_scheduler(value)
        except ValueError as error:
            raise Refused(f"plot.{axis['axis']}.values: {error}.", field=f"plot.{axis['axis']}.values") from None
    if axis["type"] in ("Seed", "Var. seed") and value == -1:
        value = random.SystemRandom().randint(0, MAX_SEED)
    if axis["type"] == "VAE" and value == "None":
        value = None
    return {**cell, name: value}
