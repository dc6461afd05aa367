from django.core.management.base import BaseCommand

from contacts_app.models import ApiKey
from contacts_app.services import apikey_create


class Command(BaseCommand):
    help = "Create an API key and print it once, as the last line."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument(
            "--public", action="store_true", help="A public key (pk_): may only call /v1/track."
        )
        parser.add_argument(
            "--rate-limit", type=int, default=None, help="Requests per minute (default: no limit)."
        )

    def handle(self, *args, name, public, rate_limit, **options):
        kind = ApiKey.PUBLIC if public else ApiKey.SECRET
        key, raw = apikey_create(name=name, kind=kind, rate_limit_per_minute=rate_limit)
        self.stderr.write(f"Created {kind} key '{name}'. It is shown once; store it now.")
        self.stdout.write(raw)
