"""GPU benchmark: full-size SD 1.5 architecture with random weights (they cost exactly what real
ones cost), 512x512, 30 steps, guidance on, fp16 with PyTorch SDPA attention.

Prints seconds per image at batch 1 and 4, with and without previews, eager and with
torch.compile, and the text-encode / denoise / decode split. It needs no weights and no internet:
the UNet, VAE and CLIP text encoder are built from SD 1.5's published configs, saved as a diffusers
folder and loaded through the engine's normal path.

On a GPU machine, with that machine's own torch (never the project's pinned one):
    python bench/engine_gpu.py
Carry the packages it lacks there as wheels (diffusers, invisible-watermark, PyWavelets, ...).
CPU smoke run of the same code:
    .venv/bin/python bench/engine_gpu.py --device cpu --dtype float32 --size 256 --steps 2 --runs 1 --batches 1 --no-compile
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
from generation.engine.testmodel import _byte_level_tokenizer  # noqa: E402

# Stable Diffusion 1.5's published architecture (the configs shipped with its weights).
UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=768,
    attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
)
VAE = dict(
    sample_size=512, in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)
CLIP_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
    max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
)
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                 set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")


def build_sd15(folder: Path) -> None:
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _byte_level_tokenizer()  # token ids only; the encoder's cost is the same for 77 tokens
    pipe = StableDiffusionPipeline(
        unet=UNet2DConditionModel(**UNET), vae=AutoencoderKL(**VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**CLIP_TEXT, bos_token_id=tokenizer.bos_token_id,
                                                  eos_token_id=tokenizer.eos_token_id,
                                                  pad_token_id=tokenizer.pad_token_id)),
        tokenizer=tokenizer, scheduler=DDIMScheduler(**SCHEDULER),
        safety_checker=None, feature_extractor=None, image_encoder=None, requires_safety_checker=False,
    )
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--no-compile", action="store_true")
    args = parser.parse_args()

    folder = Path(tempfile.mkdtemp()) / "sd15-random"
    tick = time.perf_counter()
    build_sd15(folder)
    print(f"built SD 1.5 architecture with random weights in {time.perf_counter() - tick:.1f} s")
    loaded = load_pipeline(str(folder), device=args.device, dtype=args.dtype)
    name = torch.cuda.get_device_name() if loaded.device.type == "cuda" else "CPU"
    attention = {type(p).__name__ for p in loaded.pipe.unet.attn_processors.values()}
    print(f"{name}, torch {torch.__version__}, {loaded.dtype}, attention {', '.join(attention)}, "
          f"load {loaded.load_seconds:.1f} s")

    def run(batch: int, previews: bool) -> dict:
        request = GenerationRequest(prompt="a lighthouse on a cliff at dusk, oil painting", model=str(folder),
                                    width=args.size, height=args.size, steps=args.steps, guidance_scale=7.5,
                                    scheduler="Euler a", seed=1, num_images=batch)
        if loaded.device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        result = generate(request, on_preview=(lambda *a: None) if previews else None,
                          preview=PreviewSettings(), checker=None, device=args.device, dtype=args.dtype)
        return dict(result.timings, wall=time.perf_counter() - tick)

    rows = []
    modes = ["eager"] + ([] if args.no_compile else ["compiled"])
    for mode in modes:
        if mode == "compiled":
            loaded.pipe.unet.to(memory_format=torch.channels_last)
            loaded.pipe.unet = torch.compile(loaded.pipe.unet)
        for batch in args.batches:
            for previews in (False, True):
                tick = time.perf_counter()
                run(batch, previews)  # warm-up (and compilation)
                warmup = time.perf_counter() - tick
                timings = [run(batch, previews) for _ in range(args.runs)]
                median = {k: statistics.median(t[k] for t in timings) for k in timings[0]}
                rows.append(dict(mode=mode, batch=batch, previews=previews, warmup_s=warmup,
                                 per_image_s=median["wall"] / batch,
                                 **{k: median[k] for k in ("text_encode", "denoise", "decode")}))
                print(f"  {mode} batch {batch} previews {previews}: {median['wall'] / batch:.3f} s/image", flush=True)

    print(f"\n{name}: SD 1.5 architecture, {args.size}x{args.size}, {args.steps} steps, CFG 7.5, {loaded.dtype}, "
          f"median of {args.runs} runs")
    print(f"{'mode':10}{'batch':>6}{'previews':>10}{'s/image':>10}{'text enc s':>12}{'denoise s':>11}{'decode s':>10}")
    for r in rows:
        print(f"{r['mode']:10}{r['batch']:>6}{'on' if r['previews'] else 'off':>10}{r['per_image_s']:>10.3f}"
              f"{r['text_encode']:>12.4f}{r['denoise']:>11.3f}{r['decode']:>10.3f}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "engine_gpu.json").write_text(json.dumps(dict(device=name, rows=rows), indent=1))


if __name__ == "__main__":
    main()
