import json
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from contacts_app.models import ApiKey
from contacts_app.services import apikey_create, apikey_revoke
from workflows_app.files import document_import
from workflows_app.models import Execution, Workflow

DEMO_KEY_NAME = "demo (make run)"


class Command(BaseCommand):
    help = "Load the demo workflows (once), reset the admin password and print a login and API key."

    def handle(self, *args, **options):
        if not Workflow.objects.exists():
            with open(settings.BASE_DIR / "demo" / "workflows.json", encoding="utf-8") as handle:
                document_import(json.load(handle))
        User = get_user_model()
        password = secrets.token_urlsafe(12)
        user, _ = User.objects.get_or_create(
            username="admin", defaults={"email": "admin@example.com"}
        )
        user.is_staff = user.is_superuser = True
        user.set_password(password)
        user.save()
        for old in ApiKey.objects.filter(name=DEMO_KEY_NAME, revoked_at__isnull=True):
            apikey_revoke(key=old)
        _, raw = apikey_create(name=DEMO_KEY_NAME, kind=ApiKey.SECRET)
        active = Execution.objects.filter(status__in=Execution.ACTIVE).count()
        url = settings.PUBLIC_URL
        self.stdout.write(
            f"""
  Lifecycle is starting at {url}/admin/
  Admin login:  admin / {password}
  API key:      {raw}
  API reference: {url}/v1/docs (OpenAPI: {url}/v1/openapi.json)
  Active executions: {active}

  Try it:
    curl -s {url}/v1/track -H 'Authorization: Bearer {raw}' \\
      -H 'Content-Type: application/json' \\
      -d '{{"event": "user.signup", "email": "ann@example.com",
           "data": {{"firstName": "Ann", "plan": "pro"}}}}'
  The welcome email appears below (console email backend); the nudge follows ~3 minutes later.
"""
        )
