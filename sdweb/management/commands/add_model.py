from django.core.management.base import BaseCommand, CommandError

from generation.services.checkpoints import checkpoint_register


class Command(BaseCommand):
    help = "Register a checkpoint: a diffusers folder on disk, or a Hugging Face id (downloaded now)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("source", help="a diffusers folder, or a Hugging Face id such as org/model")
        parser.add_argument("--family", choices=["sd1", "sd2"], default="sd1")
        parser.add_argument("--default", action="store_true", help="make it the default checkpoint")

    def handle(self, name, source, family, default, **options):
        try:
            checkpoint = checkpoint_register(name=name, source=source, family=family, make_default=default)
        except ValueError as error:
            raise CommandError(str(error))
        self.stdout.write(f"Registered {checkpoint.name} ({checkpoint.source})"
                          + (", the default" if checkpoint.is_default else ""))
