"""GPU benchmark of the engine: seconds per image for SD 1.5 (512 px) and SDXL (1024 px), 30
steps, CFG on, eager and torch.compiled, at batch 1, 4 and 8; with --family, FLUX.1 [dev] (1024 px,
28 steps) or [schnell] (4 steps), or SD 3.5 Large (28 steps, CFG 3.5), Large Turbo (4, no CFG) or
Medium (40, CFG 4.5), or Z-Image Turbo (8, no CFG): seconds per image and peak GPU memory, in bfloat16 and with its transformer
stored in float8 (SDWEB_QUANTIZE=fp8), T5 on the GPU.

The models are the families' full-size architectures (the configs shipped in
generation/engine/configs) with random weights: they cost exactly what real ones cost. Each is
saved as a diffusers folder and loaded through the engine's normal path. Batch 1 is one job
through generate(); batch n is n users' one-image jobs (other prompts and CFG scales) through
generate_batch(), as the worker runs them. Previews are on, as in the studio. Rows run in order
of importance until --budget seconds have passed.

On a GPU machine, with that machine's own torch (never the project's pinned one):
    python bench/engine_gpu.py
    python bench/engine_gpu.py --family flux-dev      (or flux-schnell, sd35-large, sd35-large-turbo, sd35-medium,
                                                   zimage-turbo)
CPU smoke runs of the same code:
    .venv/bin/python bench/engine_gpu.py --device cpu --dtype float32 --families sd1 --sizes 256 --steps 2 \\
        --runs 1 --batches 1 2 --modes eager
    .venv/bin/python bench/engine_gpu.py --family flux-schnell --device cpu --dtype bfloat16 --sizes 256 --steps 2 \\
        --runs 1 --layers 1      (or --family sd35-medium, zimage-turbo)
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
from generation.engine.families import CONFIGS, FAMILIES  # noqa: E402
from generation.engine.loading import PIPELINES, LoadedModel, compile_unet  # noqa: E402
from generation.engine.parts import fit_memory  # noqa: E402
from generation.engine.previews import fitted_latent_rgb  # noqa: E402
from generation.engine.request import ModelRef  # noqa: E402
from generation.engine.testmodel import _byte_level_tokenizer  # noqa: E402
from generation.engine.testzimage import CHAT_TEMPLATE  # noqa: E402

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


def transformer_family(args) -> None:
    """FLUX.1 or SD 3.5 at full size, random weights, built in place on the device (a 16-24 GB file
    written and read back would cost minutes of device time and measure the disk), put in the
    engine's pipeline cache as a loaded file would be, and run through generate()."""
    import diffusers
    import transformers

    configs, family = CONFIGS / args.family, args.family
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    tick = time.perf_counter()
    index = json.loads((configs / "model_index.json").read_text())
    parts = {}
    with torch.device(args.device):
        torch.set_default_dtype(dtype)  # random init straight in the run's precision
        for part, (library, name) in ((k, v) for k, v in index.items() if not k.startswith("_")):
            if part.startswith("tokenizer"):
                parts[part] = _byte_level_tokenizer()  # ids only
                parts[part].chat_template = CHAT_TEMPLATE  # (Z-Image's reads the prompt as a chat)
            elif library == "diffusers":
                kind = getattr(diffusers, name)
                config = kind.load_config(configs / part)
                if args.layers and part == "transformer":  # a smoke run: the real widths, fewer layers
                    config |= {k: args.layers for k in ("num_layers", "num_single_layers", "n_layers", "n_refiner_layers")
                               if k in config}
                    if "dual_attention_layers" in config:
                        config["dual_attention_layers"] = [k for k in config["dual_attention_layers"] if k < args.layers]
                parts[part] = kind.from_config(config)
            else:
                kind = getattr(transformers, name)
                config = kind.config_class.from_pretrained(configs / part)
                if args.layers and name in ("T5EncoderModel", "Qwen3Model"):
                    config.num_hidden_layers = args.layers
                parts[part] = kind(config)
        torch.set_default_dtype(torch.float32)
    pipe = getattr(diffusers, index["_class_name"])(**parts)
    pipe.set_progress_bar_config(disable=True)
    ref = ModelRef(f"random {family}", family=family)
    device = torch.device(args.device)
    PIPELINES._models[PIPELINES.key(ref, device, dtype)] = LoadedModel(
        pipe=pipe, name=family, hash="random", family=family, vae_config=str(configs), device=device, dtype=dtype,
        size_bytes=0, load_seconds=0, latent_rgb=fitted_latent_rgb(pipe.vae))
    print(f"{family}: built in {time.perf_counter() - tick:.1f} s", flush=True)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    size, steps = args.sizes[0], args.steps or FAMILIES[family].steps
    rows = []
    for quantize in ("none", "fp8"):
        if quantize == "fp8":
            fit_memory(pipe, dtype, "fp8")
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

        def run(k) -> float:
            request = GenerationRequest(prompt=PROMPTS[k % 4], model=ref, width=size, height=size, steps=steps,
                                        scheduler="Euler", seed=k, guidance_scale=FAMILIES[family].guidance)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            tick = time.perf_counter()
            generate(request, on_preview=lambda *a: None, preview=PreviewSettings(), device=args.device, dtype=dtype)
            return time.perf_counter() - tick

        warmup = run(0)
        seconds = statistics.median(run(k) for k in range(1, args.runs + 1))
        peak = torch.cuda.max_memory_allocated() / 2**30 if args.device.startswith("cuda") else float("nan")
        rows.append(dict(family=family, quantize=quantize, size=size, steps=steps, s_per_image=seconds,
                         first_run_s=warmup, peak_gib=peak))
        print(f"  {family} {quantize}: {seconds:.3f} s/image, peak {peak:.1f} GiB (first run {warmup:.1f} s)",
              flush=True)
    print(f"\n{name}: {family} {size}px, {steps} steps, Euler, {args.dtype}, previews on, median of {args.runs} runs")
    print(f"{'weights':10}{'s/image':>10}{'peak GiB':>10}{'first run s':>13}")
    for r in rows:
        print(f"{r['quantize']:10}{r['s_per_image']:>10.3f}{r['peak_gib']:>10.1f}{r['first_run_s']:>13.1f}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], f"engine_gpu_{family}.json").write_text(json.dumps(dict(device=name, rows=rows)))


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
    parser.add_argument("--family", choices=[name for name, family in FAMILIES.items() if family.transformer],
                        help="FLUX.1 or SD 3.5 instead (see above)")
    parser.add_argument("--layers", type=int, default=0, help="FLUX.1, SD 3.5, Z-Image smoke runs: this many layers of each kind")
    args = parser.parse_args()
    if args.family:
        args.dtype = "bfloat16" if args.dtype == "float16" else args.dtype
        args.sizes = args.sizes if args.sizes != [512, 1024] else [1024]
        args.steps = args.steps if "--steps" in sys.argv else 0
        return transformer_family(args)
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
