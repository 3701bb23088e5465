"""Engine benchmark on the built-in test model (CPU or GPU, whatever this machine has).

Raw diffusers `pipe(...)` versus `generate(...)` with previews at the default throttle and a
watermark, alternating in one process with the same seeds; then the cost of one preview, one
watermark and one PNG encode at 256 and 512 px.

    .venv/bin/python bench/engine.py [--runs 21]
"""

import argparse
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generation.engine import (  # noqa: E402
    GenerationRequest,
    PreviewSettings,
    embed_watermark,
    generate,
    load_pipeline,
    make_test_model,
    save_png,
)
from generation.engine.previews import encode_preview, latents_to_rgb  # noqa: E402
from generation.engine.schedulers import make_scheduler  # noqa: E402

PROMPT = "a lighthouse on a cliff at dusk, (dramatic sky:1.2), oil painting"


def median_seconds(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    folder = str(make_test_model(Path(tempfile.mkdtemp()) / "tiny"))
    loaded = load_pipeline(folder)
    from diffusers import StableDiffusionPipeline

    raw = StableDiffusionPipeline(**loaded.pipe.components, requires_safety_checker=False)
    raw.set_progress_bar_config(disable=True)
    print(f"device {loaded.device}, dtype {loaded.dtype}, torch threads {torch.get_num_threads()}")

    def run_raw(seed):
        raw.scheduler = make_scheduler("Euler a", loaded.pipe.scheduler.config, [seed])
        return raw(PROMPT, width=256, height=256, num_inference_steps=args.steps, guidance_scale=7.0,
                   generator=torch.Generator("cpu").manual_seed(seed)).images[0]

    previews = []

    def run_ours(seed):
        request = GenerationRequest(prompt=PROMPT, model=folder, width=256, height=256, steps=args.steps,
                                    guidance_scale=7.0, scheduler="Euler a", seed=seed)
        return generate(request, on_preview=lambda *a: previews.append(a), watermark_payloads=[b"benchmrk"],
                        preview=PreviewSettings(), checker=None)

    for seed in (1, 2):  # warm-up
        run_raw(seed), run_ours(seed)
    raw_times, our_times, splits = [], [], []
    for i in range(args.runs):
        seed = 1000 + i
        for name, fn in (("raw", run_raw), ("ours", run_ours)) if i % 2 == 0 else (("ours", run_ours), ("raw", run_raw)):
            tick = time.perf_counter()
            result = fn(seed)
            (raw_times if name == "raw" else our_times).append(time.perf_counter() - tick)
            if name == "ours":
                splits.append(result.timings)
    raw_median, our_median = statistics.median(raw_times), statistics.median(our_times)
    print(f"\n256x256, {args.steps} steps, Euler a, 1 image, {args.runs} alternating runs each")
    print(f"{'':34}{'median s':>10}")
    print(f"{'raw pipe(...)':34}{raw_median:>10.3f}")
    print(f"{'generate(...) + previews + wm':34}{our_median:>10.3f}")
    print(f"{'ratio generate / raw':34}{our_median / raw_median:>10.3f}   (goal <= 1.05)")
    print(f"previews per run at the default throttle: {len(previews) / (args.runs + 2):.1f}")
    print("generate() split, median s: " + ", ".join(
        f"{k} {statistics.median(s[k] for s in splits):.4f}" for k in ("text_encode", "denoise", "decode", "watermark")))

    print(f"\n{'unit cost, median ms':28}{'256 px':>10}{'512 px':>10}")
    settings = PreviewSettings()
    rows = {"preview (approx + JPEG)": [], "watermark (luma tile)": [], "PNG encode + parameters": []}
    for size in (256, 512):
        latents = torch.randn(1, 4, size // 8, size // 8)
        rows["preview (approx + JPEG)"].append(median_seconds(lambda: encode_preview(latents_to_rgb(latents), settings), 200))
        image = run_ours(7).images[0].resize((size, size))
        rows["watermark (luma tile)"].append(median_seconds(lambda: embed_watermark(image, b"benchmrk"), 20))
        rows["PNG encode + parameters"].append(median_seconds(lambda: save_png(image, io.BytesIO(), PROMPT), 20))
    for name, (small, large) in rows.items():
        print(f"{name:28}{small * 1000:>10.2f}{large * 1000:>10.2f}")


if __name__ == "__main__":
    main()
