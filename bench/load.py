"""Many people at once on the production stack: locust drives 200 simulated people for 10 minutes.

Starts what README's "Deploying" starts, on this machine: a fresh PostgreSQL database (filled at
size first by `manage.py fill_at_size`: 1 000 users' 100 000 images and 1 000 000 audit rows),
Redis, uvicorn (two worker processes) and two Celery workers on the stand-in GPU (bench/standin.py, as
bench/throughput.py uses it), with SDWEB_ENV=production behind a "proxy" (each simulated person
comes from an address of its own in X-Forwarded-For, with X-Forwarded-Proto: https). Then locust
(in this process, loopback only):
- people sign in and, between pauses, browse their gallery and Explore (older pages too), open an
  image page and download its PNG, and submit jobs through the form, the REST API, A1111's
  txt2img and OpenAI's images API; form and REST jobs are watched over their websocket as the
  page does, one in ten cancelled while it runs, and their images downloaded;
- a few staff review the audit log (newest, one user, a search) and the dashboard;
- a few abusers guess passwords, upload a decompression bomb, and flood the API.
When the time is up, the queue drains and the database is checked. It prints requests/s,
p50/p95/p99 per page and endpoint, 5xx count, 429s and whether each had Retry-After, how late the
websocket's progress events arrived (their `sent` time to their arrival), jobs lost, and accounts
whose balance is not their ledger's sum or jobs whose charges don't match how they ended.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/load.py --users 200 --minutes 10
"""

import locust  # noqa: F401, I001 (first: it patches the standard library for gevent)

import argparse
import base64
import io
import itertools
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from html.parser import HTMLParser
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import gevent
import websocket
from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import PROMPTS, _answers, _free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "load-test-pass-123"
STAFF, ABUSERS = 3, 3
SETUP = """
import json
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from generation.library.checkpoints import checkpoint_ensure_test_model
from generation.credits.ledger import credits_change
from sdweb.shared.api_keys import api_key_create
checkpoint = checkpoint_ensure_test_model()
password = make_password(PASSWORD)  # one hash for all: 200 separate ones take minutes here
accounts = []
for k in range(COUNT):
    user = User.objects.create(username=f"load{k}", password=password, is_staff=k < STAFF, is_superuser=k < STAFF)
    credits_change(user=user, kind="adjust", amount=100000, reason="load test")
    accounts.append((user.username, api_key_create(user=user, name="load")[1]))
print(json.dumps({"accounts": accounts, "checkpoint": checkpoint.pk}))
"""


class Run:
    """What the simulated people share: their accounts, and what they saw."""
    accounts: dict[str, list] = {}
    checkpoint = 0
    steps = 20
    submitted: list[str] = []  # job ids, as the server answered them
    progress_late: list[tuple] = []  # (when, seconds from a progress event's `sent` to its arrival)
    timings: list[tuple] = []  # (when, request name, milliseconds)
    addresses = itertools.count(1)
    errors: Counter = Counter()  # 5xx by request name
    failed: Counter = Counter()  # what the client took as failed (a 4xx or 5xx it didn't expect), by name
    too_many: Counter = Counter()  # (name, whether it had Retry-After)
    failures: list[str] = []  # the first few, to read


class BehindTLS(DefaultCookiePolicy):
    """The browser speaks HTTPS to the TLS proxy, so it sends the studio's Secure cookies."""

    def return_ok_secure(self, cookie, request):
        return True


class Visitor(FastHttpUser):
    abstract = True
    kind = ""
    wait_time = between(5, 15)  # people look at what they get

    def on_start(self):
        self.username, self.key = Run.accounts[self.kind].pop()
        self.client.cookiejar.set_policy(BehindTLS())
        n = next(Run.addresses)
        self.headers = {"X-Forwarded-For": f"10.{n // 250}.{n % 250}.7", "X-Forwarded-Proto": "https"}
        self.sign_in(self.username, PASSWORD, "POST /accounts/login/")

    def page(self, path, name=None, **kwargs):
        return self.client.get(path, name=name or path, headers=self.headers, **kwargs)

    def api(self, method, path, name, body=None, **kwargs):
        return self.client.request(method, path, name=name, json=body,
                                   headers={**self.headers, "Authorization": f"Bearer {self.key}"}, **kwargs)

    def cookie(self, name) -> str:
        return next((c.value for c in self.client.cookiejar if c.name == name), "")

    def form(self, path, name, fields, **kwargs):
        return self.client.post(path, name=name, data={**fields, "csrfmiddlewaretoken": self.cookie("csrftoken")},
                                headers={**self.headers, "Referer": f"https://{self.host.split('//')[1]}{path}"},
                                allow_redirects=False, **kwargs)

    def sign_in(self, username, password, name, **kwargs):
        self.page("/accounts/login/", name="GET /accounts/login/")
        return self.form("/accounts/login/", name, {"username": username, "password": password}, **kwargs)


class Person(Visitor):
    kind = "people"

    def on_start(self):
        super().on_start()
        self.rng = random.Random(self.username)
        self.seen: list[str] = []  # image pages met while browsing

    def browse(self, path, name):
        response = self.page(path, name)
        self.seen = re.findall(r'href="(/images/[0-9a-f]+/)"', response.text or "")[:24] or self.seen
        older = re.search(r'href="\?before=([^"&]+)"', response.text or "")
        if older and self.rng.random() < 0.5:
            self.page(f"{path}?before={older.group(1)}", name + " older page")

    @task(3)
    def gallery(self):
        self.browse("/gallery/", "GET /gallery/")

    @task(3)
    def explore(self):
        self.browse("/explore/", "GET /explore/")

    @task(2)
    def image(self):
        if self.seen:
            path = self.rng.choice(self.seen)
            self.page(path, "GET /images/[id]/")
            self.page(path.rstrip("/") + ".png", "GET /images/[id].png")

    @task(1)
    def api_reads(self):
        self.api("GET", "/api/v1/jobs/", "GET /api/v1/jobs/")
        self.api("GET", "/api/v1/credits/", "GET /api/v1/credits/")

    @task(3)
    def generate(self):
        body = {"prompt": self.rng.choice(PROMPTS), "width": 256, "height": 256, "steps": Run.steps,
                "seed": self.rng.randrange(2**31), "guidance_scale": self.rng.choice([5, 7, 9])}
        dialect = self.rng.choices(["form", "rest", "a1111", "openai"], [35, 35, 15, 15])[0]
        if dialect == "a1111":  # waits for the images, as webuiapi does
            self.api("POST", "/sdapi/v1/txt2img", "POST /sdapi/v1/txt2img (waits for the images)",
                     {"cfg_scale": body.pop("guidance_scale"), **body}, timeout=600)
            return
        if dialect == "openai":
            self.api("POST", "/v1/images/generations", "POST /v1/images/generations (waits for the images)",
                     {"prompt": body["prompt"], "size": "256x256", "n": 1}, timeout=600)
            return
        if dialect == "form":
            page = self.page("/generate/", "GET /generate/")
            response = self.form("/generate/", "POST /generate/", {**form_defaults(page.text or ""), **body})
            found = re.search(r"[?&]job=([0-9a-f-]{36})", response.headers.get("Location") or "")
            if not found:
                return
            job_id = found.group(1)
            self.page(f"/generate/?job={job_id}", "GET /generate/?job=[id] (the page watching it)")
        else:
            response = self.api("POST", "/api/v1/jobs/", "POST /api/v1/jobs/", body)
            if response.status_code != 201:
                return
            job_id = response.json()["id"]
        Run.submitted.append(job_id)
        self.watch(job_id, dialect, cancel=self.rng.random() < 0.1)

    def watch(self, job_id, dialect, cancel):
        """The job page's websocket until the job ends, then its images."""
        socket = websocket.create_connection(f"{self.host.replace('http', 'ws')}/ws/jobs/{job_id}/", timeout=600,
                                             cookie=f"sessionid={self.cookie('sessionid')}",
                                             origin=self.host.replace("http", "https"),
                                             header=[f"{k}: {v}" for k, v in self.headers.items()])
        images = []
        try:
            while True:
                event = json.loads(socket.recv())
                if event["type"] == "progress":
                    Run.progress_late.append((time.monotonic(), time.time() - event["sent"]))
                    if cancel and event["step"] >= 2:
                        cancel = False
                        if dialect == "rest":
                            self.api("POST", f"/api/v1/jobs/{job_id}/cancel/", "POST /api/v1/jobs/[id]/cancel/")
                        else:
                            self.form(f"/jobs/{job_id}/cancel/", "POST /jobs/[id]/cancel/", {})
                if event["type"] in ("finished", "failed", "cancelled") or event.get("status") in (
                        "succeeded", "failed", "cancelled"):
                    images = event.get("images") or []
                    break
        finally:
            socket.close()
        for image in images:
            self.page(image["url"], "GET /images/[id].png")


class Staff(Visitor):
    kind, fixed_count = "staff", STAFF

    @task
    def audit(self):
        base = "/admin/generation/promptaudit/"
        self.page(base, "GET audit review")
        self.page(f"{base}?username=load{random.randrange(STAFF + ABUSERS, 200)}", "GET audit review, one user")
        self.page(f"{base}?q={random.choice(['lighthouse', 'fox', 'fisherman'])}", "GET audit review, search")

    @task
    def dashboard(self):
        self.page("/staff/dashboard/", "GET /staff/dashboard/")


class Abuser(Visitor):
    kind, fixed_count = "abusers", ABUSERS
    wait_time = between(1, 5)

    @task
    def guess_passwords(self):
        for guess in range(5):
            with self.sign_in("admin", f"guess{guess}", "abuse: wrong password", catch_response=True) as response:
                expected(response, (200, 429))

    @task
    def bomb(self):
        with self.api("POST", "/sdapi/v1/img2img", "abuse: 25-megapixel PNG of 5 KB",
                      {"prompt": "x", "init_images": [BOMB]}, catch_response=True) as response:
            expected(response, (400, 413, 422, 429))

    @task
    def flood(self):
        for _ in range(40):
            with self.api("GET", "/api/v1/credits/", "abuse: API flood", catch_response=True) as response:
                expected(response, (200, 429))


class FormDefaults(HTMLParser):
    """What a browser would send from the generate form untouched: its inputs' values, each
    select's chosen option, its text areas."""

    def __init__(self):
        super().__init__()
        self.fields, self.select, self.textarea = {}, None, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "input" and a.get("name") and a.get("type") not in ("file", "submit", "button") and (
                a.get("type") not in ("checkbox", "radio") or "checked" in a):
            self.fields.setdefault(a["name"], a.get("value") or "")
        elif tag == "select" and a.get("name"):
            self.select = a["name"]
        elif tag == "option" and self.select and (self.select not in self.fields or "selected" in a):
            self.fields[self.select] = a.get("value", "")
        elif tag == "textarea" and a.get("name"):
            self.textarea = a["name"]
            self.fields[self.textarea] = ""

    def handle_endtag(self, tag):
        self.select = None if tag == "select" else self.select
        self.textarea = None if tag == "textarea" else self.textarea

    def handle_data(self, data):
        if self.textarea:
            self.fields[self.textarea] += data


def form_defaults(html: str) -> dict:
    parser = FormDefaults()
    parser.feed(html)
    parser.fields.pop("csrfmiddlewaretoken", None)
    return parser.fields


def expected(response, codes):
    """An abuser's request succeeded when the studio refused it as it should, with no 5xx."""
    if response.status_code in codes:
        response.success()
    else:
        response.failure(f"got {response.status_code}")


def _bomb() -> str:
    from PIL import Image

    picture, buffer = Image.new("1", (5000, 5000)), io.BytesIO()
    picture.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


BOMB = _bomb()


@events.request.add_listener
def _seen(name, response, exception, response_time, **kwargs):
    Run.timings.append((time.monotonic(), name, response_time))
    Run.failed[name] += bool(exception)
    status = getattr(response, "status_code", 0) or 0
    if status >= 500:
        Run.errors[name] += 1
    if exception and status != 429 and len(Run.failures) < 20:
        Run.failures.append(f"{name}: {status} {str(exception)[:200]}")
    if status == 429:
        Run.too_many[name, bool(response.headers.get("Retry-After"))] += 1


class Stack:
    """The production deployment on this machine, in a fresh database."""

    def __init__(self, args):
        self.var = Path(tempfile.mkdtemp(prefix="sdweb-load-"))
        self.port, self.args = _free_port(), args
        self.base = f"http://127.0.0.1:{self.port}"
        database = f"sdweb_load_{os.getpid()}"
        self.database_url = f"postgres://postgres@127.0.0.1:5432/{database}"
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sdweb.settings", "DATABASE_URL": self.database_url,
                    "REDIS_URL": "redis://127.0.0.1:6379/8", "SECRET_KEY": "load-bench", "SDWEB_ENV": "production",
                    "SDWEB_ALLOWED_HOSTS": "127.0.0.1", "SDWEB_TRUSTED_PROXIES": "127.0.0.1",
                    "SDWEB_VAR_DIR": str(self.var), "BENCH_STANDIN_MS": str(args.standin_ms),
                    "SDWEB_BATCH_MAX": "8", "PYTHONUNBUFFERED": "1"}
        self.database, self.processes = database, []

    def __enter__(self):
        import psycopg
        import redis

        with psycopg.connect("postgres://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.database}"')
        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        manage = [sys.executable, "manage.py"]
        subprocess.run(manage + ["migrate", "-v", "0"], cwd=ROOT, env=self.env, check=True)
        if self.args.fill_images:
            started = time.monotonic()
            subprocess.run(manage + ["fill_at_size", "--images", str(self.args.fill_images), "--audit",
                                     str(self.args.fill_images * 10)], cwd=ROOT, env=self.env, check=True)
            print(f"filled {self.args.fill_images} images in {time.monotonic() - started:.0f} s", flush=True)
        setup = SETUP.replace("COUNT", str(self.args.users)).replace("PASSWORD", repr(PASSWORD)) \
            .replace("STAFF", str(STAFF))
        made = subprocess.run(manage + ["shell", "-c", setup], cwd=ROOT, env=self.env, check=True,
                              capture_output=True, text=True)
        info = json.loads(made.stdout.strip().splitlines()[-1])
        accounts = [tuple(a) for a in info["accounts"]]
        Run.accounts = {"staff": accounts[:STAFF], "abusers": accounts[STAFF:STAFF + ABUSERS],
                        "people": accounts[STAFF + ABUSERS:]}
        Run.checkpoint = info["checkpoint"]
        self.log = open(self.var / "stack.log", "w")
        self.start([sys.executable, "-m", "uvicorn", "sdweb.asgi:application", "--host", "127.0.0.1", "--port",
                    str(self.port), "--no-proxy-headers", "--timeout-graceful-shutdown", "5", "--log-level", "warning",
                    "--workers", str(self.args.web)])
        for k in range(self.args.workers):
            self.start(["nice", "-n", str(self.args.workers_nice), sys.executable, "bench/standin.py", "celery", "-A",
                        "sdweb", "worker", "--pool=prefork", "--concurrency=1", "--loglevel=WARNING", "-n", f"gpu{k}@%h"])
        deadline = time.monotonic() + 120
        while not _answers(self.base + "/healthz"):
            if time.monotonic() > deadline:
                raise RuntimeError("the web process did not start: see " + str(self.var / "stack.log"))
            time.sleep(0.5)
        return self

    def start(self, command):
        self.processes.append(subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=self.log,
                                               stderr=subprocess.STDOUT))

    def query(self, sql, *params):
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            process.wait(timeout=60)
        self.log.close()
        if not exc[0]:
            import psycopg

            with psycopg.connect("postgres://postgres@127.0.0.1:5432/test", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')


def cpu_seconds(stack) -> Counter:
    """CPU seconds used so far by each part: the web process, the workers (with their pool and
    finishing processes), PostgreSQL, Redis and this load generator."""
    import psutil

    parts = [("web", psutil.Process(stack.processes[0].pid))] + [
        ("workers", psutil.Process(p.pid)) for p in stack.processes[1:]] + [("load generator", psutil.Process())]
    parts += [(p.info["name"], p) for p in psutil.process_iter(["name"]) if p.info["name"] in ("postgres", "redis-server")]
    used = Counter()
    for part, process in parts:
        for one in [process] + (process.children(recursive=True) if part in ("web", "workers") else []):
            try:
                times = one.cpu_times()
            except psutil.NoSuchProcess:  # it ended since it was listed (a database connection closing)
                continue
            used[part] += times.user + times.system
    return used


def traffic(stack) -> Counter:
    """What the services did so far: PostgreSQL's commits and rows written, Redis's commands (broker,
    channel layer, cache and throttles together), bytes in storage."""
    (commits, inserted, updated, deleted), = stack.query(
        "SELECT xact_commit, tup_inserted, tup_updated, tup_deleted FROM pg_stat_database WHERE datname = %s",
        stack.database)
    import redis

    info = redis.Redis.from_url(stack.env["REDIS_URL"]).info("stats")
    stored = sum(f.stat().st_size for f in (stack.var / "media").rglob("*") if f.is_file())
    return Counter({"database commits": commits, "rows written": inserted + updated + deleted,
                    "Redis commands": info["total_commands_processed"], "storage bytes": stored})


def checks(stack, drain_s: float) -> dict:
    """After the run: the queue drained, every submitted job ended, and every credit accounted for."""
    deadline = time.monotonic() + drain_s
    while stack.query("SELECT count(*) FROM generation_job WHERE status IN ('queued', 'running')")[0][0]:
        if time.monotonic() > deadline:
            break
        time.sleep(2)
    ended = dict(stack.query("SELECT id::text, status FROM generation_job"))
    lost = [j for j in Run.submitted if ended.get(j) not in ("succeeded", "failed", "cancelled")]
    unbalanced = stack.query("""
        SELECT a.user_id FROM generation_creditaccount a JOIN auth_user u ON u.id = a.user_id
        WHERE u.username LIKE 'load%%'
          AND a.balance <> (SELECT coalesce(sum(amount), 0) FROM generation_creditentry e WHERE e.account_id = a.id)""")
    mischarged = stack.query("""
        SELECT j.id FROM generation_job j JOIN auth_user u ON u.id = j.user_id
        WHERE u.username LIKE 'load%%' AND (SELECT coalesce(sum(amount), 0) FROM generation_creditentry e
                                           WHERE e.job_id = j.id)
              <> CASE WHEN j.status = 'succeeded' THEN -j.cost ELSE 0 END""")
    statuses = Counter(status for (status,) in stack.query(
        "SELECT j.status FROM generation_job j JOIN auth_user u ON u.id = j.user_id WHERE u.username LIKE 'load%%'"))
    return dict(lost=len(lost), unbalanced=len(unbalanced), mischarged=len(mischarged), jobs=dict(statuses),
                images=stack.query("SELECT count(*) FROM gallery_image i JOIN auth_user u ON u.id = i.owner_id "
                                   "WHERE u.username LIKE 'load%%'")[0][0])


def pct(values, q):
    values = sorted(values)
    return values[round(q * (len(values) - 1))] if values else float("nan")


def report(seconds, signed_in, outcome) -> None:
    """Per request name: count, p50/p95/p99 over the whole run, and p95 once everyone has signed in
    (password hashing during the ramp is the heaviest work the web does)."""
    times: dict[str, list] = {}
    for at, name, ms in Run.timings:
        times.setdefault(name, []).append((at, ms))
    print(f"\n{len(Run.timings)} requests in {seconds:.0f} s: {len(Run.timings) / seconds:.1f} requests/s")
    print(f"{'request':56} {'count':>6} {'failed':>6} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'p95 after ramp':>15}")
    for name, seen in sorted(times.items()):
        all_ms, steady = [ms for _, ms in seen], [ms for at, ms in seen if at > signed_in]
        print(f"{name[:56]:56} {len(seen):6d} {Run.failed[name]:6d} {pct(all_ms, .5):7.0f} {pct(all_ms, .95):7.0f} "
              f"{pct(all_ms, .99):7.0f} {pct(steady, .95):15.0f}")
    reads = {name: seen for name, seen in times.items() if name.startswith("GET ")}
    for label, since in (("whole run", 0), ("after everyone signed in", signed_in)):
        worst = max(reads, key=lambda n: pct([ms for at, ms in reads[n] if at > since], .95))
        print(f"pages and API reads, {label}: worst p95 {pct([ms for at, ms in reads[worst] if at > since], .95):.0f} ms "
              f"({worst}); all of them together p95 {pct([ms for n in reads for at, ms in reads[n] if at > since], .95):.0f} ms")
    print(f"5xx: {sum(Run.errors.values())} {dict(Run.errors) or ''}")
    print("429s: " + ", ".join(f"{name} {n} ({'with' if after else 'WITHOUT'} Retry-After)"
                               for (name, after), n in sorted(Run.too_many.items())))
    print("\n".join(Run.failures))
    late = [seconds for _, seconds in Run.progress_late]
    print(f"websocket progress events: {len(late)}, late p50 {1000 * pct(late, .5):.0f} ms, p95 {1000 * pct(late, .95):.0f} "
          f"ms, p99 {1000 * pct(late, .99):.0f} ms; after the ramp p95 "
          f"{1000 * pct([s for at, s in Run.progress_late if at > signed_in], .95):.0f} ms")
    print(f"jobs: {outcome['jobs']}, images made {outcome['images']}; lost {outcome['lost']} of "
          f"{len(Run.submitted)} watched; accounts whose balance is not their ledger's sum: {outcome['unbalanced']}; "
          f"jobs charged other than they ended: {outcome['mischarged']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200, help="simulated people, staff and abusers included")
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--spawn-rate", type=float, default=2, help="people starting per second")
    parser.add_argument("--web", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument("--workers", type=int, default=2, help="Celery workers, each with a stand-in GPU")
    parser.add_argument("--workers-nice", type=int, default=0,
                        help="the workers' nice level: 10 gives the web the cores first, as separate GPU hosts would")
    parser.add_argument("--standin-ms", type=float, default=25, help="the stand-in GPU's UNet step")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--fill-images", type=int, default=100_000, help="images (and 10x audit rows) filled first")
    args = parser.parse_args()
    Run.steps = args.steps
    with Stack(args) as stack:
        print(f"stack up at {stack.base} ({stack.var}); {args.users} users for {args.minutes} min", flush=True)
        env = Environment(user_classes=[Person, Staff, Abuser], host=stack.base, events=events)
        runner = env.create_local_runner()
        started, cpu, before = time.monotonic(), cpu_seconds(stack), traffic(stack)
        runner.start(args.users, spawn_rate=args.spawn_rate)
        gevent.spawn_later(args.minutes * 60, runner.quit)
        if not runner.greenlet.join(timeout=args.minutes * 60 + 120):  # a person stuck in a call doesn't hold the report back
            print(f"{runner.user_count} simulated people had not stopped 2 minutes after the end; reported without them")
        seconds = time.monotonic() - started
        cpu = cpu_seconds(stack) - cpu
        outcome = checks(stack, drain_s=300)
        report(seconds, started + args.users / args.spawn_rate + 10, outcome)
        print(f"CPU over the run (of {os.cpu_count()} cores): " + ", ".join(
            f"{part} {used / seconds:.2f}" for part, used in cpu.most_common()))
        jobs, images = sum(outcome["jobs"].values()), outcome["images"]
        print(f"per job ({jobs}, {images} images), drain included: " + ", ".join(
            f"{name} {count / jobs:.1f}" for name, count in (traffic(stack) - before).items())
            + f"; websocket progress events {len(Run.progress_late) / len(Run.submitted):.1f} per watched job")


if __name__ == "__main__":
    main()
