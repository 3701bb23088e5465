from datetime import date, datetime, time, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from generation.provenance.audit import audit_prune


class Command(BaseCommand):
    help = ("Remove prompt audit rows made before DATE (at most up to SDWEB_AUDIT_RETENTION_DAYS ago); "
            "the chain stays verifiable from the first kept row.")

    def add_arguments(self, parser):
        parser.add_argument("--before", type=date.fromisoformat, help="YYYY-MM-DD (default: the retention limit)")

    def handle(self, **options):
        limit = timezone.now() - timedelta(days=settings.SDWEB["AUDIT_RETENTION_DAYS"])
        before = limit if options["before"] is None else timezone.make_aware(datetime.combine(options["before"], time()))
        if before > limit:
            raise CommandError(f"--before may be at most {limit:%Y-%m-%d}: rows of the last "
                               f"{settings.SDWEB['AUDIT_RETENTION_DAYS']} days are kept (SDWEB_AUDIT_RETENTION_DAYS)")
        try:
            removed = audit_prune(before)
        except ValueError as error:
            raise CommandError(str(error))
        self.stdout.write(f"removed {removed} audit rows made before {before:%Y-%m-%d}")
