"""What one request costs the web process: CPU milliseconds per page, one request at a time.

Under load the web's p95 is mostly its requests queueing for the CPU, so what each request costs
is what to shrink; this measures it without the noise of a loaded machine. Starts uvicorn (one
process, SDWEB_ENV=production behind a "TLS proxy", as bench/load.py does) from each source tree
given — this checkout, and with `--tree` another, such as a git worktree of an older commit — all
on one fresh PostgreSQL database filled by `manage.py fill_at_size`. A filled user, made staff,
asks for each page `--requests` times a round; rounds alternate between the trees. Prints, per
page and tree, the median over rounds of the web process's CPU time per request (and wall time).

    .venv/bin/python bench/request_cpu.py
    git worktree add /tmp/old <commit> && .venv/bin/python bench/request_cpu.py --tree /tmp/old
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import _answers, _free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POSTGRES = os.environ.get("SDWEB_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
SETUP = """
import json
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from gallery.models import Image
from generation.jobs.models import Job
user = User.objects.filter(username__startswith="size-").order_by("pk").first()
user.is_staff = user.is_superuser = True
user.save()
session = SessionStore()
session["_auth_user_id"], session["_auth_user_backend"] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
session["_auth_user_hash"] = user.get_session_auth_hash()
session.create()
image = Image.objects.filter(owner=user).order_by("-created_at").first()
job = Job.objects.filter(user=user).order_by("-created_at").first()
print(json.dumps({"session": session.session_key, "user": user.username, "image": image.hex_id, "job": str(job.pk)}))
"""
PAGES = {
    "studio": "/generate/",
    "studio watching a job": "/generate/?job={job}",
    "gallery": "/gallery/",
    "explore": "/explore/",
    "image page": "/images/{image}/",
    "image png": "/images/{image}.png",
    "api jobs": "/api/v1/jobs/",
    "api credits": "/api/v1/credits/",
    "audit review": "/admin/generation/promptaudit/",
    "audit, one user": "/admin/generation/promptaudit/?username={user}",
    "audit search": "/admin/generation/promptaudit/?q=lighthouse",
    "dashboard": "/staff/dashboard/",
}


class Server:
    """uvicorn from one source tree, one process."""

    def __init__(self, tree: Path, env: dict, log):
        self.tree, self.port = tree, _free_port()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "sdweb.asgi:application", "--host", "127.0.0.1", "--port",
             str(self.port), "--no-proxy-headers", "--log-level", "warning"],
            cwd=tree, env={**env, "PYTHONPATH": str(tree)}, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while not _answers(f"http://127.0.0.1:{self.port}/healthz"):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"uvicorn from {tree} did not start")
            time.sleep(0.3)
        self.cpu = psutil.Process(self.process.pid)
        self.connection = http.client.HTTPConnection("127.0.0.1", self.port)

    def get(self, path: str, headers: dict) -> int:
        self.connection.request("GET", path, headers=headers)
        response = self.connection.getresponse()
        response.read()
        return response.status

    def seconds(self) -> float:
        times = self.cpu.cpu_times()
        return times.user + times.system


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", action="append", default=[], help="another source tree to measure beside this one")
    parser.add_argument("--images", type=int, default=2000, help="filled images (and 10x audit rows)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20, help="requests per page per round")
    parser.add_argument("--page", action="append", choices=sorted(PAGES), help="only these pages")
    args = parser.parse_args()
    trees = [ROOT] + [Path(tree).resolve() for tree in args.tree]
    pages = {name: PAGES[name] for name in args.page or PAGES}

    import psycopg

    database = f"sdweb_cpu_{os.getpid()}"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "sdweb.settings", "SECRET_KEY": "request-cpu",
           "DATABASE_URL": POSTGRES.rsplit("/", 1)[0] + "/" + database, "REDIS_URL": "redis://127.0.0.1:6379/9",
           "SDWEB_ENV": "production", "SDWEB_ALLOWED_HOSTS": "127.0.0.1", "SDWEB_TRUSTED_PROXIES": "127.0.0.1",
           "SDWEB_API_RATE": "1000000/min", "SDWEB_VAR_DIR": tempfile.mkdtemp(prefix="sdweb-cpu-")}
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{database}"')
    servers = []
    try:
        manage = [sys.executable, "manage.py"]
        subprocess.run(manage + ["migrate", "-v", "0"], cwd=ROOT, env=env, check=True)
        subprocess.run(manage + ["fill_at_size", "--images", str(args.images), "--audit", str(args.images * 10)],
                       cwd=ROOT, env=env, check=True)
        made = subprocess.run(manage + ["shell", "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True,
                              text=True)
        facts = json.loads(made.stdout.strip().splitlines()[-1])
        headers = {"Cookie": f"sessionid={facts['session']}", "X-Forwarded-Proto": "https",
                   "X-Forwarded-For": "203.0.113.7", "Host": "127.0.0.1"}
        log = open(Path(env["SDWEB_VAR_DIR"]) / "web.log", "w")
        servers = [Server(tree, env, log) for tree in trees]
        results = {(name, server.tree): ([], []) for name in pages for server in servers}
        for server in servers:  # warm: templates compiled, connections made
            for path in pages.values():
                status = server.get(path.format(**facts), headers)
                assert status == 200, (server.tree, path, status)
        for round_ in range(args.rounds):
            for name, path in pages.items():
                for server in servers if round_ % 2 == 0 else servers[::-1]:
                    cpu, wall = server.seconds(), time.perf_counter()
                    for _ in range(args.requests):
                        server.get(path.format(**facts), headers)
                    wall, cpu = time.perf_counter() - wall, server.seconds() - cpu
                    results[name, server.tree][0].append(1000 * cpu / args.requests)
                    results[name, server.tree][1].append(1000 * wall / args.requests)
    finally:
        for server in servers:
            server.process.terminate()
            server.process.wait(timeout=30)
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"\n{args.images} images; {args.rounds} rounds of {args.requests} requests a page; median per request")
    print(f"{'page':<24}" + "".join(f"{str(tree)[-22:]:>24}" for tree in trees))
    for name in pages:
        cells = [results[name, tree] for tree in trees]
        print(f"{name:<24}" + "".join(f"{statistics.median(cpu):>9.1f} ms CPU {statistics.median(wall):>5.1f} wall"
                                      for cpu, wall in cells))


if __name__ == "__main__":
    main()
