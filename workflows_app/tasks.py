"""django-q2 task entry points: they only call the engine."""

from workflows_app import engine


def advance_executions(
    ids: list[int], timers: dict[int, float] | None = None, versions: dict[int, int] | None = None
) -> dict[str, int]:
    return engine.executions_advance(ids, timers, versions)
