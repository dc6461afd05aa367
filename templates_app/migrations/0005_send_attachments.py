"""POST /v1/send stores a request's attachment content once (SendAttachments), shared by its
recipients' ledger rows, instead of a copy in every row."""

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("templates_app", "0004_template_description"),
    ]

    operations = [
        migrations.CreateModel(
            name="SendAttachments",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "created_at",
                    models.DateTimeField(default=django.utils.timezone.now, editable=False),
                ),
                ("items", models.JSONField(default=list)),
            ],
            options={
                "verbose_name": "send attachments",
                "verbose_name_plural": "send attachments",
            },
        ),
        migrations.AddField(
            model_name="message",
            name="attachment_content",
            field=models.ForeignKey(
                blank=True,
                help_text="The attachments' content (kept while the row may still be sent or resent).",
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="messages",
                to="templates_app.sendattachments",
            ),
        ),
    ]
