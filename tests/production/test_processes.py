"""A web process and a separate Celery worker process sharing PostgreSQL and Redis, as on a
deployment with GPU hosts: live progress crosses processes through channels_redis."""

import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from websockets.exceptions import InvalidStatus

from tests.support import Browser, http_sign_up, job_socket


def test_healthz_sees_postgresql_redis_and_the_channel_layer(deployment):
    assert json.loads(Browser(deployment.base).get("/healthz")[1]) == {
        "status": "ok", "database": "ok", "broker": "ok", "channel_layer": "ok"}


def test_progress_reaches_the_owner_from_a_worker_in_another_process(deployment):
    owner = http_sign_up(deployment.base, "owner")
    page = owner.get("/generate/")[1]
    checkpoint = re.search(r'<option value="(\d+)" selected>', page).group(1)
    url, _ = owner.post("/generate/", {"prompt": "across processes", "checkpoint": checkpoint, "width": 256,
                                       "height": 256, "steps": 30, "guidance_scale": 7, "scheduler": "Euler a",
                                       "seed": 3, "num_images": 1})
    job_id = url.split("job=")[1]
    events = []
    with job_socket(deployment, owner, job_id) as ws:
        while not events or events[-1]["type"] not in ("finished", "failed"):
            event = json.loads(ws.recv(timeout=120))
            events.append(event)
            if event.get("status") == "succeeded":
                break
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "finished" and "progress" in kinds, kinds
    steps = [e["step"] for e in events if e["type"] == "progress"]
    assert steps == sorted(steps) and steps[-1] == 30
    worker_figures = urllib.request.urlopen(f"http://127.0.0.1:{deployment.worker_metrics_port}/metrics").read()
    assert b"sdweb_worker_pipeline_loads_total 1.0" in worker_figures  # the worker's own process figures

    stranger = http_sign_up(deployment.base, "stranger")
    for browser, origin in ((stranger, "own"), (owner, "http://evil.example"), (owner, None)):
        with pytest.raises(InvalidStatus):
            with job_socket(deployment, browser, job_id, origin=origin) as ws:
                ws.recv(timeout=5)


def test_the_same_message_delivered_twice_makes_one_run_and_one_set_of_images(deployment):
    job_id = deployment.script("""
        from django.contrib.auth.models import User
        from generation.library.models import Checkpoint
        from generation.jobs.submit import job_submit
        from generation.tasks import run_next_job
        user = User.objects.create_user("twice")
        job = job_submit(user=user, params={"prompt": "twice", "checkpoint": Checkpoint.objects.get(),
                         "width": 256, "height": 256, "steps": 4, "guidance_scale": 7, "scheduler": "Euler a",
                         "seed": 1, "num_images": 2})
        run_next_job.delay()  # the broker delivers the same news a second time
        print(json.dumps(str(job.pk)))
    """)
    state = """
        SELECT j.status, j.attempts, (SELECT count(*) FROM gallery_image i WHERE i.job_id = j.id),
               (SELECT count(*) FROM generation_creditentry c WHERE c.job_id = j.id)
        FROM generation_job j WHERE j.id = %s
    """  # read in the database: a Django process per poll would take the CPU the worker needs
    deadline = time.monotonic() + 120
    while (result := deployment.query(state, job_id)[0])[0] in ("queued", "running"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert result == ("succeeded", 1, 2, 1)


def cancel(deployment, browser, job_id) -> int:
    """POST the job page's cancel form, as the page does; returns the HTTP status."""
    page = browser.get("/generate/")[1]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    request = urllib.request.Request(f"{deployment.base}/jobs/{job_id}/cancel/", headers={"Referer": deployment.base},
                                     data=urllib.parse.urlencode({"csrfmiddlewaretoken": token}).encode())
    try:
        with browser.opener.open(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_only_the_owner_cancels_and_the_worker_in_another_process_stops_within_a_step(deployment):
    owner, stranger = http_sign_up(deployment.base, "canceller"), http_sign_up(deployment.base, "meddler")
    page = owner.get("/generate/")[1]
    checkpoint = re.search(r'<option value="(\d+)" selected>', page).group(1)
    url, _ = owner.post("/generate/", {"prompt": "stop me", "checkpoint": checkpoint, "width": 512, "height": 512,
                                       "steps": 150, "guidance_scale": 7, "scheduler": "Euler a", "seed": 3,
                                       "num_images": 1})
    job_id = url.split("job=")[1]
    with job_socket(deployment, owner, job_id) as ws:
        while json.loads(ws.recv(timeout=120)).get("type") != "progress":
            pass
        assert cancel(deployment, stranger, job_id) == 404
        assert cancel(deployment, owner, job_id) == 200  # redirected back to the job page
        after = []
        while not after or after[-1]["type"] != "cancelled":
            after.append(json.loads(ws.recv(timeout=120)))
    steps = [e["step"] for e in after if e["type"] == "progress"]
    assert len(steps) <= 2 and steps[-1:] != [150], steps  # the step under way (and one in flight), no more
    state = deployment.script(f"""
        from generation.jobs.models import Job
        job = Job.objects.get(pk="{job_id}")
        print(json.dumps([job.status, job.images.count(), list(job.credit_entries.values_list("kind", flat=True))]))
    """)
    assert state[0] == "cancelled" and state[1] == 0 and sorted(state[2]) == ["charge", "refund"]


def test_the_web_process_keeps_its_connections_to_redis_across_requests(deployment):
    """Django makes a cache object per request under ASGI; each made a Redis connection pool of its
    own, so every throttle check opened a new connection (20 requests: 20 connections)."""
    import redis

    from tests.support import REDIS

    def connections_received() -> int:
        with redis.Redis.from_url(REDIS) as client:
            return client.info("stats")["total_connections_received"]

    before = connections_received()
    for _ in range(20):  # the public verify API: per-address throttles, then a 400 (no image)
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(urllib.request.Request(deployment.base + "/api/v1/verify", data=b"",
                                                          method="POST"), timeout=30)
    assert connections_received() - before < 5


def test_two_people_s_requests_at_once_on_the_kept_threads_are_each_their_own(deployment):
    """The web process runs requests on threads it keeps for later ones (sdweb.asgi.KeptThreads):
    two people's pages, many at once and one after another, each answered as its own person."""
    from concurrent.futures import ThreadPoolExecutor

    people = {name: http_sign_up(deployment.base, name) for name in ("kept-ann", "kept-bob")}

    def whose(name) -> str:
        return re.search(r"<h1>([^<]+)</h1>", people[name].get("/account/")[1]).group(1)

    with ThreadPoolExecutor(6) as pool:
        seen = list(pool.map(whose, ["kept-ann", "kept-bob"] * 15))
    assert seen == ["kept-ann", "kept-bob"] * 15


def test_a_page_then_its_static_files_sent_at_once_on_one_connection_are_each_answered(deployment):
    """Requests sent back to back on one connection (the next arrives while the last is answered):
    uvicorn starts the next inside the last one's context. With the kept threads, Django's static
    file handler took that ended context for its own and answered 500."""
    import socket

    paths = ("/accounts/login/", "/static/lightbox.js", "/static/sdweb.css", "/accounts/login/")
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=30) as connection:
        connection.sendall(b"".join(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for path in paths))
        received = b""
        while received.count(b"HTTP/1.1 ") < len(paths) and (chunk := connection.recv(65536)):
            received += chunk
    assert re.findall(rb"^HTTP/1.1 (\d+)", received, re.M) == [b"200"] * len(paths)
