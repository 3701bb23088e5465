"""Production on real PostgreSQL and Redis, with separate processes as on GPU hosts.

PostgreSQL (SDWEB_TEST_POSTGRES), Redis (SDWEB_TEST_REDIS) and, for the broker tests, RabbitMQ
(SDWEB_TEST_RABBITMQ) must be running; `.ci/run` starts them. Without them these tests skip with
the reason, unless SDWEB_REQUIRE_SERVICES=1 (CI sets it), which makes a missing service a failure."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import POSTGRES, RABBITMQ, REDIS, Production, free_port, missing_services, wait_until, web_answers

ROOT = Path(__file__).resolve().parents[2]


def _production(tmp_path_factory, broker: str = ""):
    """A fresh database, a clean Redis and, with `broker`, that broker instead of Redis's."""
    missing = missing_services(broker)
    if missing:
        reason = "production tests need " + " and ".join(missing) + " (see README: Services)"
        if os.environ.get("SDWEB_REQUIRE_SERVICES") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    import psycopg
    import redis

    database = f"sdweb_tests_{os.getpid()}{'_' + broker.split(':')[0] if broker else ''}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{database}"')
    redis.Redis.from_url(REDIS).flushdb()
    deployment = Production(tmp_path_factory.mktemp("production"), database, broker)
    if broker:  # RabbitMQ keeps an earlier run's messages: harmless (the Job table decides), but not this run's
        deployment.script("from sdweb.celery import app\napp.control.purge()\nprint('{}')")
    subprocess.run([sys.executable, "manage.py", "migrate", "--verbosity", "0"], cwd=ROOT, env=deployment.env,
                   check=True)
    yield deployment
    redis.Redis.from_url(REDIS).flushdb()
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def production(tmp_path_factory):
    yield from _production(tmp_path_factory)


@pytest.fixture(scope="session")
def rabbitmq_production(tmp_path_factory):
    """The same on RabbitMQ (SDWEB_TEST_RABBITMQ), the other supported broker."""
    yield from _production(tmp_path_factory, RABBITMQ)


@pytest.fixture(params=["redis", "rabbitmq"])
def any_broker(request):
    """The deployment on each supported broker, for the tests that prove a broker loses nothing."""
    return request.getfixturevalue("production" if request.param == "redis" else "rabbitmq_production")


@pytest.fixture(scope="module")
def deployment(production):
    """The web process and one GPU worker process of `production`, for the tests of one module."""
    production.script("from generation.library.checkpoints import checkpoint_ensure_test_model\n"
                      "checkpoint_ensure_test_model()\nprint('{}')")
    port = free_port()
    log = open(production.env["SDWEB_VAR_DIR"] + "/processes.log", "a")
    production.worker_metrics_port = free_port()
    web = production.web(port, log)
    worker = production.worker("gpu1", log, env={**production.env,
                                                  "SDWEB_WORKER_METRICS_PORT": str(production.worker_metrics_port)})
    production.base, production.port = f"http://127.0.0.1:{port}", port
    try:
        wait_until(lambda: web_answers(production.base), timeout=60)
        yield production
    finally:
        for process in (web, worker):
            process.terminate()
        for process in (web, worker):
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise
        log.close()
