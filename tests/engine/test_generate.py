import io

import numpy as np
import pytest
import torch
from PIL import Image

from generation.engine import SCHEDULERS, GenerationCancelled, PreviewSettings, load_pipeline, parse_parameters, read_watermark
from generation.engine.previews import PreviewMaker, PreviewThrottle
from generation.engine.schedulers import make_scheduler


def pixels(image):
    return np.asarray(image).astype(int)


def test_the_same_request_twice_gives_byte_identical_images(run):
    first, second = run(num_images=2), run(num_images=2)
    assert [im.tobytes() for im in first.images] == [im.tobytes() for im in second.images]


def test_a_different_seed_gives_a_different_image(run):
    assert run(seed=1).images[0].tobytes() != run(seed=2).images[0].tobytes()


def test_batch_image_k_is_the_single_image_made_with_seed_s_plus_k(run):
    batch = run(seed=500, num_images=3)
    assert batch.seeds == [500, 501, 502]
    for k in range(3):
        single = run(seed=500 + k)
        assert np.abs(pixels(batch.images[k]) - pixels(single.images[0])).max() <= 2


def test_a_variation_seed_moves_the_image_toward_that_seeds_own(run):
    base, other = run(seed=7, scheduler="Euler"), run(seed=900, scheduler="Euler")
    varied = [run(seed=7, subseed=900, subseed_strength=t, scheduler="Euler", num_images=2) for t in (0.3, 1.0)]
    assert np.abs(pixels(varied[1].images[0]) - pixels(other.images[0])).max() <= 2  # all the way: seed 900's image
    far = [np.abs(pixels(v.images[0]) - pixels(base.images[0])).mean() for v in varied]
    assert 0 < far[0] < far[1]  # part of the way: between the two
    assert varied[0].images[1].tobytes() != varied[0].images[0].tobytes()  # image k varies toward subseed + k
    text = parse_parameters(varied[0].parameters(1))
    assert (text["seed"], text["subseed"], text["subseed_strength"]) == (8, 901, 0.3)
    alone = run(seed=7, subseed=900, subseed_strength=0.3, scheduler="Euler")  # reproducible, batched or not
    assert np.abs(pixels(alone.images[0]) - pixels(varied[0].images[0])).max() <= 2


def made_by_diffusers(model, prompts: list[str], seed: int = 1234, **img2img):
    """The reference, from A1111's definition: diffusers' own loop on the test model, handed the
    encoding of prompts[s - 1] for step s (seed, size and sampler as `run` uses them). img2img
    (image, strength, num_inference_steps): prompts are those of the steps it runs."""
    from generation.engine.pipelines import pipeline_for_run
    from generation.engine.prompts import encode_prompts
    from generation.engine.steps import decode

    pipe = pipeline_for_run(model.pipe, "Euler", [seed], "img2img" if img2img else "txt2img")
    encoded = {p: encode_prompts(pipe.tokenizer, pipe.text_encoder, p, "", "cpu") for p in set(prompts)}

    def swap(pipe, i, t, tensors):
        if i + 1 == len(prompts):
            return {}
        positive, negative = encoded[prompts[i + 1]]
        return {"prompt_embeds": torch.cat([negative, positive])}

    positive, negative = encoded[prompts[0]]
    size = {} if img2img else {"width": 256, "height": 256, "num_inference_steps": len(prompts)}
    latents = pipe(prompt_embeds=positive, negative_prompt_embeds=negative, **size, **img2img,
                   guidance_scale=7.0, output_type="latent",
                   generator=[torch.Generator("cpu").manual_seed(seed)], callback_on_step_end=swap,
                   callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]).images
    return decode(pipe.vae, pipe.image_processor, latents)[0]


def test_prompt_editing_and_alternation_make_the_images_their_definitions_give(run, test_model):
    model = load_pipeline(test_model)
    cases = {"a [cat:dog:0.5]": ["a cat", "a cat", "a dog", "a dog"],  # int(0.5 x 4) = 2 steps of cat
             "a [cat:dog:3]": ["a cat", "a cat", "a cat", "a dog"],
             "a [cat|dog]": ["a cat", "a dog", "a cat", "a dog"],
             "a [cat:dog:0]": ["a dog"] * 4}
    for prompt, per_step in cases.items():
        made = run(prompt=prompt, scheduler="Euler").images[0]
        assert np.abs(pixels(made) - pixels(made_by_diffusers(model, per_step))).max() <= 2, prompt
    switched, cat, dog = (run(prompt=p, scheduler="Euler").images[0] for p in ("a [cat:dog:0.5]", "a cat", "a dog"))
    assert pixels(switched).tolist() not in (pixels(cat).tolist(), pixels(dog).tolist())


def test_prompt_editing_in_img2img_counts_the_steps_as_a1111_does(run, test_model):
    """A1111 schedules over all the steps and steps through the schedule from the first step it
    runs: at strength 0.5 of 8 steps, the 4 steps run are schedule steps 1-4."""
    model = load_pipeline(test_model)
    start = Image.effect_noise((256, 256), 60).convert("RGB")
    cases = {"a [cat:dog:2]": ["a cat", "a cat", "a dog", "a dog"],
             "a [cat:dog:0.5]": ["a cat"] * 4,  # the switch, at schedule step 4 of 8, is never reached
             "a [cat|dog]": ["a cat", "a dog", "a cat", "a dog"]}
    for prompt, per_step in cases.items():
        made = run(prompt=prompt, scheduler="Euler", steps=8, init_image=start, denoising_strength=0.5).images[0]
        reference = made_by_diffusers(model, per_step, image=start, strength=0.5, num_inference_steps=8)
        assert np.abs(pixels(made) - pixels(reference)).max() <= 2, prompt
    mask = Image.new("L", (256, 256), 0)
    mask.paste(255, (64, 64, 192, 192))
    inpainted = [run(prompt=p, scheduler="Euler", init_image=start, mask=mask).images[0]
                 for p in ("a [cat:dog:2]", "a cat", "a dog")]  # inpainting follows the schedule too
    assert pixels(inpainted[0]).tolist() not in (pixels(inpainted[1]).tolist(), pixels(inpainted[2]).tolist())


def test_seed_minus_one_picks_a_seed_reports_it_and_it_reproduces_the_image(run):
    random_run = run(seed=-1)
    seed = random_run.seeds[0]
    assert 0 <= seed <= 2**32 - 1 and random_run.request.seed == seed
    assert run(seed=seed).images[0].tobytes() == random_run.images[0].tobytes()
    assert run(seed=-1, num_images=3).seeds[1:] != [seed + 1, seed + 2]  # a fresh pick each time


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_runs_and_writes_the_a1111_sampler_and_schedule_names(run, name):
    result = run(scheduler=name, steps=3)
    assert len(result.images) == 1 and result.images[0].size == (256, 256)
    info = parse_parameters(result.parameters(0))
    assert (info["sampler"], info["schedule_type"]) == (SCHEDULERS[name].sampler, SCHEDULERS[name].schedule_type)
    assert info["scheduler"] == name


def test_stochastic_sde_scheduler_is_still_reproducible_and_batch_consistent(run):
    batch = run(scheduler="DPM++ SDE Karras", seed=7, num_images=2)
    again = run(scheduler="DPM++ SDE Karras", seed=7, num_images=2)
    assert batch.images[1].tobytes() == again.images[1].tobytes()
    single = run(scheduler="DPM++ SDE Karras", seed=8)
    assert np.abs(pixels(batch.images[1]) - pixels(single.images[0])).max() <= 2


def test_a_v_prediction_model_keeps_its_prediction_type_under_every_scheduler(test_model):
    config = dict(load_pipeline(test_model).pipe.scheduler.config, prediction_type="v_prediction")
    for name in SCHEDULERS:
        assert make_scheduler(name, config, [1]).config.prediction_type == "v_prediction", name


def test_a_v_prediction_folder_generates_differently_from_epsilon(run, test_model, tmp_path):
    import json
    import shutil

    folder = tmp_path / "v-model"
    shutil.copytree(test_model, folder)
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), prediction_type="v_prediction")))
    assert run(model=str(folder)).images[0].tobytes() != run().images[0].tobytes()


def test_previews_follow_the_throttle_and_the_last_step_always_arrives(run):
    every, hourly = [], []
    run(steps=6, preview=PreviewSettings(min_interval=0), on_preview=lambda *a: every.append(a))
    run(steps=6, preview=PreviewSettings(min_interval=3600), on_preview=lambda *a: hourly.append(a))
    assert [(step, total) for step, total, _ in every] == [(s, 6) for s in range(1, 7)]
    assert [(step, total) for step, total, _ in hourly] == [(1, 6), (6, 6)]


def test_a_preview_is_a_small_jpeg_of_the_whole_batch_that_changes_as_the_image_forms(run):
    previews = []
    run(steps=4, num_images=2, preview=PreviewSettings(min_interval=0, max_edge=128),
        on_preview=lambda step, total, data: previews.append(data))
    first, last = (Image.open(io.BytesIO(p)) for p in (previews[0], previews[-1]))
    assert first.format == "JPEG" and max(first.size) == 128 and first.size[0] > first.size[1]
    assert previews[0] != previews[-1]


def test_the_throttle_sends_at_most_one_preview_per_interval_and_always_the_last():
    now = [0.0]
    throttle = PreviewThrottle(0.25, clock=lambda: now[0])
    sent = []
    for step in range(1, 21):
        now[0] = step * 0.1
        if throttle.should_send(step, 20):
            sent.append(step)
    assert sent == [1, 4, 7, 10, 13, 16, 19, 20]


def test_previews_made_beside_the_loop_arrive_in_order_and_equal_to_those_made_at_once():
    """The GPU's way (a copy, then a thread of its own), tried on the CPU: the loop's tensor may
    change after send() and the preview still shows the step it was sent at."""
    latents = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(3))
    settings = PreviewSettings(max_edge=64)
    beside, at_once = PreviewMaker(settings, beside=True), PreviewMaker(settings, beside=False)
    got, expected = [], []
    for step in range(3):
        beside.send(latents, lambda image, step=step: got.append((step, image)))
        at_once.send(latents, lambda image, step=step: expected.append((step, image)))
        latents.mul_(0.5)  # the denoiser moves on in place
    beside.wait()
    assert got == expected and [step for step, _ in got] == [0, 1, 2]


def test_a_taesd_folder_gives_previews_from_the_tiny_autoencoder(run, tmp_path):
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(tmp_path)
    previews = []
    run(steps=2, preview=PreviewSettings(min_interval=0, taesd=str(tmp_path)),
        on_preview=lambda step, total, data: previews.append(Image.open(io.BytesIO(data))))
    assert len(previews) == 2 and max(previews[-1].size) == 256


def test_cancel_stops_the_run_within_one_step_and_returns_nothing(run, test_model):
    unet = load_pipeline(test_model).pipe.unet
    calls = []
    hook = unet.register_forward_hook(lambda *a: calls.append(1))
    asked = []
    try:
        with pytest.raises(GenerationCancelled):
            run(steps=10, should_cancel=lambda: asked.append(1) or len(asked) > 3)
    finally:
        hook.remove()
    # asked once before the run, then after steps 1, 2 and 3: the fourth answer stopped it.
    assert len(calls) == 3


def test_a_cancel_before_the_run_starts_runs_no_step(run, test_model):
    unet = load_pipeline(test_model).pipe.unet
    calls = []
    hook = unet.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(GenerationCancelled):
            run(should_cancel=lambda: True)
    finally:
        hook.remove()
    assert calls == []


def test_each_image_carries_its_own_watermark_payload(run):
    result = run(num_images=2, watermark_payloads=[b"image-01", b"image-02"])
    assert [read_watermark(im) for im in result.images] == [b"image-01", b"image-02"]


def test_watermark_payloads_must_be_one_8_byte_payload_per_image(run):
    with pytest.raises(ValueError, match="one 8-byte payload per image"):
        run(num_images=2, watermark_payloads=[b"image-01"])
    with pytest.raises(ValueError, match="8-byte"):
        run(watermark_payloads=[b"short"])


def test_the_result_reports_model_and_timings(run):
    result = run()
    assert result.model_name == "sdweb-test-tiny" and len(result.model_hash) == 10
    assert set(result.timings) >= {"load", "text_encode", "denoise", "decode", "watermark"}
    assert all(seconds >= 0 for seconds in result.timings.values())


def test_bfloat16_can_be_chosen_on_the_cpu(test_model):
    from generation.engine import GenerationRequest, generate

    request = GenerationRequest(prompt="x", model=test_model, width=256, height=256, steps=2, seed=1)
    result = generate(request, dtype="bfloat16", device="cpu", checker=None)
    assert result.images[0].size == (256, 256)
    assert load_pipeline(test_model, dtype="bfloat16", device="cpu").pipe.unet.dtype == torch.bfloat16


def test_a_batch_of_three_previews_is_one_row_with_no_empty_cell():
    from generation.engine.previews import encode_preview

    white = torch.full((3, 32, 32, 3), 255, dtype=torch.uint8)
    row = Image.open(io.BytesIO(encode_preview(white, PreviewSettings(max_edge=192, format="PNG"))))
    assert row.size == (192, 64) and row.convert("L").getextrema()[0] > 200
    four = Image.open(io.BytesIO(encode_preview(torch.cat([white, white[:1]]), PreviewSettings(max_edge=128, format="PNG"))))
    assert four.size == (128, 128)


def test_the_cfg_scale_changes_the_image(run):
    """It once went unused (every image at diffusers' default 7.5) and no test noticed."""
    low, high, default = run(guidance_scale=3.0), run(guidance_scale=9.0), run(guidance_scale=7.5)
    assert low.images[0].tobytes() != high.images[0].tobytes() != default.images[0].tobytes()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_pictures_made_on_the_device_equal_those_diffusers_makes(dtype):
    from diffusers.image_processor import VaeImageProcessor

    from generation.engine.steps import to_pictures

    processor = VaeImageProcessor()
    decoded = torch.rand((3, 3, 40, 24), generator=torch.Generator().manual_seed(5)) * 2.4 - 1.2  # past [-1, 1] too
    decoded[0, 0, 0, :6] = torch.tensor([-1, 1, 2 * 0.5 / 255 - 1, 2 * 1.5 / 255 - 1, 2 * 127.5 / 255 - 1, 0])  # halves
    decoded = decoded.to(dtype)
    ours, theirs = to_pictures(processor, decoded), processor.postprocess(decoded, output_type="pil")
    assert [p.mode for p in ours] == ["RGB"] * 3
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(ours, theirs))
