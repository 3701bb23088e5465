"""An ESRGAN-size upscaler (RRDBNet, 23 blocks of 64 features: 16.7 M parameters, as ESRGAN x4 and
4x-UltraSharp) on this machine: seconds per picture for 256 -> 1024, median of --repeats, the
worker's own code path (tiles, then the exact size). Random weights: the time is the same.

    .venv/bin/python bench/upscaler.py [--repeats 3] [--threads 2] [--device cpu]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import torch
    from PIL import Image

    from generation.engine import esrgan
    from tests.support import esrgan_state

    torch.set_num_threads(args.threads)
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    net = esrgan.build(esrgan_state(features=64, growth=32, blocks=23, ups=2), "bench").to(args.device, dtype)
    picture = Image.effect_noise((256, 256), 50).convert("RGB")
    esrgan.esrgan_upscale(net, picture, (1024, 1024))  # warm-up
    seconds = []
    for _ in range(args.repeats):
        started = time.perf_counter()
        esrgan.esrgan_upscale(net, picture, (1024, 1024))
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
    params = sum(p.numel() for p in net.parameters())
    print(f"RRDBNet {params / 1e6:.1f} M parameters, 256 -> 1024 on {args.device} ({args.threads} threads): "
          f"median {statistics.median(seconds):.2f} s of {[round(s, 2) for s in seconds]}")


if __name__ == "__main__":
    main()
