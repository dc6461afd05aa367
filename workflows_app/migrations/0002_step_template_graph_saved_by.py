"""Send Email steps point at their template by key (Step.template, PROTECT) instead of by name
in their config; workflows remember who saved their graph last."""

import django.db.models.deletion
from django.db import migrations, models


def names_to_keys(apps, schema_editor):
    Step = apps.get_model("workflows_app", "Step")
    Template = apps.get_model("templates_app", "Template")
    by_name = dict(Template.objects.values_list("name", "pk"))
    for step in Step.objects.filter(type="send_email"):
        name = (step.config or {}).get("template")
        if name in by_name:
            step.template_id = by_name[name]
            step.config = {k: v for k, v in step.config.items() if k != "template"}
            step.save(update_fields=["template", "config"])
        # A name with no template stays in the config: the step then fails saying so, as before.


def keys_to_names(apps, schema_editor):
    Step = apps.get_model("workflows_app", "Step")
    for step in Step.objects.filter(type="send_email", template__isnull=False).select_related(
        "template"
    ):
        step.config = {**step.config, "template": step.template.name}
        step.save(update_fields=["config"])


class Migration(migrations.Migration):
    dependencies = [
        ("templates_app", "0001_initial"),
        ("workflows_app", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="step",
            name="template",
            field=models.ForeignKey(
                blank=True,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="steps",
                to="templates_app.template",
            ),
        ),
        migrations.AddField(
            model_name="workflow",
            name="graph_saved_at",
            field=models.DateTimeField(blank=True, editable=False, null=True),
        ),
        migrations.AddField(
            model_name="workflow",
            name="graph_saved_by",
            field=models.CharField(blank=True, editable=False, max_length=150),
        ),
        migrations.RunPython(names_to_keys, keys_to_names),
    ]
