"""The lock in the database: triggers refuse any change to the steps or transitions of a
workflow with active (running or waiting) executions, whatever path makes it (the service, the
ORM in a shell, raw SQL), and bump the workflow's graph_version on every change so cached
graphs and open editors know they are stale. A step's `name` and `position` are cosmetic:
they may change while runs are active (still a new version). Active executions cannot be
deleted, only cancelled.

The service (workflows_app.graph) checks first and gives people the friendly message; these
are the backstop. Refusals are integrity errors (SQLSTATE 23001 on PostgreSQL, ABORT on
SQLite).
"""

from django.db import migrations

ACTIVE = "('RUNNING', 'WAITING')"
GRAPH_MESSAGE = (
    "workflow has active executions (running or waiting): its steps and transitions cannot "
    "change; cancel them or wait for them to finish"
)
EXECUTION_MESSAGE = "an active execution cannot be deleted; cancel it first"

PG_FUNCTIONS = f"""
CREATE OR REPLACE FUNCTION workflows_app_graph_change(wf bigint) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
  -- Serialises with starting runs: inserting an execution takes a key-share lock on its
  -- workflow row, which conflicts with this one.
  PERFORM 1 FROM workflows_app_workflow WHERE id = wf FOR UPDATE;
  IF EXISTS (SELECT 1 FROM workflows_app_execution
             WHERE workflow_id = wf AND status IN {ACTIVE}) THEN
    RAISE EXCEPTION '{GRAPH_MESSAGE} (workflow %)', wf USING ERRCODE = 'restrict_violation';
  END IF;
  UPDATE workflows_app_workflow SET graph_version = graph_version + 1 WHERE id = wf;
END $$;

CREATE OR REPLACE FUNCTION workflows_app_step_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    PERFORM workflows_app_graph_change(NEW.workflow_id);
    RETURN NEW;
  END IF;
  IF TG_OP = 'DELETE' THEN
    PERFORM workflows_app_graph_change(OLD.workflow_id);
    RETURN OLD;
  END IF;
  IF NEW.workflow_id = OLD.workflow_id AND NEW.key = OLD.key AND NEW.type = OLD.type
     AND NEW.config = OLD.config AND NEW.template_id IS NOT DISTINCT FROM OLD.template_id THEN
    -- Cosmetic (name, position): allowed while runs are active, still a new version.
    UPDATE workflows_app_workflow SET graph_version = graph_version + 1
      WHERE id = NEW.workflow_id;
    RETURN NEW;
  END IF;
  PERFORM workflows_app_graph_change(OLD.workflow_id);
  IF NEW.workflow_id <> OLD.workflow_id THEN
    PERFORM workflows_app_graph_change(NEW.workflow_id);
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION workflows_app_transition_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') THEN
    PERFORM workflows_app_graph_change(OLD.workflow_id);
  END IF;
  IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND NEW.workflow_id <> OLD.workflow_id) THEN
    PERFORM workflows_app_graph_change(NEW.workflow_id);
  END IF;
  IF TG_OP = 'DELETE' THEN
    RETURN OLD;
  END IF;
  RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION workflows_app_execution_delete_guard() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status IN {ACTIVE} THEN
    RAISE EXCEPTION '{EXECUTION_MESSAGE} (execution %, %)', OLD.id, OLD.status
      USING ERRCODE = 'restrict_violation';
  END IF;
  RETURN OLD;
END $$;

CREATE TRIGGER workflows_app_step_guard BEFORE INSERT OR UPDATE OR DELETE
  ON workflows_app_step FOR EACH ROW EXECUTE FUNCTION workflows_app_step_guard();
CREATE TRIGGER workflows_app_transition_guard BEFORE INSERT OR UPDATE OR DELETE
  ON workflows_app_transition FOR EACH ROW EXECUTE FUNCTION workflows_app_transition_guard();
CREATE TRIGGER workflows_app_execution_delete_guard BEFORE DELETE
  ON workflows_app_execution FOR EACH ROW EXECUTE FUNCTION workflows_app_execution_delete_guard();
"""

PG_DROP = """
DROP TRIGGER IF EXISTS workflows_app_step_guard ON workflows_app_step;
DROP TRIGGER IF EXISTS workflows_app_transition_guard ON workflows_app_transition;
DROP TRIGGER IF EXISTS workflows_app_execution_delete_guard ON workflows_app_execution;
DROP FUNCTION IF EXISTS workflows_app_step_guard();
DROP FUNCTION IF EXISTS workflows_app_transition_guard();
DROP FUNCTION IF EXISTS workflows_app_graph_change(bigint);
DROP FUNCTION IF EXISTS workflows_app_execution_delete_guard();
"""


def _sqlite_statements() -> list[str]:
    def active(*refs: str) -> str:
        ids = ", ".join(refs)
        return (
            f"EXISTS (SELECT 1 FROM workflows_app_execution WHERE workflow_id IN ({ids}) "
            f"AND status IN {ACTIVE})"
        )

    refuse = f"BEGIN SELECT RAISE(ABORT, '{GRAPH_MESSAGE}'); END"
    statements = []
    for table, changed in (
        (
            "workflows_app_step",
            "NEW.workflow_id IS NOT OLD.workflow_id OR NEW.key IS NOT OLD.key "
            "OR NEW.type IS NOT OLD.type OR NEW.config IS NOT OLD.config "
            "OR NEW.template_id IS NOT OLD.template_id",
        ),
        ("workflows_app_transition", "1"),
    ):
        statements += [
            f"CREATE TRIGGER {table}_guard_insert BEFORE INSERT ON {table} "
            f"WHEN {active('NEW.workflow_id')} {refuse}",
            f"CREATE TRIGGER {table}_guard_update BEFORE UPDATE ON {table} "
            f"WHEN ({changed}) AND {active('OLD.workflow_id', 'NEW.workflow_id')} {refuse}",
            f"CREATE TRIGGER {table}_guard_delete BEFORE DELETE ON {table} "
            f"WHEN {active('OLD.workflow_id')} {refuse}",
            f"CREATE TRIGGER {table}_version_insert AFTER INSERT ON {table} BEGIN "
            "UPDATE workflows_app_workflow SET graph_version = graph_version + 1 "
            "WHERE id = NEW.workflow_id; END",
            f"CREATE TRIGGER {table}_version_update AFTER UPDATE ON {table} BEGIN "
            "UPDATE workflows_app_workflow SET graph_version = graph_version + 1 "
            "WHERE id IN (OLD.workflow_id, NEW.workflow_id); END",
            f"CREATE TRIGGER {table}_version_delete AFTER DELETE ON {table} BEGIN "
            "UPDATE workflows_app_workflow SET graph_version = graph_version + 1 "
            "WHERE id = OLD.workflow_id; END",
        ]
    statements.append(
        "CREATE TRIGGER workflows_app_execution_delete_guard BEFORE DELETE ON "
        f"workflows_app_execution WHEN OLD.status IN {ACTIVE} "
        f"BEGIN SELECT RAISE(ABORT, '{EXECUTION_MESSAGE}'); END"
    )
    return statements


SQLITE_TRIGGERS = [
    f"{table}_{what}"
    for table in ("workflows_app_step", "workflows_app_transition")
    for what in (
        "guard_insert",
        "guard_update",
        "guard_delete",
        "version_insert",
        "version_update",
        "version_delete",
    )
] + ["workflows_app_execution_delete_guard"]


def create(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_FUNCTIONS, params=None)
    elif vendor == "sqlite":
        for statement in _sqlite_statements():
            schema_editor.execute(statement)
    else:  # pragma: no cover - the product supports these two
        raise RuntimeError(f"no graph-lock triggers for {vendor}")


def drop(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(PG_DROP, params=None)
    elif vendor == "sqlite":
        for name in SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("workflows_app", "0002_step_template_graph_saved_by")]

    operations = [migrations.RunPython(create, drop)]
