"""GPU benchmark of the engine: seconds per image for SD 1.5 (512 px) and SDXL (1024 px), 30
steps, CFG on, eager and torch.compiled, at batch 1, 4 and 8.

The models are the families' full-size architectures (the configs shipped in
generation/engine/configs) with random weights: they cost exactly what real ones cost. Each is
saved as a diffusers folder and loaded through the engine's normal path. Batch 1 is one job
through generate(); batch n is n users' one-image jobs (other prompts and CFG scales) through
generate_batch(), as the worker runs them. Previews are on, as in the studio. Rows run in order
of importance until --budget seconds have passed.

On a GPU machine, with that machine's own torch (never the project's pinned one):
    python bench/engine_gpu.py
CPU smoke run of the same code:
    .venv/bin/python bench/engine_gpu.py --device cpu --dtype float32 --families sd1 --sizes 256 --steps 2 \\
        --runs 1 --batches 1 2 --modes eager
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.engine import GenerationRequest, PreviewSettings, generate, load_pipeline  # noqa: E402
from generation.engine.batch import generate_batch  # noqa: E402
from generation.engine.families import CONFIGS  # noqa: E402
from generation.engine.loading import compile_unet  # noqa: E402
from generation.engine.testmodel import _byte_level_tokenizer  # noqa: E402

PROMPTS = ["a lighthouse on a cliff at dusk, oil painting", "a red fox in fresh snow", "portrait of a fisherman",
           "a busy market street in the rain, neon signs"]


def build_random(family: str, folder: Path, device: str = "cpu") -> None:
    """A diffusers folder of `family`'s architecture with random weights, in float16."""
    import diffusers
    import transformers

    configs = CONFIGS / family
    index = json.loads((configs / "model_index.json").read_text())
    parts = {}
    with torch.device(device):  # random init on the GPU takes seconds, not minutes
        for name, spec in index.items():
            if name.startswith("_") or not isinstance(spec, list):
                continue
            library, class_name = spec
            if library is None:
                parts[name] = None  # a safety checker, an image encoder: none
            elif name.startswith("tokenizer"):
                parts[name] = _byte_level_tokenizer()  # ids only: the encoder costs the same for 77 tokens
            elif library == "transformers":
                cls = getattr(transformers, class_name)
                parts[name] = cls(cls.config_class.from_pretrained(configs / name))
            elif name == "scheduler":
                parts[name] = getattr(diffusers, class_name).from_pretrained(configs / name)
            else:
                cls = getattr(diffusers, class_name)
                parts[name] = cls.from_config(cls.load_config(configs / name))
    cls = getattr(diffusers, index["_class_name"])
    pipe = cls(**parts, **({"requires_safety_checker": False} if "safety_checker" in parts else {}))
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def build_sd15(folder: Path) -> None:
    build_random("sd1", folder, "cuda" if torch.cuda.is_available() else "cpu")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--families", nargs="+", default=["sd1", "sdxl"])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024], help="one per family")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--modes", nargs="+", default=["eager", "compiled"])
    parser.add_argument("--budget", type=float, default=1e9, help="seconds: rows not started by then are skipped")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget

    models = {}
    for family in args.families:
        folder = Path(tempfile.mkdtemp()) / family
        tick = time.perf_counter()
        build_random(family, folder, args.device)
        loaded = load_pipeline(str(folder), device=args.device, dtype=args.dtype)
        models[family] = (folder, loaded)
        print(f"{family}: built and loaded in {time.perf_counter() - tick:.1f} s", flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    attention = {type(p).__name__ for p in loaded.pipe.unet.attn_processors.values()}
    print(f"{name}, torch {torch.__version__}, {args.dtype}, attention {', '.join(attention)}", flush=True)

    def run(family, size, batch) -> float:
        folder, _ = models[family]
        requests = [GenerationRequest(prompt=PROMPTS[k % 4], model=str(folder), width=size, height=size,
                                      steps=args.steps, guidance_scale=5 + k % 4, scheduler="Euler a", seed=k)
                    for k in range(batch)]
        options = dict(on_preview=lambda *a: None, preview=PreviewSettings(), device=args.device, dtype=args.dtype)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        tick = time.perf_counter()
        results = [generate(requests[0], **options)] if batch == 1 else generate_batch(requests, **options)
        assert all(len(r.images) == 1 for r in results), results
        return time.perf_counter() - tick

    rows = []
    order = [(mode, family) for mode in args.modes for family in args.families]
    for mode, family in order:
        size = args.sizes[args.families.index(family)]
        if mode == "compiled":
            compile_unet(models[family][1])
        for batch in args.batches:
            if time.monotonic() > deadline:
                print(f"  {mode} {family} batch {batch}: skipped (past --budget)", flush=True)
                continue
            warmup = run(family, size, batch)  # (and the compilation)
            seconds = [run(family, size, batch) for _ in range(args.runs)]
            rows.append(dict(mode=mode, family=family, size=size, batch=batch, warmup_s=warmup,
                             per_image_s=statistics.median(seconds) / batch))
            print(f"  {mode} {family} {size}px batch {batch}: {rows[-1]['per_image_s']:.3f} s/image "
                  f"(first run {warmup:.1f} s)", flush=True)
        if args.device.startswith("cuda"):
            print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)

    print(f"\n{name}: {args.steps} steps, Euler a, CFG on, {args.dtype}, previews on, median of {args.runs} runs")
    print(f"{'mode':10}{'family':8}{'size':>6}{'batch':>6}{'s/image':>10}{'images/s':>10}{'first run s':>13}")
    for r in rows:
        print(f"{r['mode']:10}{r['family']:8}{r['size']:>6}{r['batch']:>6}{r['per_image_s']:>10.3f}"
              f"{1 / r['per_image_s']:>10.2f}{r['warmup_s']:>13.1f}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "engine_gpu.json").write_text(json.dumps(dict(device=name, rows=rows), indent=1))


if __name__ == "__main__":
    main()
