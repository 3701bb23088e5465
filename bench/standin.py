"""A stand-in GPU for bench/throughput.py, behaving as a CUDA device's launch queue: the UNet's forward
*launches* BENCH_STANDIN_MS x samples^0.3 of work and returns at once (work runs after the work
launched before it; the host waits only when two steps are already queued, as a full launch queue
makes it), and the host waits for the queue to drain wherever the real code waits for a GPU: reading
the VAE's pictures, and each ancestral sampler step's noise (made on the CPU with the job's
generators and copied to the device with a blocking copy). The VAE's decode is twice a step's work;
the text encoder's forward a tenth of one (on a GPU it is GPU work; the tiny model's forward on
this CPU took ~47 ms a run under load, host time no GPU server spends); pictures and embeddings
are zeros and noise, as the test model's are (the pictures' noise made once per size: making it is
GPU work). Everything else (tokenizing and prompt weights, the queue, watermark, PNG, C2PA, storage,
the database, websockets, the web) is the studio's real code.
The seconds of work run are written to $SDWEB_VAR_DIR/standin-busy, which the benchmark reads for
its busy %. BENCH_TRACE=1 records where the queue ran dry (bench/trace_standin.py).

    python bench/standin.py up --port 8000        (manage.py's own arguments)
    python bench/standin.py celery -A sdweb worker --pool=prefork --concurrency=1    (celery's)
"""

import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

TRACE = os.environ.get("BENCH_TRACE")
if TRACE:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import trace_standin
QUEUED_STEPS = 2  # work a host may launch ahead before a launch waits
TEXT_ENCODER_SHARE = 0.1  # CLIP-L's forward over a run's prompts, as a share of one UNet step's work


class LaunchQueue:
    def __init__(self, busy_file: Path):
        self.lock, self.busy_file = threading.Lock(), busy_file
        self.free_at = self.busy = self.written = 0.0

    def launch(self, seconds: float) -> None:
        with self.lock:
            now = time.monotonic()
            if TRACE and self.free_at and now > self.free_at:
                trace_standin.GAPS.append((self.free_at, now))
            self.free_at = max(now, self.free_at) + seconds
            self.busy += seconds
            if now - self.written > 0.2:  # a file write is host time the real GPU doesn't cost
                self.busy_file.write_text(f"{self.busy:.6f}")
                self.written = now
            ahead = self.free_at - now - QUEUED_STEPS * seconds
        if ahead > 0:
            time.sleep(ahead)

    def synchronize(self) -> None:
        time.sleep(max(0.0, self.free_at - time.monotonic()))
        with self.lock:
            self.busy_file.write_text(f"{self.busy:.6f}")


def install(step_ms: float, busy_file: Path) -> None:
    import diffusers.schedulers.scheduling_euler_ancestral_discrete as euler_a
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.models.autoencoders.vae import DecoderOutput
    from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
    from diffusers.utils import torch_utils
    from transformers import CLIPTextModel
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    device = LaunchQueue(busy_file)
    if TRACE:
        from celery.signals import worker_process_init

        worker_process_init.connect(trace_standin.patch, weak=False)

    def unet(self, sample, *args, return_dict=True, **kwargs):
        device.launch(step_ms / 1000 * max(1, sample.shape[0] // 2) ** 0.3)  # CFG doubles the batch
        noise = torch.zeros_like(sample)
        return UNet2DConditionOutput(sample=noise) if return_dict else (noise,)

    def encode_text(self, input_ids, *args, output_hidden_states=None, **kwargs):
        device.launch(step_ms / 1000 * TEXT_ENCODER_SHARE * len(input_ids) ** 0.3)
        hidden = torch.zeros((*input_ids.shape, self.config.hidden_size))
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=hidden[:, 0], hidden_states=(
            (hidden,) * (self.config.num_hidden_layers + 1) if output_hidden_states else None))

    made = {}

    def decode(self, z, return_dict=True, generator=None):
        device.launch(2 * step_ms / 1000 * z.shape[0] ** 0.3)
        device.synchronize()  # the pipeline reads the pictures at once
        shape = (z.shape[0], 3, z.shape[2] * 8, z.shape[3] * 8)
        if shape not in made:  # the GPU's work (launched above), not the host's: made once per shape
            made[shape] = torch.rand(shape, generator=torch.Generator().manual_seed(shape[0])) * 2 - 1
        pictures = made[shape].clone()
        return DecoderOutput(sample=pictures) if return_dict else (pictures,)

    def step_noise(*args, randn=torch_utils.randn_tensor, **kwargs):
        noise = randn(*args, **kwargs)
        device.synchronize()  # a CPU generator's noise reaches the GPU through a blocking copy
        return noise

    UNet2DConditionModel.forward = unet
    CLIPTextModel.forward = encode_text
    AutoencoderKL.decode = decode
    euler_a.randn_tensor = torch_utils.randn_tensor = step_noise  # engine/noise.py calls the latter


def install_from_environment() -> None:
    install(float(os.environ.get("BENCH_STANDIN_MS", "25")), Path(os.environ["SDWEB_VAR_DIR"]) / "standin-busy")


if __name__ == "__mp_main__" and multiprocessing.current_process().name == "sdweb-worker":
    install_from_environment()  # manage.py up's worker process, spawned from this one

if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "sdweb.settings")
    if sys.argv[1] == "celery":  # a prefork pool process is forked from this one, the stand-in with it
        install_from_environment()
        from celery.__main__ import main

        sys.argv = sys.argv[1:]
        main()
    else:
        from django.core.management import execute_from_command_line

        execute_from_command_line(["manage.py", *sys.argv[1:]])
