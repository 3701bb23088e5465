"""What add-ons cost a job, on the tiny test model (and with --full, LoRA merging on full-size
SD 1.5 modules, random weights): applying and removing one and three LoRAs (merged into the
weights, then the saved weights copied back) next to the generation time; the same LoRAs left
unmerged as adapters (an extra low-rank product in every targeted layer at every step, as PEFT's
unfused adapters run) to show why merging was chosen; an embedding and a ControlNet unit.
Medians of --runs, measured side by side in one run; one torch thread, as a studio worker here.

    .venv/bin/python bench/addons.py [--runs 5] [--size 512] [--steps 20] [--full]
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
    parser.add_argument("--full", action="store_true", help="also merge LoRAs into full-size SD 1.5 modules")
    args = parser.parse_args()

    import torch
    from PIL import Image, ImageDraw

    from generation.engine import GenerationRequest, generate, make_test_model
    from generation.engine.addons import applied_loras, load_addon
    from generation.engine.loading import load_pipeline
    from generation.engine.request import ControlUnit, LoraUse, ModelRef
    from generation.engine.testmodel import make_tiny_addons

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp())
    model = str(make_test_model(folder / "tiny"))
    pipe = load_pipeline(model).pipe
    files = make_tiny_addons(pipe, folder / "addons")
    lora_ref = ModelRef(str(files["lora"]), name="tiny", hash="0")
    loras = [(load_addon("lora", ModelRef(str(files["lora"]), name=f"tiny-{k}"), "cpu", torch.float32),
              LoraUse(ModelRef(str(files["lora"]), name=f"tiny-{k}"), 0.4, 0.4)) for k in range(3)]
    control = Image.new("RGB", (args.size, args.size), "white")
    ImageDraw.Draw(control).rectangle((args.size // 4,) * 2 + (args.size * 3 // 4,) * 2, fill="black")
    base = {"prompt": "a red door in a white wall", "model": model, "width": args.size, "height": args.size,
            "steps": args.steps, "seed": 3, "scheduler": "Euler a"}
    cases = {
        "plain": {},
        "1 LoRA (merged)": {"prompt": base["prompt"] + " <lora:tiny:0.8>", "loras": (LoraUse(lora_ref, 0.8, 0.8),)},
        "3 LoRAs (merged)": {"prompt": base["prompt"] + " <lora:a:0.4> <lora:b:0.4> <lora:c:0.4>",
                             "loras": tuple(LoraUse(ModelRef(str(files["lora"]), name=n, hash="0"), 0.4, 0.4)
                                            for n in "abc")},
        "negative embedding": {"negative_prompt": "tinyneg", "embeddings": (
            ModelRef(str(files["embedding"]), name="tinyneg", hash="0"),)},
        "ControlNet unit (canny)": {"controlnets": (ControlUnit(ModelRef(
            str(files["controlnet"]), name="c", hash="0", family="sd1", config=str(files["controlnet_config"])),
            control, module="canny"),)},
    }
    for fields in cases.values():  # every file read once into the cache, outside the clock
        generate(GenerationRequest(**{**base, **fields, "steps": 1}))
    times = {name: [] for name in [*cases, "3 LoRAs as unmerged adapters"]}
    addon_seconds = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, fields in cases.items():  # interleaved: drift on this machine hits every case alike
            tick = time.perf_counter()
            result = generate(GenerationRequest(**{**base, **fields}))
            times[name].append(time.perf_counter() - tick)
            addon_seconds[name].append(result.timings["addons"])
        with unmerged(pipe, loras):
            tick = time.perf_counter()
            generate(GenerationRequest(**base))
            times["3 LoRAs as unmerged adapters"].append(time.perf_counter() - tick)
    apply_remove = {n: [] for n in (1, 3)}
    for _ in range(args.runs * 4):
        for n in (1, 3):
            tick = time.perf_counter()
            with applied_loras(pipe, loras[:n]):
                pass
            apply_remove[n].append(time.perf_counter() - tick)

    plain = statistics.median(times["plain"])
    print(f"tiny test model, {args.size} px, {args.steps} steps, 1 torch thread, median of {args.runs}")
    print(f"{'job':<32}{'seconds':>9}{'vs plain':>10}")
    for name, values in times.items():
        print(f"{name:<32}{statistics.median(values):>9.2f}{statistics.median(values) / plain:>9.2f}x")
    for n in (1, 3):
        cost = statistics.median(apply_remove[n])
        print(f"apply + remove {n} LoRA(s), tiny: {cost * 1000:.1f} ms = {cost / plain * 100:.2f}% of the plain job")
    if args.full:
        full_size(args.runs, applied_loras, load_addon, LoraUse, ModelRef, folder)


class unmerged:
    """The LoRAs as adapters: every targeted layer adds weight * (x @ down.T) @ up.T at every call."""

    def __init__(self, pipe, loras):
        from generation.engine.addons import _lora_targets

        self.hooks, targets = [], _lora_targets(pipe)
        for lora, use in loras:
            for base, (down, up, alpha) in lora.value.items():
                module, in_unet = targets[base]
                scale = (use.unet if in_unet else use.te) * alpha / down.shape[0]
                self.hooks.append(module.register_forward_hook(
                    lambda m, args, out, d=down, u=up, s=scale: out + s * (args[0] @ d.T) @ u.T))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()


def full_size(runs, applied_loras, load_addon, LoraUse, ModelRef, folder):
    """Rank-16 Kohya LoRAs over every attention projection of full-size SD 1.5 (UNet and CLIP-L)."""
    import torch
    from safetensors.torch import save_file

    from generation.engine.testmodel import full_size as meta_modules

    meta = meta_modules("sd1")
    torch.manual_seed(0)
    unet = type(meta.unet).from_config(meta.unet.config)
    encoder = type(meta.text_encoder)(meta.text_encoder.config)
    pipe = type("Pipe", (), {"unet": unet, "text_encoder": encoder, "text_encoder_2": None})()
    state = {}
    for prefix, module_root in (("lora_unet_", unet), ("lora_te_text_model_", encoder)):
        for name, module in module_root.named_modules():
            if isinstance(module, torch.nn.Linear) and ("attn" in name or "self_attn" in name):
                key = prefix + name.removeprefix("text_model.").replace(".", "_")
                state[f"{key}.lora_down.weight"] = torch.randn(16, module.in_features).half() * 0.01
                state[f"{key}.lora_up.weight"] = torch.randn(module.out_features, 16).half() * 0.01
                state[f"{key}.alpha"] = torch.tensor(8.0)
    path = folder / "full-lora.safetensors"
    save_file(state, path)
    loras = [(load_addon("lora", ModelRef(str(path), name=f"full-{k}"), "cpu", torch.float32),
              LoraUse(ModelRef(str(path), name=f"full-{k}"), 0.5, 0.5)) for k in range(3)]
    print(f"full-size SD 1.5, rank-16 LoRA ({path.stat().st_size / 2**20:.0f} MB, {len(state) // 3} layers), "
          "float32 on this CPU:")
    for n in (1, 3):
        samples = []
        for _ in range(runs):
            tick = time.perf_counter()
            with applied_loras(pipe, loras[:n]):
                pass
            samples.append(time.perf_counter() - tick)
        print(f"  apply + remove {n} LoRA(s): {statistics.median(samples) * 1000:.0f} ms "
              "(one 512 px CFG step of this UNet here: 8.6-9.8 s, FACTS.md)")


if __name__ == "__main__":
    main()
