"""Message.token (the unguessable reference carried to the provider), resend provenance, the
resend permission and an index for the ops list of `unknown` sends."""

import secrets

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

import templates_app.models


def backfill_tokens(apps, schema_editor):
    Message = apps.get_model("templates_app", "Message")
    batch = []
    for message in Message.objects.filter(token__isnull=True).only("pk").iterator(chunk_size=2000):
        message.token = secrets.token_urlsafe(24)
        batch.append(message)
        if len(batch) >= 2000:
            Message.objects.bulk_update(batch, ["token"])
            batch = []
    if batch:
        Message.objects.bulk_update(batch, ["token"])


class Migration(migrations.Migration):
    dependencies = [
        ("templates_app", "0001_initial"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AlterModelOptions(
            name="message",
            options={
                "ordering": ["-created_at"],
                "permissions": [
                    ("resend_message", "Can resend a message whose delivery is unknown or failed")
                ],
            },
        ),
        migrations.AddField(
            model_name="message",
            name="resend_of",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="resends",
                to="templates_app.message",
            ),
        ),
        migrations.AddField(
            model_name="message",
            name="resent_by",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
        # Nullable first, filled row by row (a callable default is evaluated once for all
        # existing rows), then unique and required.
        migrations.AddField(
            model_name="message",
            name="token",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(backfill_tokens, migrations.RunPython.noop, elidable=True),
        migrations.AlterField(
            model_name="message",
            name="token",
            field=models.CharField(
                default=templates_app.models.message_token,
                editable=False,
                max_length=64,
                unique=True,
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                condition=models.Q(("status", "unknown")),
                fields=["-created_at"],
                name="message_unknown",
            ),
        ),
    ]
