"""Invariants the database itself enforces, whatever code path writes."""

import pytest
from django.db import IntegrityError, transaction

from contacts_app.models import Contact
from contacts_app.services import contact_upsert
from workflows_app.models import Execution
from workflows_app.services import workflow_create


@pytest.fixture
def pair(db):
    workflow = workflow_create(name="W", trigger_event="e", enabled=True)
    contact, _ = contact_upsert(email="ann@example.com")
    return workflow, contact


def test_a_second_entry_into_a_no_reentry_workflow_is_refused_even_after_the_first_ended(pair):
    workflow, contact = pair
    Execution.objects.create(
        workflow=workflow, contact=contact, status=Execution.COMPLETED, once=True
    )
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(workflow=workflow, contact=contact, once=True)


def test_two_active_runs_of_one_workflow_for_one_contact_are_refused(pair):
    workflow, contact = pair
    Execution.objects.create(workflow=workflow, contact=contact, status=Execution.WAITING)
    with pytest.raises(IntegrityError), transaction.atomic():
        Execution.objects.create(workflow=workflow, contact=contact, status=Execution.RUNNING)
    # Once the first has ended, a new run may start (re-entry on).
    Execution.objects.update(status=Execution.COMPLETED)
    Execution.objects.create(workflow=workflow, contact=contact, status=Execution.RUNNING)
    assert Execution.objects.count() == 2


def test_emails_are_stored_lower_case_only(db):
    with pytest.raises(IntegrityError), transaction.atomic():
        Contact.objects.bulk_create([Contact(email="Ann@Example.com")])
