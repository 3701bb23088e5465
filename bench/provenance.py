"""Provenance: how often a copy of an image found in the wild traces back to the job that made it.

Images are made through the studio's own submit -> run -> publish path (watermark, PNG, C2PA,
fingerprint, audit) on PostgreSQL, of two kinds: the tiny test model's (the real pipeline; its
pictures are noise) and photo-like pictures made with Pillow standing in for a real checkpoint's
output, which this machine can't run (everything after the denoiser is the real code). Each
edit in the table is applied to each image and the copy traced with the code behind the admin's
trace page and POST /api/v1/trace. Columns: the old dwtDctSvd mark on the same pictures (before),
the new watermark alone, the similarity index alone (the right image nearest), and the combined
trace (the right job). Then: PSNR/SSIM of both marks, embed and read times, false positives on
unmarked pictures (noise, flat, gradients, photos; any size from 256 to 640 px) and the
similarity search's time on PostgreSQL with --index-rows fingerprints.

    .venv/bin/python bench/provenance.py [--images 40] [--size 512] [--unmarked 10000] [--unmarked-from 0]
                                         [--index-rows 1000000]
"""

import argparse
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import POSTGRES, photo, photo_generate, ssim  # noqa: E402


def jpeg(image, quality, subsampling):
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return Image.open(io.BytesIO(buffer.getvalue()))


def webp(image, quality):
    buffer = io.BytesIO()
    image.save(buffer, format="WEBP", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue()))


def png(image):
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Image.open(io.BytesIO(buffer.getvalue()))


def scaled(image, factor):
    return image.resize((round(image.width * factor), round(image.height * factor)), Image.LANCZOS)


def one_side(image, share):
    return image.crop((round(image.width * share), 0, image.width, image.height))


def all_round(image, share):  # `share` of each dimension, half from each side
    x, y = round(image.width * share / 2), round(image.height * share / 2)
    return image.crop((x, y, image.width - x, image.height - y))


EDITS = {"PNG": png}
for q in (95, 90, 75, 60):
    EDITS[f"JPEG q{q} 4:2:0"] = lambda im, q=q: jpeg(im, q, 2)
    EDITS[f"JPEG q{q} 4:4:4"] = lambda im, q=q: jpeg(im, q, 0)
EDITS |= {
    "WebP q80": lambda im: webp(im, 80),
    "downscale to 50 %": lambda im: scaled(im, 0.5),
    "downscale to 25 %": lambda im: scaled(im, 0.25),
    "upscale 1.25x": lambda im: scaled(im, 1.25),
    **{f"crop {p} % from one side": lambda im, p=p: one_side(im, p / 100) for p in (5, 10, 20)},
    **{f"crop {p} % all round": lambda im, p=p: all_round(im, p / 100) for p in (5, 10, 20)},
    "brightness +15 %": lambda im: ImageEnhance.Brightness(im).enhance(1.15),
    "brightness -15 %": lambda im: ImageEnhance.Brightness(im).enhance(0.85),
    "screenshot (80 %, PNG)": lambda im: png(scaled(im, 0.8)),
    "resize to 50 %, then JPEG q75": lambda im: jpeg(scaled(im, 0.5), 75, 2),
    **{f"turn {d:+d}°": lambda im, d=d: im.rotate(d, resample=Image.BICUBIC) for d in (2, -2, 5, -5, 10, -10)},
    "mirror": lambda im: ImageOps.mirror(im),
    "mirror, turn 5°, JPEG q90": lambda im: jpeg(ImageOps.mirror(im).rotate(5, resample=Image.BICUBIC), 90, 2),
    **{f"keep {p} % of the area (middle)": lambda im, p=p: all_round(im, 1 - (p / 100) ** 0.5) for p in (50, 25, 10)},
    "turn 5°, then keep 50 % of the area": lambda im: all_round(im.rotate(5, resample=Image.BICUBIC), 1 - 0.5**0.5),
    **{f"img2img on the test model, strength {s}": lambda im, s=s: regenerated(im, s) for s in (0.1, 0.2, 0.3)},
}


def regenerated(image, strength):
    """The copy run through img2img at `strength` on the tiny test model (the only model this
    machine has: its random VAE doesn't give back what it encodes, as a real one nearly does)."""
    from generation.engine.request import GenerationRequest
    from generation.engine.run import generate
    from generation.library.checkpoints import checkpoint_ensure_test_model

    request = GenerationRequest(prompt="a photo", model=checkpoint_ensure_test_model().source, width=image.width,
                                height=image.height, steps=10, denoising_strength=strength, seed=1,
                                init_image=image.convert("RGB"))
    return generate(request).images[0]


def psnr(a, b) -> float:
    error = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return 10 * np.log10(255**2 / np.mean(error**2))


def upload(image) -> io.BytesIO:
    """The copy's pixels as they decode, in a lossless file (re-encoding a JPEG would edit it again)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


def make_images(kind: str, count: int, size: int):
    """`count` images of `kind` made through submit -> run -> publish; (image row, unmarked picture)."""
    from django.conf import settings
    from django.contrib.auth.models import User

    import generation.jobs.worker as worker
    from generation.credits.ledger import credits_grant
    from generation.engine.watermark import embed_watermark
    from generation.jobs import finish
    from generation.jobs.queue import job_claim
    from generation.jobs.submit import job_submit
    from generation.library.checkpoints import checkpoint_ensure_test_model

    made, unmarked, real_generate = [], {}, worker.generate

    def recorded(picture, payload, **options):  # keeps each picture as it was before the watermark, for PSNR and the old mark
        unmarked.setdefault(payload, picture)  # the first: the image itself, not its (marked) thumbnail
        return embed_watermark(picture, payload, **options)

    settings.SDWEB["FINISH_PROCESSES"] = 0  # finished here, where the pictures are recorded
    finish.embed_watermark = recorded
    worker.generate = photo_generate if kind == "photo" else real_generate
    user, _ = User.objects.get_or_create(username=f"bench-{kind}")
    credits_grant(user=user, amount=100_000, reason="provenance bench")
    checkpoint = checkpoint_ensure_test_model()
    try:
        for n in range(count):
            job = job_submit(user=user, params={
                "prompt": f"{kind} {n}", "negative_prompt": "", "checkpoint": checkpoint, "width": size,
                "height": size, "steps": 4, "guidance_scale": 7, "scheduler": "Euler a", "seed": 1000 * n + size,
                "num_images": 1})
            worker.job_run(job_claim())
            image = job.images.get()
            made.append((image, unmarked[image.watermark_payload]))
    finally:
        worker.generate, finish.embed_watermark = real_generate, embed_watermark
    return made


def edit_table(made) -> dict:
    """Per edit: counts of (old mark, watermark, similarity, combined) that named the right image."""
    from generation.engine.watermark import embed_legacy_watermark, read_legacy_watermark
    from generation.provenance.trace import _trace, similar_images

    table, reads = {name: [0, 0, 0, 0] for name in EDITS}, {"found": [], "missed": []}
    for image, clean in made:
        with image.png.open("rb") as file:
            stored = Image.open(io.BytesIO(file.read()))
        old = embed_legacy_watermark(clean, image.watermark_payload)
        for name, edit in EDITS.items():
            copy = edit(stored)
            tick = time.perf_counter()
            result = _trace(upload(copy))
            reads["found" if result["read"]["watermark"] else "missed"].append(time.perf_counter() - tick)
            counts = table[name]
            counts[0] += read_legacy_watermark(edit(old)) == image.watermark_payload
            counts[1] += result["read"]["watermark"] == image.hex_id
            near = similar_images(copy.convert("RGB"))
            counts[2] += bool(near) and near[0][0] == image.id
            counts[3] += result["found"] and result["image_id"] == image.hex_id
    return {"table": table, "reads": reads}


def unmarked_picture(n: int) -> Image.Image:
    rng = np.random.default_rng(10**6 + n)
    width, height = (int(v) for v in rng.integers(256, 641, 2))
    kind = n % 4
    if kind == 0:
        return photo(10**6 + n, width, height)
    if kind == 1:
        return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    if kind == 2:
        return Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    ramp = np.add.outer(np.linspace(0, rng.uniform(0, 255), height), np.linspace(0, rng.uniform(0, 255), width))
    return Image.fromarray(np.stack([ramp / 2] * 3, -1).astype(np.uint8))


def full_search():
    """The false-positive count's reader tries every turn and size, without the product's time
    budget (which cuts the search short on a busy machine): no read of the full search means no
    read of any part of it, so the count holds for the budgeted reader, whatever the load."""
    import functools
    import math

    from generation.engine.watermark import watermark_reading
    from generation.provenance import trace

    trace.watermark_reading = functools.partial(watermark_reading, budget_s=math.inf)


def false_positive(n: int) -> tuple[int, int, int, float, tuple[int, int]]:
    """(payload read, similar image found, traced to a job, seconds, size) for unmarked picture n."""
    from generation.provenance.trace import _trace

    tick = time.perf_counter()
    picture = unmarked_picture(n)
    result = _trace(upload(picture))
    return bool(result["read"]["watermark"]), result["method"] == "similarity", result["found"], \
        time.perf_counter() - tick, picture.size


def chance_reads(sizes) -> str:
    """The codes' theoretical bound on reading a payload by chance: a CRC-32 passing (2^-32) for each
    turn and size the full search tries on a picture of that size, plus a CRC-16 (2^-16) for the old
    mark's one read; the sync peak's test, which a chance read must also pass, is left out."""
    from generation.engine.watermark import _hypotheses

    tries = [sum(1 for _ in _hypotheses(np.zeros((height, width), np.float32))) for width, height in sizes]
    per_picture = [n * 2.0**-32 + 2.0**-16 for n in tries]
    return (f"theoretical bound on chance payload reads: at most {max(per_picture):.3g} a picture ({min(tries)}-"
            f"{max(tries)} tries at 2^-32, the old mark's one at 2^-16), {sum(per_picture):.3g} expected in these "
            f"{len(sizes)}; a chance read traces to a job only if it names one of the studio's images (ids of 63 "
            f"random bits: {10**6 / 2**64:.2g} with a million images) and the picture matches that image")


def index_timing(rows: int, made) -> list[float]:
    """Fill the fingerprint table to `rows` (random hashes, the studio's aspect ratios) and time
    the similarity search for copies of real images (ms)."""
    from django.db import connection

    from generation.provenance.trace import similar_images

    rng = np.random.default_rng(7)
    sizes = np.array([(512, 512), (1024, 1024), (512, 768), (768, 512), (832, 1216), (1216, 832), (1344, 768)])
    with connection.cursor() as cursor:
        with cursor.copy("COPY generation_imagefingerprint (image_id, phash, whash, width, height) FROM STDIN") as copy:
            for start in range(0, rows, 100_000):
                count = min(100_000, rows - start)
                hashes = rng.integers(-(2**63), 2**63 - 1, (count, 2), dtype=np.int64)
                picked = sizes[rng.choice(len(sizes), count, p=[0.4, 0.2, 0.1, 0.1, 0.08, 0.07, 0.05])]
                for k in range(count):
                    copy.write_row((2**62 + start + k, int(hashes[k, 0]), int(hashes[k, 1]), int(picked[k, 0]),
                                    int(picked[k, 1])))
        cursor.execute("VACUUM ANALYZE generation_imagefingerprint")
    times = []
    for image, _ in made[:10]:
        with image.png.open("rb") as file:
            stored = Image.open(io.BytesIO(file.read())).convert("RGB")
        for copy in (jpeg(stored, 60, 2), one_side(stored, 0.2)):
            tick = time.perf_counter()
            similar_images(copy)
            times.append((time.perf_counter() - tick) * 1000)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=40, help="of each kind")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--unmarked", type=int, default=10_000)
    parser.add_argument("--unmarked-from", type=int, default=0, help="the first unmarked picture's number: "
                        "a long false-positive count can be run in parts, each part other pictures")
    parser.add_argument("--index-rows", type=int, default=1_000_000)
    parser.add_argument("--postgres", default=POSTGRES)
    args = parser.parse_args()

    import cv2
    import psycopg
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)  # the false-positive count runs a process per core
    database = f"sdweb_bench_provenance_{os.getpid()}"
    with psycopg.connect(args.postgres, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    os.environ.update(SDWEB_VAR_DIR=tempfile.mkdtemp(prefix="sdweb-bench-"), DJANGO_SETTINGS_MODULE="sdweb.settings",
                      DATABASE_URL=f"{args.postgres.rsplit('/', 1)[0]}/{database}")
    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("migrate", verbosity=0)
        run(args)
    finally:
        from django.db import connections

        connections.close_all()
        with psycopg.connect(args.postgres, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def run(args):
    from django.db import connections

    from generation.engine.watermark import embed_legacy_watermark, embed_watermark

    kinds = {kind: make_images(kind, args.images, args.size) for kind in ("photo", "test model")}
    print(f"{args.images} images of each kind at {args.size} px, traced after each edit "
          "(% naming the right image; crops 'all round' take the share of each side's length, half from each end)")
    results = {kind: edit_table(made) for kind, made in kinds.items()}
    header = "| edit | " + " | ".join(f"{kind}: old mark | watermark | similarity | **trace**" for kind in kinds) + " |"
    print(header + "\n|" + " --- |" * (1 + 4 * len(kinds)))
    for name in EDITS:
        cells = []
        for kind in kinds:
            cells += [f"{100 * c / args.images:.0f}" for c in results[kind]["table"][name]]
            cells[-1] = f"**{cells[-1]}**"
        print(f"| {name} | " + " | ".join(cells) + " |")

    print("\nquality and time (medians)")
    for kind, made in kinds.items():
        cleans = [clean for _, clean in made]
        new = [embed_watermark(im, b"quality!") for im in cleans]
        old = [embed_legacy_watermark(im, b"quality!") for im in cleans]
        embed_ms = [1000 * t for t in timed(lambda im: embed_watermark(im, b"timing!!"), cleans[:10])]
        reads = results[kind]["reads"]
        print(f"{kind}: PSNR new {statistics.median(map(psnr, cleans, new)):.1f} dB (min "
              f"{min(map(psnr, cleans, new)):.1f}), old {statistics.median(map(psnr, cleans, old)):.1f} dB; "
              f"SSIM new {statistics.median(map(ssim, cleans, new)):.4f} (min {min(map(ssim, cleans, new)):.4f}), "
              f"old {statistics.median(map(ssim, cleans, old)):.4f}; "
              f"embed {statistics.median(embed_ms):.0f} ms; trace when the watermark reads "
              f"{1000 * statistics.median(reads['found']):.0f} ms (max {1000 * max(reads['found']):.0f}), "
              + (f"when it doesn't {1000 * statistics.median(reads['missed']):.0f} ms (max "
                 f"{1000 * max(reads['missed']):.0f})" if reads["missed"] else "it always read"))

    if args.unmarked:
        connections.close_all()  # each pool process opens its own: no socket (nor connection pool) is forked
        for connection in connections.all():
            if hasattr(connection, "close_pool"):
                connection.close_pool()
        tick = time.perf_counter()
        with multiprocessing.get_context("fork").Pool(os.cpu_count(), full_search) as pool:
            outcomes = pool.map(false_positive, range(args.unmarked_from, args.unmarked_from + args.unmarked),
                                chunksize=20)
        payloads, similar, traced = (sum(o[i] for o in outcomes) for i in range(3))
        print(f"\nunmarked pictures: {args.unmarked} (from number {args.unmarked_from}; noise, flat, gradients, "
              "photos; 256-640 px): "
              f"watermark payloads read {payloads}, similar images found {similar}, **traced to a job (false "
              f"positives) {traced}**; trace median {1000 * statistics.median(o[3] for o in outcomes):.0f} ms "
              f"(max {1000 * max(o[3] for o in outcomes):.0f}; wall {time.perf_counter() - tick:.0f} s)\n"
              + chance_reads([o[4] for o in outcomes]))

    if args.index_rows:
        times = index_timing(args.index_rows, kinds["photo"])
        print(f"\nsimilarity search on PostgreSQL with {args.index_rows + 2 * args.images} fingerprints: median "
              f"{statistics.median(times):.0f} ms, max {max(times):.0f} ms ({len(times)} searches: JPEG q60 copies "
              "and 20 % crops, each with all its crop hypotheses)")


def timed(fn, items) -> list[float]:
    out = []
    for item in items:
        tick = time.perf_counter()
        fn(item)
        out.append(time.perf_counter() - tick)
    return out


if __name__ == "__main__":
    main()
