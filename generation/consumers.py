from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from generation.live import group_name
from generation.models import Job
from generation.presenters import job_event_shown, job_state
from generation.selectors import job_for_viewer


class JobConsumer(AsyncJsonWebsocketConsumer):
    """Live events of one job, for its owner and staff only."""

    async def connect(self):
        job_id = self.scope["url_route"]["kwargs"]["job_id"]
        job = await database_sync_to_async(job_for_viewer)(self.scope["user"], job_id)
        if job is None:
            await self.close(code=4403)
            return
        self.group = group_name(job_id)
        # Join before reading the state: an event sent meanwhile is queued, not lost.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self.send_json(await database_sync_to_async(lambda: job_state(Job.objects.get(pk=job.pk)))())

    async def disconnect(self, code):
        if hasattr(self, "group"):
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def job_event(self, message):
        await self.send_json(job_event_shown(message["event"]))
