"""The whole flow: HTTP submit -> the real Celery task on the test model -> events over the
websocket in order -> images stored -> credits charged once (or refunded once)."""

import asyncio
import io
import shutil

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.files.storage import default_storage
from PIL import Image as PILImage

from gallery.models import Image
from generation.engine import parse_parameters, read_watermark
from generation.jobs import live
from generation.jobs.models import Job
from generation.jobs.queue import job_cancel, job_claim
from generation.jobs.submit import job_submit
from generation.tasks import run_next_job
from sdweb.asgi import application
from tests.support import assert_ledger_balanced, form_data, params, refunds

pytestmark = pytest.mark.django_db(transaction=True)


def submit(client, user, checkpoint, **overrides) -> Job:
    client.force_login(user)
    response = client.post("/generate/", form_data(checkpoint, **overrides))
    assert response.status_code == 302, response.content
    return Job.objects.get(pk=response["Location"].split("job=")[1])


def socket_for(client, job, origin=b"http://127.0.0.1:8000"):
    headers = [(b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())] if "sessionid" in client.cookies else []
    headers.append((b"host", b"127.0.0.1:8000"))
    if origin:
        headers.append((b"origin", origin))
    return WebsocketCommunicator(application, f"/ws/jobs/{job.pk}/", headers=headers)


async def events_until(socket, last_types=("finished", "failed", "cancelled"), timeout=60):
    events = []
    while not events or events[-1]["type"] not in last_types:
        events.append(await socket.receive_json_from(timeout=timeout))
    return events


def in_a_worker_thread(fn, *args):
    """Run like a worker process would: another thread, its own database connection."""
    return sync_to_async(fn, thread_sensitive=False)(*args)


def watch(client, job, during):
    """Connect to the job's socket, then run `during(socket)`; return every event received."""

    async def scenario():
        live.use_event_loop(asyncio.get_running_loop())
        socket = socket_for(client, job)
        connected, _ = await socket.connect()
        assert connected
        try:
            return await during(socket)
        finally:
            await socket.disconnect()
            live.use_event_loop(None)

    return async_to_sync(scenario)()


def test_submit_streams_progress_and_previews_then_stores_watermarked_images_charged_once(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint, steps=5, num_images=2)

    async def during(socket):
        first = await socket.receive_json_from()
        await in_a_worker_thread(run_next_job.apply)
        return [first] + await events_until(socket)

    events = watch(client, job, during)
    assert [e["type"] for e in events] == ["state", "started"] + ["progress"] * 5 + ["finished"]
    assert events[0]["status"] == "queued" and events[0]["position"] == 0
    assert [(e["step"], e["total"]) for e in events if e["type"] == "progress"] == [(s, 5) for s in range(1, 6)]
    # The ETA is measured from the first step (loading and encoding would make it jump): none at step 1.
    etas = [e["eta"] for e in events if e["type"] == "progress"]
    assert etas[0] is None and all(isinstance(eta, float) and eta >= 0 for eta in etas[1:]) and etas[-1] == 0
    previews = [e["preview"] for e in events if e["type"] == "progress"]
    assert all(p.startswith("data:image/jpeg;base64,") for p in previews) and len(set(previews)) > 1

    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempts == 1 and set(job.timings) >= {"denoise", "decode"}
    images = list(job.images.order_by("index"))
    assert [im.hex_id for im in images] == [f"{i:016x}" for i in job.image_ids]
    assert [e["id"] for e in events[-1]["images"]] == [im.hex_id for im in images]
    for image in images:
        with default_storage.open(image.png.name) as file:
            png = PILImage.open(io.BytesIO(file.read()))
        assert read_watermark(png) == image.id.to_bytes(8, "big")
        info = parse_parameters(png.info["parameters"])
        assert (info["seed"], info["steps"], info["prompt"]) == (job.seed + image.index, 5, job.prompt)
        with default_storage.open(image.thumbnail.name) as file:
            assert PILImage.open(file).format == "WEBP"
    assert alice.credits.entries.filter(kind="charge").count() == 1 and refunds(job) == 0
    assert_ledger_balanced()


def test_a_failed_job_says_why_and_refunds_once(client, checkpoint, tmp_path):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    folder = tmp_path / "vanishing-model"
    shutil.copytree(checkpoint.source, folder)
    checkpoint.source = str(folder)
    checkpoint.save()
    job = submit(client, alice, checkpoint)
    shutil.rmtree(folder)  # the model disappears before a worker gets to it

    async def during(socket):
        await socket.receive_json_from()
        await in_a_worker_thread(run_next_job.apply)
        return await events_until(socket)

    events = watch(client, job, during)
    assert [e["type"] for e in events] == ["started", "failed"]
    assert "unknown model" in events[-1]["reason"]
    job.refresh_from_db()
    assert job.status == "failed" and refunds(job) == 1
    assert User.objects.get(pk=alice.pk).credits.balance == 100
    assert_ledger_balanced()


def test_cancelling_a_running_job_stops_it_and_refunds_once(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint, steps=40)

    async def during(socket):
        await socket.receive_json_from()
        worker = asyncio.ensure_future(in_a_worker_thread(run_next_job.apply))
        seen = [await socket.receive_json_from(timeout=60) for _ in range(3)]  # started, step 1, step 2
        await in_a_worker_thread(lambda: job_cancel(user=alice, job_id=job.pk))
        seen += await events_until(socket)
        await worker
        return seen

    events = watch(client, job, during)
    types = [e["type"] for e in events]
    assert types[0] == "started" and types[-1] == "cancelled" and set(types[1:-1]) == {"progress"}
    assert events[-2]["step"] < 40
    job.refresh_from_db()
    assert job.status == "cancelled" and not job.images.exists() and refunds(job) == 1
    assert User.objects.get(pk=alice.pk).credits.balance == 100
    assert_ledger_balanced()


def test_cancelling_a_queued_job_refunds_it_at_once(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint)
    response = client.post(f"/jobs/{job.pk}/cancel/")
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "cancelled" and refunds(job) == 1
    assert run_next_job.apply().result is None  # nothing left to run
    assert_ledger_balanced()


def test_a_queued_job_hears_its_place_in_the_queue_move(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    submit(client, alice, checkpoint)
    second = submit(client, alice, checkpoint)

    async def during(socket):
        first = await socket.receive_json_from()
        await in_a_worker_thread(job_claim)
        return [first, await socket.receive_json_from(timeout=5)]  # the page hears it within QUEUE_REFRESH_SECONDS

    state, moved = watch(client, second, during)
    assert (state["status"], state["position"], state["eta"]) == ("queued", 1, None)  # no job has finished yet
    assert moved == {"type": "queued", "position": 1, "eta": None}  # the first now runs: still ahead of it


def test_two_people_waiting_at_once_each_hear_their_own_place_move(client, checkpoint):
    """Every socket of a process reads the one look at the queue per refresh; each gets its own job's place."""
    from django.test import Client

    alice, carol = (User.objects.create_user(name, password=f"pw-{name}-123") for name in ("alice", "carol"))
    carols = Client()
    first = submit(client, alice, checkpoint)
    theirs = submit(carols, carol, checkpoint)
    mine = submit(client, alice, checkpoint)  # alice's second: carol's first goes before it

    async def next_place(socket, place):
        """The socket's next message with another place: one sent as the cancel went through may
        still tell the place before it (a refresh reads the queue at most once a second)."""
        for _ in range(3):
            message = await socket.receive_json_from(timeout=5)
            if message["position"] != place:
                return message
        return message

    async def scenario():
        sockets = [socket_for(carols, theirs), socket_for(client, mine)]
        for socket in sockets:
            assert (await socket.connect())[0]
        try:
            states = [await socket.receive_json_from() for socket in sockets]
            await sync_to_async(job_cancel, thread_sensitive=False)(user=alice, job_id=first.pk)
            return states, [await next_place(socket, state["position"]) for socket, state in zip(sockets, states)]
        finally:
            for socket in sockets:
                await socket.disconnect()

    states, moved = async_to_sync(scenario)()
    assert [(s["status"], s["position"]) for s in states] == [("queued", 1), ("queued", 2)]
    assert [(m["type"], m["position"]) for m in moved] == [("queued", 0), ("queued", 1)]


def test_a_waiting_job_counts_the_running_jobs_ahead_and_gets_an_eta_from_recent_jobs(alice, carol, make_job,
                                                                                      checkpoint):
    from generation.jobs.presenters import job_state
    from generation.jobs.submit import job_submit

    done = make_job(alice, num_images=1)
    took = (done.finished_at - done.started_at).total_seconds()
    params = {"prompt": "x", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 2, "num_images": 1}
    job_submit(user=carol, params=params)
    mine = job_submit(user=alice, params=params)
    assert job_state(mine)["position"] == 1
    job_claim()  # carol's job runs now, on the only worker
    state = job_state(mine)
    assert state["position"] == 1 and state["eta"] == pytest.approx(took, abs=0.1)


def test_the_eta_counts_what_is_left_of_the_run_now_going_and_the_runs_ahead(alice, carol, checkpoint):
    from datetime import timedelta

    from django.utils import timezone

    from generation.jobs.presenters import job_state
    from generation.jobs.submit import job_submit

    params = {"prompt": "x", "checkpoint": checkpoint, "width": 256, "height": 256, "steps": 2, "num_images": 1}

    def run(*jobs, seconds_ago, status="succeeded", before=None):
        Job.objects.filter(pk__in=[j.pk for j in jobs]).update(
            status=status, worker="w1", started_at=(before or timezone.now()) - timedelta(seconds=seconds_ago))

    then = timezone.now()  # the runs before are 4 s apart however long the submits take
    for start in (30, 26, 22, 18, 14):  # lately a run of two jobs every 4 s
        run(*[job_submit(user=alice, params=params) for _ in range(2)], seconds_ago=start, before=then)
    # The run before, one image still being stored beside the run now going: not the one to wait for.
    run(job_submit(user=alice, params=params), job_submit(user=carol, params=params), seconds_ago=10, status="running",
        before=then)
    going = [job_submit(user=carol, params=params), job_submit(user=alice, params=params)]
    ahead = [job_submit(user=carol, params=params) for _ in range(2)]
    mine = job_submit(user=alice, params=params)

    run(*going, seconds_ago=1, status="running")
    assert job_state(ahead[0])["eta"] == pytest.approx(3, abs=0.2)  # the next run, once this one is done
    assert job_state(mine)["eta"] == pytest.approx(3 + 4, abs=0.2)  # the run after: carol's two go first
    run(*going, seconds_ago=2.5, status="running")  # time passes while they wait: the estimates come down
    assert job_state(ahead[0])["eta"] == pytest.approx(1.5, abs=0.2)
    assert job_state(mine)["eta"] == pytest.approx(1.5 + 4, abs=0.2)


def test_a_reconnecting_page_gets_the_current_state_first(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint, steps=3)
    run_next_job.apply()
    state = watch(client, job, lambda socket: socket.receive_json_from())
    assert state["type"] == "state" and state["status"] == "succeeded" and len(state["images"]) == 2


def test_mid_job_the_state_has_the_step_and_the_latest_preview(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint)
    Job.objects.filter(pk=job.pk).update(status="running", progress_step=3, progress_total=20, preview=b"\xff\xd8jpeg")
    state = watch(client, job, lambda socket: socket.receive_json_from())
    assert (state["status"], state["step"], state["total"]) == ("running", 3, 20)
    assert state["preview"] == "data:image/jpeg;base64,/9hqcGVn"


@pytest.mark.parametrize("who", ["stranger", "signed out"])
def test_someone_elses_job_socket_is_refused(client, checkpoint, who):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint)
    client.logout()
    if who == "stranger":
        client.force_login(User.objects.create_user("carol", password="pw-carol-123"))

    async def connect():
        connected, code = await socket_for(client, job).connect()
        return connected

    assert async_to_sync(connect)() is False


def test_staff_may_watch_any_job(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint)
    client.force_login(User.objects.create_superuser("admin", password="pw-admin-123"))
    assert watch(client, job, lambda socket: socket.receive_json_from())["status"] == "queued"


@pytest.mark.parametrize("origin", [None, b"http://evil.example", b"http://127.0.0.1:9999", b"https://127.0.0.1:8000",
                                    b"http://localhost:8000"])
def test_a_socket_without_our_origin_is_refused(client, checkpoint, origin):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint)

    async def connect():
        connected, _ = await socket_for(client, job, origin=origin).connect()
        return connected

    assert async_to_sync(connect)() is False


def test_a_job_page_and_its_images_are_private_to_the_owner(client, checkpoint):
    alice = User.objects.create_user("alice", password="pw-alice-123")
    job = submit(client, alice, checkpoint, steps=2)
    run_next_job.apply()
    image = Image.objects.filter(job=job).first()
    assert client.get(f"/jobs/{job.pk}/").status_code == 200
    assert client.get(f"/images/{image.hex_id}.png")["Content-Type"] == "image/png"
    client.force_login(User.objects.create_user("carol", password="pw-carol-123"))
    assert client.get(f"/jobs/{job.pk}/").status_code == 404
    assert client.get(f"/images/{image.hex_id}.png").status_code == 404
    assert client.get(f"/images/{image.hex_id}.webp").status_code == 404
    assert client.post(f"/jobs/{job.pk}/cancel/").status_code == 404


def listen_while(job, send, **wait) -> list[str]:
    """The event types a waiting API call hears while `send()` runs beside it."""

    async def scenario():
        async def listen():
            return [event["type"] async for event in live.job_events(job.pk, **wait)]

        listener = asyncio.ensure_future(listen())
        await asyncio.sleep(0.2)  # it has joined the job's group
        await send()
        return await asyncio.wait_for(listener, 10)

    return async_to_sync(scenario)()


def test_a_waiting_api_call_hears_the_jobs_end_on_the_channel_layer(alice, checkpoint):
    job = job_submit(user=alice, params=params(checkpoint))
    layer = get_channel_layer()

    async def send():
        for event in ({"type": "started", "attempt": 1}, {"type": "finished", "images": []}):
            await layer.group_send(live.group_name(job.pk), {"type": "job.event", "event": event})

    # The row still says queued and no re-read is due for a minute: the message alone ends the wait.
    assert listen_while(job, send, timeout=60, recheck=60) == ["started", "finished"]


def test_a_wait_whose_message_was_lost_still_ends_when_the_row_says_so(alice, checkpoint):
    job = job_submit(user=alice, params=params(checkpoint))

    async def send():  # the job fails and no event is ever sent
        await sync_to_async(Job.objects.filter(pk=job.pk).update)(status=Job.FAILED)

    assert listen_while(job, send, timeout=60, recheck=0.2) == ["failed"]
