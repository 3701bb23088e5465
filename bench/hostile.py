"""Hostile uploads: what the worst file each check still lets through costs, and what refusing the
files beyond it costs, in CPU seconds and peak memory, each in a fresh process (median of --repeats).

    .venv/bin/python bench/hostile.py [--repeats 3]
"""

import argparse
import io
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdweb.settings")
    os.environ.setdefault("SDWEB_VAR_DIR", "/tmp/sdweb-bench-hostile")
    import django

    django.setup()


def progressive(scans_extra: int, noise: bool) -> bytes:
    import numpy as np
    from PIL import Image

    from tests.support import scan_bomb

    if not noise:
        return scan_bomb(scans_extra)
    out = io.BytesIO()  # busy pixels: every scan of Pillow's 10 carries data
    pixels = np.random.default_rng(0).integers(0, 256, (4096, 4096, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(out, "JPEG", progressive=True, quality=95)
    return out.getvalue()


def safetensors(tensors: int, pad: int) -> Path:
    header = {f"t{k}": {"dtype": "F32", "shape": [1], "data_offsets": [4 * k, 4 * k + 4]} for k in range(tensors)}
    header["__metadata__"] = {"pad": "x" * pad}
    text = json.dumps(header).encode()
    path = Path(f"/tmp/sdweb-bench-hostile/{tensors}-{pad}.safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(len(text).to_bytes(8, "little") + text + bytes(4 * tensors))
    return path


CASES = {
    "decode: 16 Mpx progressive JPEG, busy pixels (10 scans, allowed)": ("decode", (0, True)),
    "decode: 16 Mpx progressive JPEG, 100 scans (the most allowed)": ("decode", (90, False)),
    "refuse: 16 Mpx progressive JPEG, 570 000 scans (the tester's)": ("decode", (570_000, False)),
    "control map: 2048x4096 lineart at processor_res 2048 (allowed)": ("map", ((2048, 4096), 2048)),
    "control map: 1024x16384 lineart at processor_res 2048 (allowed)": ("map", ((1024, 16384), 2048)),
    "add-on header: 20 000 tensors (the most allowed)": ("header", (20_000, 0)),
    "add-on header: 16 MB of metadata (the most allowed)": ("header", (1, 16 * 2**20 - 200)),
    "refuse: add-on header of 1.2 M tensors (the tester's, 80 MB)": ("header", (1_200_000, 0)),
}


def measure(kind: str, args, queue):
    _setup()
    from PIL import Image

    from generation.engine.controlmaps import control_map
    from generation.engine.families import read_header
    from generation.untrusted_images import read_image

    if kind == "decode":
        subject = progressive(*args)
    elif kind == "map":
        size, res = args
        subject = Image.linear_gradient("L").resize(size).convert("RGB")
    else:
        subject = safetensors(*args)
    with open("/proc/self/clear_refs", "w") as reset:
        reset.write("5")
    held = _peak()
    started = time.process_time()
    try:
        if kind == "decode":
            read_image(subject, field="image")
        elif kind == "map":
            control_map(subject, "lineart_standard", res)
        else:
            read_header(subject)
        outcome = "accepted"
    except ValueError as error:
        outcome = "refused: " + str(error)[:60]
    queue.put((time.process_time() - started, _peak() - held, outcome))


def _peak() -> float:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = {name: [] for name in CASES}
    for _ in range(options.repeats):  # interleaved: each case once per round
        for name, (kind, args) in CASES.items():
            queue = context.Queue()
            process = context.Process(target=measure, args=(kind, args, queue))
            process.start()
            results[name].append(queue.get())
            process.join()
    print(f"{'case':66} {'CPU s':>7} {'peak MB':>8}  outcome")
    for name, rows in results.items():
        cpu, peak = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"{name:66} {cpu:7.3f} {peak:8.0f}  {rows[0][2]}")


if __name__ == "__main__":
    main()
