"""A stand-in GPU for bench/throughput.py. The UNet's forward sleeps BENCH_STANDIN_MS x samples^0.3
a step and the VAE's decode twice that (a sleep releases the GIL, as a CUDA launch queue does), so
the GPU's share of a run is fixed and known; the decode's pictures are noise, as the test model's
are. Everything else (text encoding, the queue, watermark, PNG, C2PA, storage, the database,
websockets, the web) is the studio's real code. The seconds the stand-in "computed" are written to
$SDWEB_VAR_DIR/standin-busy, which the benchmark reads for its busy %.

    python bench/standin.py up --port 8000        (manage.py's own arguments)
    python bench/standin.py celery -A sdweb worker --pool=prefork --concurrency=1    (celery's)
"""

import os
import sys
import threading
import time
from pathlib import Path


def install(step_ms: float, busy_file: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.autoencoders.vae import DecoderOutput
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    lock, busy = threading.Lock(), [0.0]

    def compute(seconds: float) -> None:
        time.sleep(seconds)
        with lock:
            busy[0] += seconds
            busy_file.write_text(f"{busy[0]:.6f}")

    def unet(self, sample, *args, return_dict=True, **kwargs):
        compute(step_ms / 1000 * max(1, sample.shape[0] // 2) ** 0.3)  # CFG doubles the batch
        noise = torch.zeros_like(sample)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    def decode(self, z, return_dict=True, generator=None):
        compute(2 * step_ms / 1000 * z.shape[0] ** 0.3)
        pictures = torch.rand((z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8), generator=torch.Generator().manual_seed(
            int(z.shape[0]))) * 2 - 1
        return DecoderOutput(sample=pictures) if return_dict else (pictures,)

    UNet2DConditionModel.forward = unet
    AutoencoderKL.decode = decode


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdweb.settings")
    install(float(os.environ.get("BENCH_STANDIN_MS", "25")), Path(os.environ["SDWEB_VAR_DIR"]) / "standin-busy")
    if sys.argv[1] == "celery":  # a prefork pool process is forked from this one, the stand-in with it
        from celery.__main__ import main

        sys.argv = sys.argv[1:]
        main()
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", *sys.argv[1:]])
