"""Job events to the browsers watching a job, through the channel layer."""

import asyncio

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

_server_loop: asyncio.AbstractEventLoop | None = None


def use_event_loop(loop: asyncio.AbstractEventLoop | None) -> None:
    """In one process (embedded mode, tests) send on the server's own loop: the in-memory
    layer loses wake-ups across event loops and delivers seconds late otherwise."""
    global _server_loop
    _server_loop = loop


def group_name(job_id) -> str:
    return f"job-{str(job_id).replace('-', '')}"


def job_event(job_id, event: dict) -> None:
    layer = get_channel_layer()
    message = {"type": "job.event", "event": event}
    loop = _server_loop
    if loop is not None and loop.is_running():
        asyncio.run_coroutine_threadsafe(layer.group_send(group_name(job_id), message), loop)
    else:
        async_to_sync(layer.group_send)(group_name(job_id), message)
