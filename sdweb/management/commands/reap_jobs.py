from django.core.management.base import BaseCommand

from generation.jobs.queue import jobs_reap


class Command(BaseCommand):
    help = "Recover jobs whose worker died: fail those past the attempt limit (refunded), re-queue the rest."

    def handle(self, **options):
        result = jobs_reap()
        self.stdout.write(f"{result['failed']} failed past the attempt limit, {result['requeued']} sent back to the queue")
