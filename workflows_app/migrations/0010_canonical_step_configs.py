"""Stored step configs in their one canonical form: what each step type's `stored_config` now
stores for a config that means the same thing, so equal meanings are equal rows (an export,
a comparison, a diff of two workflows). A Webhook `{url, method: "POST", headers: {}}` becomes
`{url}`; a Wait for Event `{event, timeout: null}` (or Plunk's `{eventName, timeout: 0}`)
`{event}`; an Update Contact `{set, unset: [], subscribed: null}` `{set}`; a Send Email
`{template, recipient: {type: "CONTACT"}}` `{template}`.

An Exit step without a reason ended runs with none; its default is now Plunk's `exit_step`, so
such a step is stored as `{reason: ""}` and keeps ending runs with none.

The canonical form is the step type's own (its module is the one source of truth), so this
asks the registry. A config that no longer parses is left as it is: graph validation reports
it when its workflow is next saved. Workflows with active runs are rewritten too (the form
changes, the meaning does not), with the graph-lock triggers of 0003 lifted for the rewrite
only, and their graph_version bumped as the triggers would have done.
"""

from django.db import migrations
from django.db.models import F

from workflows_app.migration_helpers import graph_triggers_lifted

TYPES = ("webhook", "wait_for_event", "update_contact", "exit", "condition", "send_email")


def canonical(type_name, config):
    """The canonical form of a stored config, or None when it does not parse (left as is)."""
    from workflows_app.steps import STEP_TYPES
    from workflows_app.steps.base import ConfigError

    if not isinstance(config, dict):
        return None
    if type_name == "exit" and "reason" not in config:
        config = {**config, "reason": ""}  # none, as it was before the default changed
    kind = STEP_TYPES.get(type_name)
    if kind is None:  # a type this code no longer has: left as it is
        return None
    try:
        parsed = kind.parse_config(config)
    except ConfigError:
        return None
    return kind.stored_config(config, parsed)


def rewrite(apps, schema_editor):
    Step = apps.get_model("workflows_app", "Step")
    Workflow = apps.get_model("workflows_app", "Workflow")
    using = schema_editor.connection.alias
    changes = []
    for step in (
        Step.objects.using(using)
        .filter(type__in=TYPES)
        .only("pk", "workflow_id", "type", "config")
        .iterator()
    ):
        config = canonical(step.type, step.config)
        if config is not None and config != step.config:
            changes.append((step.pk, step.workflow_id, config))
    if not changes:
        return
    with graph_triggers_lifted(schema_editor):
        for pk, _, config in changes:
            Step.objects.using(using).filter(pk=pk).update(config=config)
    Workflow.objects.using(using).filter(pk__in={wf for _, wf, _ in changes}).update(
        graph_version=F("graph_version") + 1
    )


class Migration(migrations.Migration):
    dependencies = [("workflows_app", "0009_send_policy")]

    # Backwards: nothing to undo, the canonical forms are valid configs for the code before.
    operations = [migrations.RunPython(rewrite, migrations.RunPython.noop)]
