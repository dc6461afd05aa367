import json

from django.core.management.base import BaseCommand, CommandError

from workflows_app.files import DocumentError, document_export


class Command(BaseCommand):
    help = "Print workflows (all, or those named) and their templates as one JSON document."

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*")

    def handle(self, *args, names, **options):
        try:
            document = document_export(names or None)
        except DocumentError as exc:
            raise CommandError("\n".join(exc.errors)) from exc
        self.stdout.write(json.dumps(document, indent=2, ensure_ascii=False))
