from django.core.management.base import BaseCommand, CommandError

from generation.provenance.audit import audit_verify


class Command(BaseCommand):
    help = "Check the prompt audit's hash chain: exits 0 with the row count, or fails naming the first broken row."

    def handle(self, **options):
        count, problem = audit_verify()
        if problem:
            raise CommandError(f"audit chain broken after {count} good rows: {problem}")
        self.stdout.write(f"audit chain intact: {count} rows")
