"""Production on real PostgreSQL and Redis, with separate processes as on GPU hosts.

PostgreSQL (SDWEB_TEST_POSTGRES) and Redis (SDWEB_TEST_REDIS) must be running; `.ci/run` starts
them. Without them these tests skip with the reason, unless SDWEB_REQUIRE_SERVICES=1 (CI sets
it), which makes a missing service a failure."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = os.environ.get("SDWEB_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/test")
REDIS = os.environ.get("SDWEB_TEST_REDIS", "redis://127.0.0.1:6379/7")


def missing_services() -> list[str]:
    import psycopg
    import redis

    missing = []
    try:
        psycopg.connect(POSTGRES, connect_timeout=3).close()
    except psycopg.Error as error:
        missing.append(f"PostgreSQL at {POSTGRES} ({error.__class__.__name__})")
    try:
        redis.Redis.from_url(REDIS, socket_connect_timeout=3).ping()
    except redis.RedisError as error:
        missing.append(f"Redis at {REDIS} ({error.__class__.__name__})")
    return missing


class Production:
    """A fresh database on the real PostgreSQL, a clean Redis database, and the environment that
    every process of this deployment (web, workers, scripts) runs with."""

    def __init__(self, var_dir: Path, database: str):
        base = POSTGRES.rsplit("/", 1)[0]
        self.env = {**{k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"},
                    "DJANGO_SETTINGS_MODULE": "sdweb.settings",
                    "DATABASE_URL": f"{base}/{database}", "REDIS_URL": REDIS, "SDWEB_VAR_DIR": str(var_dir),
                    "SECRET_KEY": "production-tests-secret", "SDWEB_PREVIEW_INTERVAL": "0",
                    "SDWEB_ACTIVE_JOB_CAP": "100", "PYTHONUNBUFFERED": "1"}

    def web(self, port: int, log) -> subprocess.Popen:
        """The ASGI web process (pages, API, websockets) as deployed."""
        return subprocess.Popen([sys.executable, "-m", "uvicorn", "sdweb.asgi:application", "--host", "127.0.0.1",
                                 "--port", str(port), "--log-level", "warning", "--ws", "websockets-sansio",
                                 "--timeout-graceful-shutdown", "5"],
                                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)

    def worker(self, name: str, log=subprocess.DEVNULL, env: dict | None = None) -> subprocess.Popen:
        """A GPU host's Celery worker: prefork, one pool process."""
        return subprocess.Popen([sys.executable, "-m", "celery", "-A", "sdweb", "worker", "--pool=prefork",
                                 "--concurrency=1", "--loglevel=WARNING", "-n", f"{name}@%h"],
                                cwd=ROOT, env=env or self.env, stdout=log, stderr=subprocess.STDOUT)

    def script(self, code: str) -> dict:
        """Run Python with Django set up against this deployment; it prints one JSON object."""
        program = "import django, json\ndjango.setup()\n" + textwrap.dedent(code)
        result = subprocess.run([sys.executable, "-c", program], cwd=ROOT, env=self.env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])


def web_answers(base: str) -> bool:
    """Whether the web process at `base` answers /healthz yet."""
    from tests.sdweb.test_up import Browser

    try:
        Browser(base).get("/healthz")
        return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def production(tmp_path_factory):
    missing = missing_services()
    if missing:
        reason = "production tests need " + " and ".join(missing) + " (see README: Services)"
        if os.environ.get("SDWEB_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg
    import redis

    database = f"sdweb_tests_{os.getpid()}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(REDIS).flushdb()
    deployment = Production(tmp_path_factory.mktemp("production"), database)
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=deployment.env,
                   check=True)
    yield deployment
    redis.Redis.from_url(REDIS).flushdb()
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
