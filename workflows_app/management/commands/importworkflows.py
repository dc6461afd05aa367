import json

from django.core.management.base import BaseCommand, CommandError

from workflows_app.files import DocumentError, document_import


class Command(BaseCommand):
    help = "Import templates and workflows from a JSON file (all or nothing; '-' reads stdin)."

    def add_arguments(self, parser):
        parser.add_argument("file")

    def handle(self, *args, file, **options):
        try:
            if file == "-":
                import sys

                document = json.load(sys.stdin)
            else:
                with open(file, encoding="utf-8") as handle:
                    document = json.load(handle)
        except (OSError, ValueError) as exc:
            raise CommandError(f"cannot read {file}: {exc}") from exc
        try:
            counts = document_import(document)
        except DocumentError as exc:
            raise CommandError("nothing imported:\n  " + "\n  ".join(exc.errors)) from exc
        self.stdout.write(
            f"imported {counts['templates']} template(s) and {counts['workflows']} workflow(s)"
        )
