"""Throughput of the real studio with many users: cross-user batching off and on, side by side.

Starts the embedded default (`manage.py up`: web, queue and GPU worker in one process, SQLite, no
outside services, so it runs on a bare GPU machine too) once per mode, with 1, 4, 8 and 16
simulated users. Each user submits a job through the REST API, watches its websocket as the page
does until it ends, and submits the next (mixed jobs: prompts of every length, their own seeds and CFG, sometimes 2 images,
one in ten with another sampler). Prints images/s, p50/p95 submit->finished (the server's own
timestamps), GPU and CPU busy %, and the on/off ratios.

CPU (the built-in tiny model; the ratio here is whatever it is):
    .venv/bin/python bench/throughput.py --seconds 20
GPU (SD 1.5's full-size architecture, random weights: the same cost as real ones):
    python bench/throughput.py --model sd15 --size 512 --steps 30 --batch 8
Stand-in GPU (bench/standin.py: the UNet sleeps 25 ms x batch^0.3 a step; everything else real),
finishing processes off (SDWEB_FINISH_PROCESSES=0) and on, interleaved:
    .venv/bin/python bench/throughput.py --standin-ms 25 --compare pipeline --steps 20 --batch 8 --users 1 8 32 \
        --seconds 60 --repeats 3
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["a fox", "a lighthouse on a cliff at dusk, oil painting",
           "portrait of an old fisherman, (dramatic lighting:1.2), film grain, 85mm",
           ", ".join(["a busy market street in the rain with neon signs and reflections"] * 8)]  # two chunks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=["tiny", "sd15"], default="tiny")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8, help="SDWEB_BATCH_MAX with batching on")
    parser.add_argument("--wait-ms", type=int, default=30, help="SDWEB_BATCH_WAIT_MS")
    parser.add_argument("--users", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--seconds", type=float, default=30, help="measured time per user count")
    parser.add_argument("--standin-ms", type=float, default=0, help="a stand-in GPU's step time (bench/standin.py)")
    parser.add_argument("--compare", choices=["batching", "pipeline"], default="batching",
                        help="batching: SDWEB_BATCH_MAX 1 vs --batch; pipeline: finishing processes off vs on")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of every mode, interleaved")
    parser.add_argument("--stack", choices=["embedded", "production"], default="embedded",
                        help="manage.py up, or PostgreSQL + Redis + uvicorn + one prefork Celery worker")
    args = parser.parse_args()

    model = None
    if args.model == "sd15":
        sys.path.insert(0, str(ROOT))
        from bench.engine_gpu import build_sd15

        model = Path(tempfile.mkdtemp()) / "sd15-random"
        build_sd15(model)
    rows = []
    modes = [(1, None), (args.batch, None)] if args.compare == "batching" else [(args.batch, 0), (args.batch, None)]
    for _ in range(args.repeats):
        for batch, finishing in modes:
            with Studio(batch, args.wait_ms, model, finishing, args.standin_ms, args.stack, args.users) as studio:
                studio.submit_and_wait(studio.users[0], job(random.Random(0), args))  # loads the model
                for users in args.users:
                    rows.append(dict(batch=batch, finishing=finishing, users=users, **studio.measure(users, args)))
                    print(json.dumps(rows[-1]), flush=True)
    if args.compare == "pipeline":
        pipeline_table(rows, args)
        return
    print(f"\n{studio.device}: {args.model}, {args.size}x{args.size}, {args.steps} steps, Euler a (1 job in 10 DPM++ 2M "
          f"Karras), {args.seconds:.0f} s per row; batching off = SDWEB_BATCH_MAX 1, on = {args.batch}")
    print(f"{'users':>5}{'batch':>7}{'images/s':>10}{'p50 s':>8}{'p95 s':>8}{'GPU %':>7}{'CPU %':>7}{'mean batch':>12}"
          f"{'x images/s':>12}{'x p95':>8}")
    off = {r["users"]: r for r in rows if r["batch"] == 1}
    for r in sorted(rows, key=lambda r: (r["users"], r["batch"])):
        base = off[r["users"]]
        ratio = (f"{r['images_per_s'] / base['images_per_s']:>12.2f}{r['p95_s'] / base['p95_s']:>8.2f}"
                 if r["batch"] > 1 else "")
        print(f"{r['users']:>5}{r['batch']:>7}{r['images_per_s']:>10.2f}{r['p50_s']:>8.2f}{r['p95_s']:>8.2f}"
              f"{_pct(r['gpu_busy']):>7}{_pct(r['cpu_busy']):>7}{r['mean_batch']:>12.2f}{ratio}")
    if os.environ.get("OUT"):
        Path(os.environ["OUT"], "throughput.json").write_text(json.dumps(dict(device=studio.device, rows=rows)))


def pipeline_table(rows, args) -> None:
    """Medians over the repeats, finishing processes off and on side by side."""
    print(f"\nstand-in GPU {args.standin_ms:g} ms x batch^0.3 a step, {args.steps} steps, {args.size} px, batch up to "
          f"{args.batch}, {args.seconds:.0f} s per row, median of {args.repeats}; ceiling: standin_alone()")
    print(f"{'users':>5}{'finishing':>11}{'images/s':>10}{'ceiling':>9}{'of ceiling':>12}{'p50 s':>8}{'p95 s':>8}"
          f"{'stand-in %':>12}{'CPU %':>7}{'mean batch':>12}{'ETA error':>11}{'wait/ahead p95':>16}")
    for users in args.users:
        ceiling = standin_alone(users, args)
        for finishing in (0, None):
            mine = [r for r in rows if r["users"] == users and r["finishing"] == finishing]
            med = {k: statistics.median(r[k] for r in mine) for k in ("images_per_s", "p50_s", "p95_s", "standin_busy",
                                                                       "cpu_busy", "mean_batch")}
            errors = [r["eta_error"] for r in mine if r["eta_error"] is not None]
            med["eta"] = f"{100 * statistics.median(errors):.0f}%" if errors else "-"
            ahead = [r["wait_over_ahead_p95"] for r in mine if r.get("wait_over_ahead_p95") is not None]
            med["ahead"] = f"{statistics.median(ahead):.2f}" if ahead else "-"
            print(f"{users:>5}{'off' if finishing == 0 else 'on':>11}{med['images_per_s']:>10.2f}{ceiling:>9.2f}"
                  f"{med['images_per_s'] / ceiling:>12.2f}{med['p50_s']:>8.2f}{med['p95_s']:>8.2f}"
                  f"{100 * med['standin_busy']:>12.0f}{med['cpu_busy']:>7.0f}{med['mean_batch']:>12.2f}{med['eta']:>11}"
                  f"{med['ahead']:>16}")


def standin_alone(users: int, args, seconds: float | None = None) -> float:
    """Images/s the stand-in allows these users if it were the only thing taking time: the same
    users sending the same jobs (each user's seeded sequence), the queue's rule (oldest first; a
    run takes the first job and the later ones with its sampler, up to --batch images), a run
    taking the stand-in's time for its images (steps, the decode's two and the text encoder's
    tenth), the next run claimed the moment the last ends, and each user's next job arriving just
    after their last one ended (any delay at all, as a real client has: it misses that claim)."""
    seconds = seconds or args.seconds
    rngs = [random.Random(k) for k in range(users)]
    queue = [(0.0, k, job(rngs[k], args)) for k in range(users)]
    now = made = 0.0
    while now < seconds:
        ready = sorted(q for q in queue if q[0] <= now)
        if not ready:
            now = min(q[0] for q in queue)
            continue
        run, images = [], 0
        for q in ready:
            if q[2]["scheduler"] == ready[0][2]["scheduler"] and images + q[2]["num_images"] <= args.batch:
                run.append(q)
                images += q[2]["num_images"]
        now += (args.steps + 2 + 0.1) * args.standin_ms / 1000 * images ** 0.3
        made += images
        for q in run:
            queue.remove(q)
            queue.append((now + 1e-6, q[1], job(rngs[q[1]], args)))
    return made / now


def waits_over_work_ahead(jobs: list[dict], step_ms: float, steps: int) -> list[float]:
    """For each job that waited at least 1 s: its wait over the stand-in's time for the work done
    while it waited (what was left of the run going when it came, and the runs that started before
    its own). A run's stand-in time follows from its images (bench/standin.py: steps and a decode
    of two steps' work, each step_ms x images^0.3); a run is the jobs sharing a start time."""
    images = {}
    for j in jobs:
        images[j["started_at"]] = images.get(j["started_at"], 0) + len(j["images"])
    runs = sorted((datetime.fromisoformat(start), (steps + 2) * step_ms / 1000 * n ** 0.3) for start, n in images.items())
    ratios = []
    for j in jobs:
        came, began = datetime.fromisoformat(j["created_at"]), datetime.fromisoformat(j["started_at"])
        if (began - came).total_seconds() < 1:
            continue
        going = [(start, took) for start, took in runs if start <= came]
        work = max(0.0, going[-1][1] - (came - going[-1][0]).total_seconds()) if going else 0.0
        work += sum(took for start, took in runs if came < start < began)
        ratios.append((began - came).total_seconds() / work if work else float("inf"))
    return ratios


def _pct(value) -> str:
    return "-" if value is None else f"{value:.0f}"


def job(rng: random.Random, args) -> dict:
    """One user's next job: what people send, mostly compatible with each other's."""
    return {"prompt": rng.choice(PROMPTS), "negative_prompt": rng.choice(["", "blurry, low quality"]),
            "width": args.size, "height": args.size, "steps": args.steps,
            "guidance_scale": rng.choice([5, 6, 7, 7.5, 9]), "seed": rng.randrange(2**31),
            "scheduler": "DPM++ 2M Karras" if rng.random() < 0.1 else "Euler a",
            "num_images": 2 if rng.random() < 0.2 else 1}


class Studio:
    """`manage.py up` (or the production stack) in a fresh var folder, with users holding API keys and credits."""

    def __init__(self, batch: int, wait_ms: int, model: Path | None, finishing: int | None = None, standin_ms: float = 0,
                 stack: str = "embedded", rows_users: tuple = (1, 4, 8, 16)):
        self.var = Path(tempfile.mkdtemp(prefix="sdweb-throughput-"))
        self.standin, self.stack, self.rows_users = standin_ms > 0, stack, rows_users
        self.env = {**os.environ, "SDWEB_VAR_DIR": str(self.var), "SDWEB_BATCH_MAX": str(batch),
                    "BENCH_STANDIN_MS": str(standin_ms),
                    **({"SDWEB_FINISH_PROCESSES": str(finishing)} if finishing is not None else {}),
                    "SDWEB_BATCH_WAIT_MS": str(wait_ms), "SDWEB_API_RATE": "100000/min",
                    "SDWEB_ACTIVE_JOB_CAP": "100", "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": "sdweb.settings"}
        self.model, self.port = model, _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        manage = [sys.executable, "manage.py"]
        if self.stack == "production":
            self.production_services()
        subprocess.run(manage + ["migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        if self.model:
            subprocess.run(manage + ["add_model", "sd15-random", str(self.model), "--default"], cwd=ROOT, env=self.env,
                           check=True, stdout=subprocess.DEVNULL)
        # Every row has users of its own: the fair order puts users who ran many jobs lately last,
        # so users carried over from the row before would wait behind the newcomers.
        users = USERS.replace("COUNT", str(1 + sum(self.rows_users)))
        made = subprocess.run(manage + ["shell", "-c", users], cwd=ROOT, env=self.env, check=True, capture_output=True,
                              text=True)
        info = json.loads(made.stdout.strip().splitlines()[-1])
        self.users, self.device = info["users"], info["device"]
        self.fresh = iter(self.users[1:])  # users[0] warms the model up
        self.log = open(self.var / "up.log", "w")
        standin = [sys.executable, "bench/standin.py"] if self.standin else []
        if self.stack == "production":
            self.web = subprocess.Popen([sys.executable, "-m", "uvicorn", "sdweb.asgi:application", "--port",
                                         str(self.port), "--log-level", "warning", "--ws", "websockets-sansio",
                                         "--timeout-graceful-shutdown", "5"],
                                        cwd=ROOT, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
            worker = ["celery", "-A", "sdweb", "worker", "--pool=prefork", "--concurrency=1", "--loglevel=WARNING"]
            self.process = subprocess.Popen((standin or [sys.executable, "-m"]) + worker, cwd=ROOT, env=self.env,
                                            stdout=self.log, stderr=subprocess.STDOUT)
        else:
            self.process = subprocess.Popen((standin or manage) + ["up", "--port", str(self.port)], cwd=ROOT,
                                            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while not _answers(self.base + "/healthz"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("manage.py up did not start: see " + str(self.var / "up.log"))
            time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        for process in (self.process, getattr(self, "web", None)):
            if process is not None:
                process.terminate()
                process.wait(timeout=60)
        self.log.close()

    def production_services(self) -> None:
        """A fresh database on the local PostgreSQL and Redis database 8, as tests/production uses them."""
        import psycopg
        import redis

        database = f"sdweb_bench_{os.getpid()}"
        with psycopg.connect("postgres://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{database}"')
        redis.Redis.from_url("redis://127.0.0.1:6379/8").flushdb()
        self.env |= {"DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{database}",
                     "REDIS_URL": "redis://127.0.0.1:6379/8", "SECRET_KEY": "throughput-bench"}

    def call(self, key, path, body=None) -> dict:
        request = urllib.request.Request(self.base + path, data=json.dumps(body).encode() if body else None,
                                         headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def submit_and_wait(self, user, body) -> dict:
        """Submit through the REST API, then watch the job's websocket as the page does (no
        polling) until it ends; the job as the API then shows it."""
        from websockets.sync.client import connect

        key, session = user
        submitted = self.call(key, "/api/v1/jobs/", body)
        with connect(f"ws://127.0.0.1:{self.port}/ws/jobs/{submitted['id']}/", open_timeout=60,
                     additional_headers={"Cookie": f"sessionid={session}", "Origin": self.base}) as socket:
            while True:
                event = json.loads(socket.recv(timeout=600))
                if event["type"] in ("finished", "failed", "cancelled") or event.get("status") in (
                        "succeeded", "failed", "cancelled"):
                    break
        job = self.call(key, f"/api/v1/jobs/{submitted['id']}/")  # latency from the server's own timestamps
        return {**job, "eta_at_submit": submitted.get("queue_eta")}

    def measure(self, users: int, args) -> dict:
        stop, done, lock = time.monotonic() + args.seconds, [], threading.Lock()
        started = datetime.now().astimezone()

        mine = [next(self.fresh) for _ in range(users)]

        def user(k):
            rng = random.Random(k)
            while time.monotonic() < stop:
                finished = self.submit_and_wait(mine[k], job(rng, args))
                with lock:
                    done.append(finished)

        busy, standin = Busy(self.process.pid), self.standin_seconds()
        threads = [threading.Thread(target=user, args=(k,)) for k in range(users)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        gpu, cpu = busy.stop()
        standin = self.standin_seconds() - standin
        ended = max(datetime.fromisoformat(j["finished_at"]) for j in done)
        ok = [j for j in done if j["status"] == "succeeded"]
        latencies = sorted((datetime.fromisoformat(j["finished_at"]) - datetime.fromisoformat(j["created_at"]))
                           .total_seconds() for j in ok)
        waits = [((datetime.fromisoformat(j["started_at"]) - datetime.fromisoformat(j["created_at"])).total_seconds(),
                  j["eta_at_submit"]) for j in ok if j["eta_at_submit"] is not None]
        long_waits = [abs(eta - wait) / wait for wait, eta in waits if wait >= 1]
        ahead = sorted(waits_over_work_ahead(ok, args.standin_ms, args.steps)) if self.standin else []
        return dict(eta_error=statistics.median(long_waits) if long_waits else None, eta_waits=len(long_waits),
                    wait_over_ahead_p50=statistics.median(ahead) if ahead else None,
                    wait_over_ahead_p95=ahead[max(0, round(0.95 * len(ahead)) - 1)] if ahead else None,
                    eta_abs_s=statistics.median(abs(eta - wait) for wait, eta in waits) if waits else None,
                    images_per_s=sum(len(j["images"]) for j in ok) / (ended - started).total_seconds(),
                    p50_s=statistics.median(latencies), p95_s=latencies[max(0, round(0.95 * len(latencies)) - 1)],
                    jobs=len(ok), failed=len(done) - len(ok), gpu_busy=gpu, cpu_busy=cpu,
                    standin_busy=standin / (ended - started).total_seconds(),
                    mean_batch=statistics.mean(j.get("batch_size", 1) for j in ok))


    def standin_seconds(self) -> float:
        busy = self.var / "standin-busy"
        return float(busy.read_text() or 0) if busy.exists() else 0.0


class Busy:
    """GPU busy % (NVML's utilization, sampled) and the server process's CPU % (of one core)."""

    def __init__(self, pid):
        import psutil

        self.process, self.samples, self.running = psutil.Process(pid), [], True
        self.process.cpu_percent()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:  # no NVIDIA GPU (or no NVML): no GPU figure
            return
        while self.running:
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            time.sleep(0.1)

    def stop(self):
        self.running = False
        self.thread.join()
        return (statistics.mean(self.samples) if self.samples else None), self.process.cpu_percent()


USERS = """
import json, torch
from django.contrib.auth.models import User
from django.test import Client
from generation.library.checkpoints import checkpoint_ensure_test_model
from generation.credits.ledger import credits_change
from sdweb.shared.api_keys import api_key_create
checkpoint_ensure_test_model()
users = []
for k in range(COUNT):
    user = User.objects.create_user(f"user{k}")
    credits_change(user=user, kind="adjust", amount=10**6, reason="benchmark")
    browser = Client()
    browser.force_login(user)  # a signed-in page's session, for the job's websocket
    users.append((api_key_create(user=user, name="bench")[1], browser.cookies["sessionid"].value))
print(json.dumps({"users": users, "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"}))
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except (urllib.error.URLError, OSError):
        return False


if __name__ == "__main__":
    main()
