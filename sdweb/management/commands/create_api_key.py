from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from sdweb.shared.api_keys import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a user and print it (it is shown this once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="command line")

    def handle(self, username, name, **options):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user called {username!r}.")
        _, raw = api_key_create(user=user, name=name)
        self.stdout.write(raw)
