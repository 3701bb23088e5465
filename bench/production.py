"""Production benchmark: PostgreSQL + Redis + a web process + separate Celery worker processes.

1. Overhead: for each job (test model, 256x256, 20 steps, a preview every step), the time from the
   HTTP submit to the final websocket message, minus the denoiser's own time for the job (the
   engine's total less its step callbacks: cancel checks and previews count as overhead). Median
   and p95.
2. Scaling: the same 24 jobs through 1 worker, then 2 workers, with a stand-in engine that sleeps
   a fixed time per step (this machine has 2 cores and no GPU: the stand-in shows what adding a
   GPU machine gives, not how fast a CPU is). Throughput ratio 2 workers / 1.

Needs PostgreSQL and Redis (README: Services); makes and drops its own database.

    .venv/bin/python bench/production.py [--jobs 20] [--scale-jobs 24] [--step-ms 50]
"""

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import POSTGRES, REDIS, Browser, Production, free_port, wait_until, web_answers  # noqa: E402

STANDIN = """
import sys, time
import django
django.setup()
from PIL import Image
import generation.jobs.worker
from generation.engine.run import GenerationCancelled, GenerationResult

def sleeping_generate(request, *, on_preview=None, should_cancel=None, watermark_payloads=None, **_):
    started = time.perf_counter()
    for step in range(1, request.steps + 1):
        time.sleep({step_s})
        if should_cancel():
            raise GenerationCancelled()
    seeds = request.seeds()
    return GenerationResult(request=request, images=[Image.new("RGB", (request.width, request.height))
                                                     for _ in seeds], seeds=seeds, indexes=list(range(len(seeds))),
                            timings={{"total": time.perf_counter() - started}})

generation.jobs.worker.generate = sleeping_generate  # before the pool forks: every pool process has it
from sdweb.celery import app
app.worker_main(["worker", "--pool=prefork", "--concurrency=1", "--loglevel=WARNING", "-n", sys.argv[1]])
"""


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def submit(base, browser, form) -> str:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(browser.jar), NoRedirect)
    request = urllib.request.Request(base + "/generate/", data=urllib.parse.urlencode(form).encode(),
                                     headers={"Referer": base + "/generate/"})
    try:
        opener.open(request, timeout=30)
    except urllib.error.HTTPError as redirect:
        return redirect.headers["Location"].split("job=")[1]
    raise RuntimeError("the submit was not accepted")


def overhead(deployment, jobs: int) -> list[dict]:
    from websockets.sync.client import connect

    port, log = free_port(), open(deployment.env["SDWEB_VAR_DIR"] + "/bench.log", "a")
    base = f"http://127.0.0.1:{port}"
    processes = [deployment.web(port, log), deployment.worker("gpu1", log)]
    rows = []
    try:
        wait_until(lambda: web_answers(base), timeout=60)
        browser = Browser(base)
        _, page = browser.post("/accounts/signup/", {"username": "bench", "password1": "bench-pass-123",
                                                     "password2": "bench-pass-123"})
        checkpoint = re.search(r'<option value="(\d+)" selected>', page).group(1)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
        form = {"prompt": "a lighthouse at dusk", "checkpoint": checkpoint, "width": 256, "height": 256,
                "steps": 20, "guidance_scale": 7, "scheduler": "Euler a", "num_images": 1,
                "csrfmiddlewaretoken": token}
        for i in range(jobs + 1):  # the first one loads the model in the worker and is not counted
            started = time.perf_counter()
            job_id = submit(base, browser, {**form, "seed": 100 + i})
            with connect(f"ws://127.0.0.1:{port}/ws/jobs/{job_id}/",
                         additional_headers={"Cookie": f"sessionid={browser.cookie('sessionid')}",
                                             "Origin": base}) as socket:
                while True:
                    event = json.loads(socket.recv(timeout=60))
                    if event["type"] in ("finished", "failed") or event.get("status") in ("succeeded", "failed"):
                        break
            end_to_end = time.perf_counter() - started
            job = deployment.script(f'from generation.models import Job\nj = Job.objects.get(pk="{job_id}")\n'
                                    f'print(json.dumps([j.status, j.timings["total"] - j.timings["callbacks"]]))')
            assert job[0] == "succeeded", job
            if i:
                rows.append({"end_to_end": end_to_end, "engine": job[1]})
    finally:
        stop(processes)
        log.close()
    return rows


def throughput(deployment, workers: int, jobs: int, step_s: float) -> float:
    """Jobs per second from the first submit to the last finish, with `workers` stand-in workers."""
    script = Path(deployment.env["SDWEB_VAR_DIR"]) / "standin.py"
    script.write_text(STANDIN.format(step_s=step_s))
    env = {**deployment.env, "PYTHONPATH": str(ROOT)}
    processes = [subprocess.Popen([sys.executable, str(script), f"standin{n}@%h"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for n in range(workers)]
    try:
        time.sleep(8)  # let the workers connect before the clock starts
        result = deployment.script(f"""
            import time
            from django.contrib.auth.models import User
            from generation.jobs.models import Job
            from generation.library.checkpoints import checkpoint_ensure_test_model
            from generation.credits.ledger import credits_grant
            from generation.jobs.submit import job_submit
            checkpoint = checkpoint_ensure_test_model()
            users = [User.objects.get_or_create(username=f"load{{u}}")[0] for u in range(4)]
            for user in users:
                credits_grant(user=user, amount=10000, reason="bench")
            started, ids = time.time(), []
            for n in range({jobs}):
                ids.append(job_submit(user=users[n % 4], params={{"prompt": "load", "checkpoint": checkpoint,
                    "width": 256, "height": 256, "steps": 20, "guidance_scale": 7, "scheduler": "Euler a",
                    "seed": n, "num_images": 1}}).pk)
            while Job.objects.filter(pk__in=ids, status__in=["queued", "running"]).exists():
                time.sleep(0.05)
            last = max(Job.objects.filter(pk__in=ids).values_list("finished_at", flat=True)).timestamp()
            assert not Job.objects.filter(pk__in=ids).exclude(status="succeeded").exists()
            print(json.dumps({{"seconds": last - started, "workers": sorted(set(
                Job.objects.filter(pk__in=ids).values_list("worker", flat=True)))}}))
        """)
        assert len(result["workers"]) == workers, result
        return jobs / result["seconds"]
    finally:
        stop(processes)



def stop(processes) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # said, and the figures kept: a stuck stop is not a slow run
            print(f"{process.args[-1]} did not stop within 60 s of SIGTERM; killed", file=sys.stderr)
            process.kill()
            process.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--scale-jobs", type=int, default=24)
    parser.add_argument("--step-ms", type=float, default=50)
    args = parser.parse_args()

    import psycopg
    import redis

    database = "sdweb_bench"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(REDIS).flushdb()
    deployment = Production(Path(tempfile.mkdtemp(prefix="sdweb-bench-")), database)
    deployment.env.update(SDWEB_ACTIVE_JOB_CAP="1000", SDWEB_PREVIEW_INTERVAL="0")
    try:
        subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=deployment.env,
                       check=True)
        deployment.script("from generation.library.checkpoints import checkpoint_ensure_test_model\n"
                          "checkpoint_ensure_test_model()\nprint('{}')")
        rows = overhead(deployment, args.jobs)
        one = throughput(deployment, 1, args.scale_jobs, args.step_ms / 1000)
        two = throughput(deployment, 2, args.scale_jobs, args.step_ms / 1000)
    finally:
        redis.Redis.from_url(REDIS).flushdb()
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    over = sorted((r["end_to_end"] - r["engine"]) * 1000 for r in rows)
    p95 = over[min(len(over) - 1, round(0.95 * (len(over) - 1)))]
    print(f"\nPostgreSQL + Redis + uvicorn + 1 prefork Celery worker, test model, 256x256, 20 steps, "
          f"{len(rows)} jobs (CPU: {os.cpu_count()} cores)")
    print(f"{'':48}{'median':>10}{'p95':>10}")
    print(f"{'HTTP submit -> final websocket message, s':48}"
          f"{statistics.median(r['end_to_end'] for r in rows):>10.3f}")
    print(f"{'denoiser time for the same job, s':48}{statistics.median(r['engine'] for r in rows):>10.3f}")
    print(f"{'overhead, ms':48}{statistics.median(over):>10.1f}{p95:>10.1f}   (goal: median <= 150)")
    print(f"\nstand-in engine sleeping {args.step_ms:g} ms per step, 20 steps, {args.scale_jobs} jobs of 4 users")
    print(f"{'1 worker, jobs/s':48}{one:>10.2f}")
    print(f"{'2 workers, jobs/s':48}{two:>10.2f}")
    print(f"{'ratio':48}{two / one:>10.2f}   (goal >= 1.9)")


if __name__ == "__main__":
    main()
