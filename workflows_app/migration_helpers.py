"""For data migrations that must rewrite stored steps even of workflows with active runs (a
renamed operator or event name means the same thing to a run): the graph-lock triggers of
migration 0003 are lifted for the duration, and only there."""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator

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
