"""A stand-in GPU for bench/throughput.py: the UNet's forward sleeps BENCH_STANDIN_MS x samples^0.3
(a sleep releases the GIL, as a CUDA launch queue does) and returns zeros, so the denoiser's time is
fixed and known; everything else (text encoding, VAE decode, watermark, PNG, C2PA, storage, the
database, websockets, the web) is the studio's real code. The seconds it "computed" are written to
$SDWEB_VAR_DIR/standin-busy, which the benchmark reads for the stand-in's busy %.

    python bench/standin.py up --port 8000        (manage.py's own arguments)
"""

import os
import sys
import threading
import time
from pathlib import Path


def install(step_ms: float, busy_file: Path) -> None:
    import torch
    from diffusers import UNet2DConditionModel

    lock, busy = threading.Lock(), [0.0]

    def forward(self, sample, *args, return_dict=True, **kwargs):
        seconds = step_ms / 1000 * max(1, sample.shape[0] // 2) ** 0.3  # CFG doubles the batch
        time.sleep(seconds)
        with lock:
            busy[0] += seconds
            busy_file.write_text(f"{busy[0]:.6f}")
        noise = torch.zeros_like(sample)
        return (noise,) if not return_dict else UNet2DConditionModel.forward.__wrapped_output__(sample=noise)

    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

    UNet2DConditionModel.forward.__wrapped_output__ = UNet2DConditionOutput
    UNet2DConditionModel.forward = forward


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdweb.settings")
    install(float(os.environ.get("BENCH_STANDIN_MS", "25")), Path(os.environ["SDWEB_VAR_DIR"]) / "standin-busy")
    from django.core.management import execute_from_command_line

    execute_from_command_line(["manage.py", *sys.argv[1:]])
