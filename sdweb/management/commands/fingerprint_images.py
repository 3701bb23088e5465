from django.core.management.base import BaseCommand

from generation.provenance.trace import fingerprints_backfill


class Command(BaseCommand):
    help = "Add the stored images made before the similarity index to it, so copies of them can be traced."

    def handle(self, **options):
        self.stdout.write(f"fingerprinted {fingerprints_backfill()} image(s)")
