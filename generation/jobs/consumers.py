import asyncio
import time

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from generation.jobs.live import group_name
from generation.jobs.models import Job
from generation.jobs.presenters import job_event_shown, job_state
from generation.jobs.selectors import job_for_viewer, queue_wait, queue_waits

QUEUE_REFRESH_SECONDS = 2.0  # a waiting job's place and ETA are sent again this often


class JobConsumer(AsyncJsonWebsocketConsumer):
    """Live events of one job, for its owner and staff only."""

    async def connect(self):
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        job = await database_sync_to_async(job_for_viewer)(self.scope["user"], job_id=job_id)
        if job is None:
            await self.close(code=4403)
            return
        self.group = group_name(job_id)
        # Join before reading the state: an event sent meanwhile is queued, not lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        state = await database_sync_to_async(lambda: job_state(Job.objects.get(pk=job.pk), queue=False))()
        if state["status"] == Job.QUEUED:  # its place from the process's last look at the queue, if it was in it
            wait = (await _queue_waits()).get(job.pk) or await database_sync_to_async(queue_wait)(job)
            state |= {"position": wait["position"], "eta": wait["eta"]}
        await self.send_json(state)
        if state["status"] == Job.QUEUED:
            self.waiting = asyncio.create_task(self.queue_updates(job.pk))

    async def queue_updates(self, job_id):
        """While the job waits: its place and ETA as the jobs ahead move, read here rather than
        announced by the workers at every claim."""
        while True:
            await asyncio.sleep(QUEUE_REFRESH_SECONDS)
            wait = (await _queue_waits()).get(job_id)
            if wait is None:  # started, cancelled, or queued since the last look at the queue
                if not await database_sync_to_async(Job.objects.filter(pk=job_id, status=Job.QUEUED).exists)():
                    return
                continue
            await self.send_json({"type": "queued", "position": wait["position"], "eta": wait["eta"]})

    async def disconnect(self, code):
        if hasattr(self, "waiting"):
            self.waiting.cancel()
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_event(self, message):
        await self.send_json(job_event_shown(message["event"]))


_latest_waits = (-QUEUE_REFRESH_SECONDS, {})


async def _queue_waits() -> dict[int, dict]:
    """Every queued job's place and ETA, looked at once per refresh for all the sockets this
    process serves (each socket looking for itself made the web's work grow with the square of the
    queue's length). While one socket looks, the others keep the last answer."""
    global _latest_waits
    if time.monotonic() - _latest_waits[0] >= QUEUE_REFRESH_SECONDS / 2:
        _latest_waits = (time.monotonic(), _latest_waits[1])
        _latest_waits = (time.monotonic(), await database_sync_to_async(queue_waits)())
    return _latest_waits[1]
