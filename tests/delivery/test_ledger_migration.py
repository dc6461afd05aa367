"""templates_app 0002 gives every existing ledger row its own unguessable token."""

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("templates_app", "0001_initial")]
AFTER = [("templates_app", "0002_message_token_resend")]


@pytest.mark.django_db(transaction=True)
def test_the_migration_backfills_a_distinct_token_for_each_existing_message():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    # Every other app as it is now, the ledger as it was.
    others = [node for node in executor.loader.graph.leaf_nodes() if node[0] != "templates_app"]
    old = executor.loader.project_state([*others, *BEFORE]).apps
    try:
        contact = old.get_model("contacts_app", "Contact").objects.create(email="ann@example.com")
        Message = old.get_model("templates_app", "Message")
        for i in range(5):
            Message.objects.create(
                idempotency_key=f"k{i}", contact=contact, to_email="ann@example.com", subject="s"
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())

    new = executor.loader.project_state(AFTER).apps.get_model("templates_app", "Message")
    tokens = list(new.objects.values_list("token", flat=True))
    assert len(tokens) == 5 and len(set(tokens)) == 5
    assert all(len(token) >= 32 for token in tokens)
