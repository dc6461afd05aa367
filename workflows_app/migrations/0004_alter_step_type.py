"""Step.type's choices come from workflows_app.models (which imports the step registry only
when asked), so step modules may import the models. No change in the database."""

from django.db import migrations, models

import workflows_app.models


class Migration(migrations.Migration):
    dependencies = [("workflows_app", "0003_graph_lock_triggers")]

    operations = [
        migrations.AlterField(
            model_name="step",
            name="type",
            field=models.CharField(choices=workflows_app.models.step_type_choices, max_length=32),
        ),
    ]
