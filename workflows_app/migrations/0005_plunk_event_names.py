"""Plunk's names for the email events: `email.delivered` -> `email.delivery`, `email.opened` ->
`email.open`, `email.clicked` -> `email.click`, `email.bounced` -> `email.bounce`,
`email.complained` -> `email.complaint`. Renamed wherever a workflow refers to one: trigger
events, Wait for Event steps (`event`, and `eventName` should a config hold Plunk's key), and
the executions waiting for one now (`waiting_for`), so that they resume on the new names.

Workflows with active runs are renamed too: their waiting runs are exactly the ones that must
keep working, and the new name means the same event to them. The graph-lock triggers of 0003
refuse such step changes, so they are lifted for the rewrite only, inside this migration's
transaction (migration_helpers.graph_triggers_lifted), and the workflows' graph_version is
bumped as the triggers would have done, so cached graphs and open editors reload.

Stored events keep their names: they are history. Only references are renamed.
"""

from django.db import migrations
from django.db.models import F

from workflows_app.migration_helpers import graph_triggers_lifted

RENAMES = {
    "email.delivered": "email.delivery",
    "email.opened": "email.open",
    "email.clicked": "email.click",
    "email.bounced": "email.bounce",
    "email.complained": "email.complaint",
}
WAIT_KEYS = ("event", "eventName")


def _rename(apps, schema_editor, renames: dict[str, str]) -> None:
    Workflow = apps.get_model("workflows_app", "Workflow")
    Step = apps.get_model("workflows_app", "Step")
    Execution = apps.get_model("workflows_app", "Execution")
    using = schema_editor.connection.alias

    for old, new in renames.items():
        Workflow.objects.using(using).filter(trigger_event=old).update(trigger_event=new)
        Execution.objects.using(using).filter(status="WAITING", waiting_for=old).update(
            waiting_for=new
        )

    changes = []
    for step in (
        Step.objects.using(using).filter(type="wait_for_event").only("pk", "workflow_id", "config")
    ):
        config = dict(step.config) if isinstance(step.config, dict) else {}
        for key in WAIT_KEYS:
            if config.get(key) in renames:
                config[key] = renames[config[key]]
        if config != step.config:
            changes.append((step.pk, step.workflow_id, config))
    if not changes:
        return
    with graph_triggers_lifted(schema_editor):
        for pk, _, config in changes:
            Step.objects.using(using).filter(pk=pk).update(config=config)
    Workflow.objects.using(using).filter(pk__in={wf for _, wf, _ in changes}).update(
        graph_version=F("graph_version") + 1
    )


def forwards(apps, schema_editor):
    _rename(apps, schema_editor, RENAMES)


def backwards(apps, schema_editor):
    _rename(apps, schema_editor, {new: old for old, new in RENAMES.items()})


class Migration(migrations.Migration):
    dependencies = [("workflows_app", "0004_alter_step_type")]

    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
