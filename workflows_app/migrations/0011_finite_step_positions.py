"""Step positions are finite numbers, checked by the database: JSON has no Infinity or NaN, so
one written past the graph validation (a raw ORM or SQL write) would make the canvas's JSON
invalid. The check bounds each coordinate by the largest float, which leaves out both
infinities and NaN (PostgreSQL orders NaN above every number; SQLite stores NaN as NULL,
which the NOT NULL column refuses already).

A position already stored non-finite is moved to 0 first (a position is cosmetic: the graph
triggers of 0003 allow that even while runs are active). SQLite adds a check by rebuilding
the table, which drops its triggers: they are dropped and made again around it.
"""

import sys

from django.db import migrations, models
from django.db.models import Q

from workflows_app.migration_helpers import SQLITE_TRIGGERS_CREATE, SQLITE_TRIGGERS_DROP

MAX_FLOAT = sys.float_info.max


def finite_positions(apps, schema_editor):
    Step = apps.get_model("workflows_app", "Step")
    steps = Step.objects.using(schema_editor.connection.alias)
    for axis in ("position_x", "position_y"):
        steps.filter(Q(**{f"{axis}__gt": MAX_FLOAT}) | Q(**{f"{axis}__lt": -MAX_FLOAT})).update(
            **{axis: 0}
        )


class Migration(migrations.Migration):
    dependencies = [("workflows_app", "0010_canonical_step_configs")]

    operations = [
        migrations.RunPython(finite_positions, migrations.RunPython.noop),
        SQLITE_TRIGGERS_DROP,  # SQLite rebuilds the step table (see migration_helpers)
        migrations.AddConstraint(
            model_name="step",
            constraint=models.CheckConstraint(
                condition=Q(
                    position_x__gte=-MAX_FLOAT,
                    position_x__lte=MAX_FLOAT,
                    position_y__gte=-MAX_FLOAT,
                    position_y__lte=MAX_FLOAT,
                ),
                name="step_position_finite",
            ),
        ),
        SQLITE_TRIGGERS_CREATE,
    ]
