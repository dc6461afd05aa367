"""Indexes for the API's lists: contacts newest first, events over a period.

Built CONCURRENTLY on PostgreSQL, so /v1/track keeps writing contacts and events while a large
table is indexed (hence a non-atomic migration); a plain CREATE INDEX on SQLite."""

from django.db import migrations, models

INDEXES = [
    ("contact", models.Index(fields=["created_at", "id"], name="contact_created")),
    ("event", models.Index(fields=["-created_at"], name="event_time")),
]


def create(apps, schema_editor):
    for model_name, index in INDEXES:
        model = apps.get_model("contacts_app", model_name)
        if schema_editor.connection.vendor == "postgresql":
            sql = str(index.create_sql(model, schema_editor, concurrently=True))
            schema_editor.execute(
                sql.replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX CONCURRENTLY IF NOT EXISTS")
            )
        else:
            schema_editor.add_index(model, index)


def drop(apps, schema_editor):
    for model_name, index in INDEXES:
        model = apps.get_model("contacts_app", model_name)
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(f'DROP INDEX CONCURRENTLY IF EXISTS "{index.name}"')
        else:
            schema_editor.remove_index(model, index)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contacts_app", "0004_contactjob")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(model_name=model_name, index=index)
                for model_name, index in INDEXES
            ],
            database_operations=[migrations.RunPython(create, drop)],
        )
    ]
