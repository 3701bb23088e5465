"""Studio benchmark on the embedded default (`manage.py up`, test model, 256x256, 20 steps).

For each job: the time from the HTTP submit to the final websocket message, against the denoiser's
own time for the same job (the engine's `total` less its step callbacks: cancel checks, previews
and their sends are the studio's cost, so they count as overhead), with previews on, and the time
until the client holds a first preview. Prints medians, the overhead per job (paired: each job's
end to end less its own engine time) in ms, and the ratio.

    .venv/bin/python bench/studio.py [--jobs 12]
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=12)
    args = parser.parse_args()

    var_dir = Path(tempfile.mkdtemp(prefix="sdweb-bench-"))
    os.environ.update(SDWEB_VAR_DIR=str(var_dir), DJANGO_SETTINGS_MODULE="sdweb.settings")
    from websockets.sync.client import connect

    from tests.support import Browser, Studio  # the same real-process harness the tests use

    studio = Studio(var_dir)
    studio.start()
    try:
        import django

        django.setup()
        from generation.jobs.models import Job

        browser = Browser(studio.base)
        _, page = browser.post("/accounts/signup/", {"username": "bench", "password1": "bench-pass-123",
                                                     "password2": "bench-pass-123"})
        checkpoint = re.search(r'<option value="(\d+)" selected>', page).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        no_redirect = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(browser.jar), NoRedirect)
        form = {"prompt": "a lighthouse at dusk", "checkpoint": checkpoint, "width": 256, "height": 256,
                "steps": 20, "guidance_scale": 7, "scheduler": "Euler a", "num_images": 1,
                "csrfmiddlewaretoken": token}
        rows = []
        for i in range(args.jobs + 1):  # the first one warms the model cache and is not counted
            body = urllib.parse.urlencode({**form, "seed": 100 + i}).encode()
            request = urllib.request.Request(studio.base + "/generate/", data=body,
                                             headers={"Referer": studio.base + "/generate/"})
            started = time.perf_counter()
            try:
                no_redirect.open(request, timeout=30)
            except urllib.error.HTTPError as redirect:
                job_id = redirect.headers["Location"].split("job=")[1]
            first_preview = None
            with connect(f"ws://127.0.0.1:{studio.port}/ws/jobs/{job_id}/",
                         additional_headers={"Cookie": f"sessionid={browser.cookie('sessionid')}",
                                             "Origin": studio.base}) as socket:
                while True:
                    event = json.loads(socket.recv(timeout=60))
                    if first_preview is None and event.get("preview"):
                        first_preview = time.perf_counter() - started
                    if event["type"] in ("finished", "failed") or event.get("status") == "succeeded":
                        break
            end_to_end = time.perf_counter() - started
            job = Job.objects.get(pk=job_id)
            assert job.status == "succeeded", job.error
            if i:
                engine = job.timings["total"] - job.timings["callbacks"]
                rows.append(dict(end_to_end=end_to_end, engine=engine, overhead=end_to_end - engine,
                                 callbacks=job.timings["callbacks"], first_preview=first_preview,
                                 step=job.timings["denoise"] / job.steps, text_encode=job.timings["text_encode"]))
    finally:
        studio.stop()

    def median(key):
        return statistics.median(r[key] for r in rows if r[key] is not None)

    e2e, engine = median("end_to_end"), median("engine")
    print(f"\nembedded default, test model, 256x256, 20 steps, 1 image, {len(rows)} jobs (CPU: {os.cpu_count()} cores)")
    print(f"{'':44}{'median':>10}")
    print(f"{'HTTP submit -> final websocket message, s':44}{e2e:>10.3f}")
    print(f"{'denoiser time for the same job, s':44}{engine:>10.3f}")
    print(f"{'  of it in step callbacks, ms':44}{median('callbacks') * 1000:>10.1f}   (counted as overhead)")
    over = sorted(r["overhead"] for r in rows)
    print(f"{'overhead per job, ms (median, p95)':44}{median('overhead') * 1000:>10.1f}"
          f"{over[min(len(over) - 1, round(0.95 * (len(over) - 1)))] * 1000:>10.1f}   (goal: median <= 100)")
    print(f"{'ratio':44}{e2e / engine:>10.3f}")
    print(f"{'HTTP submit -> first preview at the client, ms':44}{median('first_preview') * 1000:>10.1f}")
    print(f"{'one denoising step, ms':44}{median('step') * 1000:>10.1f}")
    print(f"{'first preview - (step + text encode), ms':44}"
          f"{(median('first_preview') - median('step') - median('text_encode')) * 1000:>10.1f}   (goal <= 50)")


if __name__ == "__main__":
    main()
