"""Job events through the channel layer: sent by the services, heard by the pages' sockets and by
the API calls that wait for a job."""

import asyncio
import contextlib
import logging
import queue
import threading
import time

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from generation.jobs.models import Job

ENDINGS = ("finished", "failed", "cancelled")
_server_loop: asyncio.AbstractEventLoop | None = None
_collecting = threading.local()  # .events: this thread's events, sent by its caller (collected())
_outbox: queue.Queue = queue.Queue(maxsize=1000)  # previews on their way, sent by one thread
_relay = None  # the embedded worker process's queue to the web process (sdweb.embedded)
log = logging.getLogger(__name__)


def use_event_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """In one process (embedded mode, tests) send on the server's own loop: the in-memory
    layer loses wake-ups across event loops and delivers seconds late otherwise."""
    global _server_loop
    _server_loop = loop


def relay_to(events) -> None:
    """In the embedded worker process: hand every event to the web process, whose in-memory channel
    layer the pages listen on."""
    global _relay
    _relay = events


def group_name(job_id) -> str:
    return f"job-{str(job_id).replace('-', '')}"


def job_event(job_id, event: dict) -> None:
    if getattr(_collecting, "events", None) is not None:
        _collecting.events.append((job_id, event))
        return
    if _relay is not None:
        _relay.put((job_id, event))
        return
    layer = get_channel_layer()
    message = {"type": "job.event", "event": event}
    loop = _server_loop
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(layer.group_send(group_name(job_id), message), loop)
    else:
        async_to_sync(layer.group_send)(group_name(job_id), message)


def job_event_soon(job_id, event: dict) -> None:
    """job_event without waiting for the channel layer (a send to Redis takes milliseconds): the
    denoising thread hands previews to one sender thread. A preview that finds the outbox full is
    dropped; the next one is newer anyway."""
    if _relay is not None or _server_loop is not None and _server_loop.is_running():
        job_event(job_id, event)  # already without waiting
        return
    if not _sender.is_alive():
        _start_sender()
    with contextlib.suppress(queue.Full):
        _outbox.put_nowait((job_id, event))


def flush(timeout: float = 5.0) -> None:
    """Wait until the previews handed to the sender are sent, so nothing sent after (a job's end)
    overtakes them."""
    deadline = time.monotonic() + timeout
    while _outbox.unfinished_tasks and time.monotonic() < deadline:
        time.sleep(0.002)


def _send_forever() -> None:
    while True:
        job_id, event = _outbox.get()
        try:
            job_event(job_id, event)
        except Exception:
            log.exception("a preview of job %s was not sent", job_id)
        finally:
            _outbox.task_done()


def _start_sender() -> None:
    global _sender
    _sender = threading.Thread(target=_send_forever, name="job-events", daemon=True)
    _sender.start()


_sender = threading.Thread()


@contextlib.contextmanager
def collected():
    """Collect the job events sent inside the block instead of sending them (a finishing process
    can't reach the embedded server's in-memory channel layer); the caller sends them."""
    _collecting.events = events = []
    try:
        yield events
    finally:
        _collecting.events = None


async def job_events(job_id, timeout: float, recheck: float = 2.0):
    """The job's events as they come, until it ends or `timeout` seconds pass. Listening starts
    before the job row is read, so no event is missed; the row is read again whenever `recheck`
    seconds pass in silence (a dropped message or a lost connection must not hang the caller),
    and an ending found there is yielded as an event of its own."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    group = group_name(job_id)
    await layer.group_add(group, channel)
    deadline = time.monotonic() + timeout
    try:
        while True:
            status = await database_sync_to_async(
                lambda: Job.objects.filter(pk=job_id).values_list("status", flat=True).first())()
            if status not in Job.ACTIVE:
                yield {"type": {Job.SUCCEEDED: "finished", Job.CANCELLED: "cancelled"}.get(status, "failed")}
                return
            while (left := deadline - time.monotonic()) > 0:
                try:
                    message = await asyncio.wait_for(layer.receive(channel), min(recheck, left))
                except asyncio.TimeoutError:
                    break  # silence: read the row again
                yield message["event"]
                if message["event"]["type"] in ENDINGS:
                    return
            if left <= 0:
                return
    finally:
        await layer.group_discard(group, channel)


def wait_for_end(job_id, timeout: float) -> None:
    """Block a synchronous caller until the job ends or `timeout` passes; the caller then reads
    the job row, which is the truth either way."""

    async def listen():
        async for _ in job_events(job_id, timeout):
            pass

    async_to_sync(listen)()
