"""For migrations that meet the triggers of migration 0003.

- Data migrations that must rewrite stored steps even of workflows with active runs (a renamed
  operator or event name means the same thing to a run): `graph_triggers_lifted`.
- Schema migrations of the workflow, step, transition or execution tables: SQLite rebuilds the
  table, which drops its triggers and fails on the others' references to it. Wrap the
  operations in `SQLITE_TRIGGERS_DROP` ... `SQLITE_TRIGGERS_CREATE` (no-ops on PostgreSQL,
  whose ALTER TABLE keeps triggers).
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

from django.db import migrations

GRAPH_TABLES = ("workflows_app_step", "workflows_app_transition")


@contextlib.contextmanager
def graph_triggers_lifted(schema_editor) -> Iterator[None]:
    vendor = schema_editor.connection.vendor
    locks = importlib.import_module("workflows_app.migrations.0003_graph_lock_triggers")
    if vendor == "postgresql":
        for table in GRAPH_TABLES:
            schema_editor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER", params=None)
        try:
            yield
        finally:
            for table in GRAPH_TABLES:
                schema_editor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER", params=None)
    elif vendor == "sqlite":
        graph_triggers = [n for n in locks.SQLITE_TRIGGERS if n.startswith(GRAPH_TABLES)]
        for name in graph_triggers:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")
        try:
            yield
        finally:
            for statement in locks._sqlite_statements():
                name = statement.split()[2]
                if name in graph_triggers:
                    schema_editor.execute(statement)
    else:  # pragma: no cover
        yield


def _sqlite_drop(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        locks = importlib.import_module("workflows_app.migrations.0003_graph_lock_triggers")
        for name in locks.SQLITE_TRIGGERS:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {name}")


def _sqlite_create(apps, schema_editor) -> None:
    if schema_editor.connection.vendor == "sqlite":
        locks = importlib.import_module("workflows_app.migrations.0003_graph_lock_triggers")
        for statement in locks._sqlite_statements():
            schema_editor.execute(statement)


SQLITE_TRIGGERS_DROP = migrations.RunPython(_sqlite_drop, _sqlite_create, elidable=False)
SQLITE_TRIGGERS_CREATE = migrations.RunPython(_sqlite_create, _sqlite_drop, elidable=False)
