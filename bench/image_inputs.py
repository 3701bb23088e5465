"""Starting from an image, on the tiny test model: seconds per image of txt2img, img2img,
inpaint (each masked content, and "only masked"), hires fix and an upscale, measured side by side
in one run (medians of --runs), with what each spends beyond denoising (the pixel work around
inpainting: resize, fill, paste-back). One torch thread, as a studio worker on this machine.

    .venv/bin/python bench/image_inputs.py [--runs 5] [--size 512]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import torch
    from PIL import Image, ImageDraw, ImageFilter

    from generation.engine import GenerationRequest, generate, make_test_model
    from generation.engine.images import fill_masked, paste_back, prepared_mask, resize
    from generation.engine.upscale import upscale

    torch.set_num_threads(1)
    size, steps = args.size, args.steps
    model = str(make_test_model(Path(tempfile.mkdtemp()) / "tiny"))
    picture = Image.effect_noise((size, size), 60).convert("RGB").filter(ImageFilter.GaussianBlur(3))
    mask = Image.new("L", picture.size, 0)
    ImageDraw.Draw(mask).ellipse((size // 4, size // 4, size * 3 // 4, size * 3 // 4), fill=255)
    base = {"prompt": "a red door in a white wall", "model": model, "width": size, "height": size, "steps": steps,
            "seed": 3, "scheduler": "Euler a"}
    cases = {
        "txt2img": {},
        "img2img, strength 0.75": {"init_image": picture},
        "inpaint, original": {"init_image": picture, "mask": mask},
        "inpaint, fill": {"init_image": picture, "mask": mask, "inpainting_fill": 0},
        "inpaint, latent noise": {"init_image": picture, "mask": mask, "inpainting_fill": 2},
        "inpaint, only masked": {"init_image": picture, "mask": mask, "inpaint_full_res": True},
        "hires fix x1.5, Latent": {"enable_hr": True, "hr_scale": 1.5},
        "hires fix x1.5, Lanczos": {"enable_hr": True, "hr_scale": 1.5, "hr_upscaler": "Lanczos"},
    }
    generate(GenerationRequest(**{**base, "steps": 2}))  # load the model once, outside the clock
    times = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fields in cases.items():  # interleaved, so drift on this machine hits every case alike
            request = GenerationRequest(**{**base, **fields})
            tick = time.perf_counter()
            result = generate(request, watermark_payloads=[b"benchmrk"])
            times[name].append(time.perf_counter() - tick)
    pixel_work = []
    for _ in range(args.runs):
        tick = time.perf_counter()
        hard, blurred = prepared_mask(mask, False, 4)
        fill_masked(resize(picture, size, size, 1), hard)
        paste_back(picture, result.images[0].resize(picture.size), blurred, None)
        pixel_work.append(time.perf_counter() - tick)
    upscales = []
    for _ in range(args.runs):
        tick = time.perf_counter()
        upscale(picture, scale=2, upscaler="Lanczos", parameters="x", seed=1, watermark_payload=b"benchmrk")
        upscales.append(time.perf_counter() - tick)

    reference = statistics.median(times["txt2img"])
    print(f"tiny test model, {size} px, {steps} steps, 1 torch thread, median of {args.runs} (watermark included)")
    print(f"{'mode':<28}{'seconds':>9}{'vs txt2img':>12}{'steps run':>11}")
    for name, fields in cases.items():
        median = statistics.median(times[name])
        request = GenerationRequest(**{**base, **fields})
        print(f"{name:<28}{median:>9.2f}{median / reference:>11.2f}x{sum(p[2] for p in request.passes()):>11}")
    print(f"inpaint pixel work (mask blur, fill, paste-back) at {size} px: {statistics.median(pixel_work) * 1000:.0f} ms")
    print(f"upscale x2 Lanczos + watermark, {size} -> {size * 2} px: {statistics.median(upscales) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
