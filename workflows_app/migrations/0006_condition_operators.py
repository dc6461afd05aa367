"""Condition steps take Plunk's operator names (`notEquals`, `greaterThanOrEqual`, ...): stored
steps are rewritten from ours (`not_equals`, `greater_or_equal`, ...), even in workflows with
active runs, since a renamed operator means the same thing to a run. And branch names grow to
64 characters, for the named branches of a multi-branch Condition.

Only PostgreSQL enforces a varchar's length; on SQLite widening would rebuild the tables and
lose the graph-lock triggers of 0003, so there only Django's state changes.
"""

import sys

from django.db import migrations, models
from django.db.models import F

from workflows_app.migration_helpers import graph_triggers_lifted

LEGACY = {
    "not_equals": "notEquals",
    "not_contains": "notContains",
    "greater_than": "greaterThan",
    "less_than": "lessThan",
    "greater_or_equal": "greaterThanOrEqual",
    "less_or_equal": "lessThanOrEqual",
    "not_exists": "notExists",
}
BRANCH_COLUMNS = (
    ("workflows_app_transition", "branch"),
    ("workflows_app_execution", "pending_branch"),
    ("workflows_app_steprun", "branch"),
)


def _renamed(config):
    """The config with Plunk's operator names, or None when nothing changes."""
    if not isinstance(config, dict):
        return None
    changed = dict(config)
    if changed.get("operator") in LEGACY:
        changed["operator"] = LEGACY[changed["operator"]]
    branches = changed.get("branches")
    if isinstance(branches, list):
        changed["branches"] = [
            {**b, "operator": LEGACY[b["operator"]]}
            if isinstance(b, dict) and b.get("operator") in LEGACY
            else b
            for b in branches
        ]
    return None if changed == config else changed


def rename(apps, schema_editor):
    Step = apps.get_model("workflows_app", "Step")
    using = schema_editor.connection.alias
    changes = []
    for step in Step.objects.using(using).filter(type="condition").select_related("workflow"):
        config = _renamed(step.config)
        if config is not None:
            changes.append((step.pk, step.workflow_id, config))
        if step.config:
            # The names are the same test, but Plunk's semantics differ (strict equals, no
            # match on a missing field): say which steps to look at (README: Upgrading).
            print(
                f"\n  workflows_app: Condition '{step.key}' of workflow '{step.workflow.name}' "
                "now follows Plunk's rules; check it (README: Upgrading).",
                file=sys.stderr,
            )
    _write(apps, schema_editor, changes)


def unrename(apps, schema_editor):
    """Back to our names, for the code before this migration. A multi-branch Condition did not
    exist then: going back with one is refused rather than leaving a step that can not load."""
    Step = apps.get_model("workflows_app", "Step")
    using = schema_editor.connection.alias
    back = {new: old for old, new in LEGACY.items()}
    changes = []
    for step in (
        Step.objects.using(using).filter(type="condition").only("pk", "workflow_id", "config")
    ):
        config = step.config if isinstance(step.config, dict) else {}
        if config.get("mode") == "multi":
            raise RuntimeError(
                f"Condition step {step.pk} has several branches, which the code before this "
                "migration can not run; change it to yes/no first."
            )
        if config.get("operator") in back:
            changes.append(
                (step.pk, step.workflow_id, {**config, "operator": back[config["operator"]]})
            )
    _write(apps, schema_editor, changes)


def _write(apps, schema_editor, changes):
    Step = apps.get_model("workflows_app", "Step")
    Workflow = apps.get_model("workflows_app", "Workflow")
    using = schema_editor.connection.alias
    if not changes:
        return
    with graph_triggers_lifted(schema_editor):
        for pk, _, config in changes:
            Step.objects.using(using).filter(pk=pk).update(config=config)
    # The lifted triggers would have bumped these: open editors and cached graphs must reload.
    Workflow.objects.using(using).filter(pk__in={wf for _, wf, _ in changes}).update(
        graph_version=F("graph_version") + 1
    )


def widen_branches(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table, column in BRANCH_COLUMNS:
        schema_editor.execute(f'ALTER TABLE "{table}" ALTER COLUMN "{column}" TYPE varchar(64)')


class Migration(migrations.Migration):
    # Also after the email event renames (written alongside, on 0004_alter_step_type too), so
    # the migration graph has one leaf.
    dependencies = [("workflows_app", "0005_plunk_event_names")]

    operations = [
        migrations.RunPython(rename, unrename),
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(widen_branches, migrations.RunPython.noop)],
            state_operations=[
                migrations.AlterField(
                    model_name="transition",
                    name="branch",
                    field=models.CharField(default="next", max_length=64),
                ),
                migrations.AlterField(
                    model_name="execution",
                    name="pending_branch",
                    field=models.CharField(blank=True, max_length=64),
                ),
                migrations.AlterField(
                    model_name="steprun",
                    name="branch",
                    field=models.CharField(blank=True, max_length=64),
                ),
            ],
        ),
    ]
