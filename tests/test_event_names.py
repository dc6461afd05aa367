"""The email events took Plunk's names; a workflow written with the old ones (a file exported
before the upgrade, or habit) listens for the new ones instead of never firing."""

import pytest

from workflows_app.files import document_export, document_import
from workflows_app.models import Workflow
from workflows_app.services import workflow_create

pytestmark = pytest.mark.django_db


def test_an_old_file_imports_with_the_new_event_names():
    document_import(
        {
            "templates": [],
            "workflows": [
                {
                    "name": "Engaged",
                    "trigger_event": "email.opened",
                    "steps": [
                        {
                            "key": "wait",
                            "type": "wait_for_event",
                            "config": {"event": "email.clicked"},
                        }
                    ],
                    "transitions": [{"from": "trigger", "to": "wait"}],
                }
            ],
        }
    )
    exported = document_export(["Engaged"])["workflows"][0]
    assert exported["trigger_event"] == "email.open"
    assert exported["steps"][0]["config"] == {"event": "email.click"}
    # Importing the old file again is the same workflow, not a changed trigger.
    document_import({"workflows": [{**exported, "trigger_event": "email.opened"}]})
    assert Workflow.objects.get(name="Engaged").trigger_event == "email.open"


def test_a_workflow_created_on_an_old_name_listens_for_the_new_one():
    workflow = workflow_create(name="Bounced", trigger_event="email.bounced")
    assert workflow.trigger_event == "email.bounce"
