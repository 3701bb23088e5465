"""Model loading benchmark: load time and peak memory of a single-file checkpoint of each family
(tiny models, LDM layout, loaded through the studio's own code), optionally a full-size random SD
1.5 file (~2 GB, float16), and the pipeline cache under a mixed-checkpoint queue.

Each load runs in a fresh process, with the libraries imported before the clock starts, so its
time and its peak resident memory (VmHWM, which exec resets) are the load's own.

    .venv/bin/python bench/models.py [--runs 3] [--full-size]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.engine.families import FAMILIES  # noqa: E402


def load_once(source: str, config: str, device: str | None) -> dict:
    """In this process: import, load, report (the parent runs this in a fresh child)."""
    import diffusers
    import torch

    from generation.engine.loading import PipelineCache
    from generation.engine.request import ModelRef
    from generation.engine.tokenizer import clip_tokenizer

    torch.set_num_threads(1)
    for family in FAMILIES.values():
        getattr(diffusers, family.pipeline)  # diffusers imports its pipelines on first use
    clip_tokenizer(), clip_tokenizer("!")
    before = peak_rss_mib()
    tick = time.perf_counter()
    loaded = PipelineCache(64 * 2**30).get(ModelRef(source, config=config), device=device)
    seconds = time.perf_counter() - tick
    return {"seconds": seconds, "peak_mib": peak_rss_mib(), "import_peak_mib": before,
            "weights_mib": loaded.size_bytes / 2**20}


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


def measure(source: Path, config: Path | str, runs: int, device: str | None) -> dict:
    results = []
    for _ in range(runs):
        out = subprocess.run([sys.executable, __file__, "--child", str(source), str(config), device or ""],
                             capture_output=True, text=True, check=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def mixed_queue(files: dict, order: list[str], budget_models: int) -> None:
    """A queue of jobs over three checkpoints with room for two: oldest-first versus taking,
    among equally fair jobs, one for a checkpoint already loaded (what job_claim does)."""
    from generation.engine.loading import PipelineCache
    from generation.engine.request import ModelRef

    refs = {f: ModelRef(str(files[f]["file"]), config=str(files[f]["config"])) for f in set(order)}
    probe = PipelineCache(64 * 2**30)
    sizes = sorted(probe.get(ref).size_bytes for ref in refs.values())
    budget = sum(sizes[-budget_models:]) + 2**20
    print(f"\nmixed queue: {len(order)} jobs over {len(refs)} checkpoints, cache budget {budget / 2**20:.0f} MiB "
          f"(room for {budget_models})")
    print(f"{'policy':<28}{'loads':>7}{'hits':>7}{'load s':>9}")
    for policy in ("oldest first", "prefer a loaded checkpoint"):
        cache, waiting = PipelineCache(budget), list(order)
        while waiting:
            resident = set(cache.resident_sources())
            pick = next((f for f in waiting if policy == "prefer a loaded checkpoint" and refs[f].source in resident),
                        waiting[0])
            waiting.remove(pick)
            cache.get(refs[pick])
        info = cache.info()
        print(f"{policy:<28}{info['misses']:>7}{info['hits']:>7}{info['load_seconds']:>9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--full-size", action="store_true", help="also a random full-size SD 1.5 file (~2 GB)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()

    from generation.engine.testmodel import make_full_size_file, make_tiny_family

    folder = Path(tempfile.mkdtemp())
    files = {family: make_tiny_family(family, folder) for family in FAMILIES}
    print(f"single-file load, fresh process each, median of {args.runs}; device {args.device or 'default'}")
    print(f"{'family':<26}{'file MiB':>9}{'load s':>8}{'peak RSS MiB':>14}{'before load':>13}")
    rows = [(f, files[f]["file"], files[f]["config"]) for f in FAMILIES]
    if args.full_size:
        rows.append(("sd1 full size (random)", make_full_size_file("sd1", folder / "random-sd15.safetensors"), ""))
    for name, file, config in rows:
        m = measure(file, config, 1 if "full" in name else args.runs, args.device)
        print(f"{name:<26}{file.stat().st_size / 2**20:>9.1f}{m['seconds']:>8.2f}{m['peak_mib']:>14.0f}"
              f"{m['import_peak_mib']:>13.0f}")
    order = ["sd1", "sdxl", "sd1", "sd2", "sdxl", "sd1", "sd2", "sd1", "sdxl", "sd2", "sd1", "sdxl"]
    mixed_queue(files, order, budget_models=2)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(load_once(sys.argv[2], sys.argv[3], sys.argv[4] or None)))
    else:
        main()
