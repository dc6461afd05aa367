from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.core import mail, signing
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from contacts_app.models import Contact
from contacts_app.services import UNSUBSCRIBE_SALT
from templates_app.models import Message, Template
from templates_app.services import template_update
from tests.conftest import chain, drain
from tests.flow import T0, WorkerKilled, crash_after, execution_of, history, track_ok
from workflows_app import engine
from workflows_app.files import document_export
from workflows_app.graph import GraphError
from workflows_app.models import Execution, StepRun

RICH_HTML = (
    "<p>top={{ firstName }} contact={{ contact.firstName }} last={{ contact.lastName }}</p>"
    "<p>email={{ email }} contact.email={{ contact.email }}</p>"
    "<p>plan={{ event.plan }} total={{ event.order.total }} coupon={{ event.coupon }}"
    " top-coupon=[{{ coupon }}]</p>"
    "<a href='{{ unsubscribeUrl }}'>Unsubscribe</a>"
)


def send(key="welcome", template="Welcome"):
    return {"key": key, "type": "send_email", "config": {"template": template}}


def tag(key="tag"):
    return {"key": key, "type": "update_contact", "config": {"set": {"after_send": True}}}


@pytest.fixture
def rich_template(db):
    return Template.objects.create(
        name="Rich",
        type=Template.MARKETING,
        subject="Hi {{ firstName }} from {{ workflow.name }}",
        html=RICH_HTML,
    )


@pytest.fixture
def receipt(db):
    return Template.objects.create(
        name="Receipt",
        type=Template.TRANSACTIONAL,
        subject="Receipt {{ event.order_id }}",
        html="<p>Order {{ event.order_id }}</p>",
    )


def test_it_renders_contact_data_event_data_and_reserved_variables(
    track, rich_template, make_workflow
):
    make_workflow(*chain(send(template="Rich")), name="Onboarding")
    track_ok(
        track,
        email="Ann@Example.com",
        data={
            "firstName": "Ann",
            "lastName": "O'Neil & Co",
            "plan": "pro",
            "order": {"total": 42},
            "coupon": {"value": "X1", "persistent": False},  # event only, not kept on the contact
        },
    )
    drain()

    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    contact = Contact.objects.get()
    assert sent.to == ["ann@example.com"]
    assert sent.subject == "Hi Ann from Onboarding"
    html = sent.alternatives[0][0]
    assert "top=Ann contact=Ann" in html
    assert "last=O&#39;Neil &amp; Co" in html  # HTML output is escaped
    assert "email=ann@example.com contact.email=ann@example.com" in html
    # Plunk's scope: the execution context is at top level too (the coupon is not kept on the
    # contact, but the event that started the run has it).
    assert "plan=pro total=42 coupon=X1 top-coupon=[X1]" in html
    # The text part is derived from the HTML when the template has none.
    assert "top=Ann contact=Ann" in sent.body

    token = html.split("/unsubscribe/")[1].split("'")[0]
    assert signing.loads(token, salt=UNSUBSCRIBE_SALT) == str(contact.pk)
    assert Client().get(f"/unsubscribe/{token}").status_code == 200


def test_it_records_the_send_in_the_ledger_under_the_visit_key(track, template, make_workflow):
    make_workflow(*chain(send()))
    track_ok(track, data={"firstName": "Ann"})
    drain()

    ex = execution_of()
    run = ex.step_runs.get(step_key="welcome")
    message = Message.objects.get()
    assert message.idempotency_key == f"exec-{ex.pk}-run-{run.pk}"
    assert message.status == Message.SENT
    assert message.sent_at is not None
    assert message.to_email == "ann@example.com"
    assert message.subject == "Welcome, Ann" == mail.outbox[0].subject
    assert message.template == template
    assert run.message_id == message.pk
    assert run.output["message_id"] == message.pk
    assert (run.status, run.branch) == (StepRun.COMPLETED, "next")
    with pytest.raises(IntegrityError), transaction.atomic():
        Message.objects.create(
            idempotency_key=message.idempotency_key,
            contact=message.contact,
            to_email="x@example.com",
            from_email="a@example.com",
            subject="again",
        )


def test_it_adds_one_click_unsubscribe_headers_to_marketing_mail(
    settings, track, template, make_workflow
):
    make_workflow(*chain(send()))
    track_ok(track)
    drain()

    sent = mail.outbox[0]
    url = sent.extra_headers["List-Unsubscribe"].strip("<>")
    assert url.startswith(settings.PUBLIC_URL + "/unsubscribe/")
    assert sent.extra_headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mime = sent.message()
    assert mime["List-Unsubscribe"].replace("\n", "").replace(" ", "") == f"<{url}>"
    assert mime["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # RFC 8058: a POST to that URL unsubscribes at once.
    path = url[url.index("/unsubscribe/") :]
    assert Client().post(path).status_code == 200
    assert Contact.objects.get().subscribed is False


def test_it_sends_transactional_mail_without_unsubscribe_headers(track, receipt, make_workflow):
    make_workflow(*chain(send("receipt", "Receipt")), trigger="order.completed")
    track_ok(track, event="order.completed", data={"order_id": "A-17"})
    drain()

    sent = mail.outbox[0]
    assert sent.subject == "Receipt A-17"
    assert "List-Unsubscribe" not in sent.extra_headers


def test_it_skips_marketing_mail_to_an_unsubscribed_contact_and_goes_on(
    track, template, make_workflow
):
    make_workflow(*chain(send(), tag()))
    track_ok(track, subscribed=False)
    drain()

    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("welcome", StepRun.SKIPPED, "next"),
        ("tag", StepRun.COMPLETED, "next"),
    ]
    assert "unsubscribed" in ex.step_runs.get(step_key="welcome").output["skipped"]
    assert mail.outbox == []
    assert not Message.objects.exists()
    assert Contact.objects.get().data["after_send"] is True


def test_it_checks_the_subscription_when_sending_not_when_the_run_started(
    track, template, make_workflow
):
    delay = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}}
    make_workflow(*chain(delay, send()))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        drain()
        contact = Contact.objects.get()
        contact.subscribed = False
        contact.save()
        traveller.move_to(T0 + timedelta(hours=1))
        drain()

    assert execution_of().step_runs.get(step_key="welcome").status == StepRun.SKIPPED
    assert mail.outbox == []


def test_a_renamed_template_is_still_sent_by_the_steps_that_use_it(track, template, make_workflow):
    """Steps point at their template by key: renaming it (as the admin and the API do, through
    template_update) while a run waits before the send fails nothing, and the mail that goes
    out is the renamed template's, for that run and for runs started after."""
    delay = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "hours"}}
    workflow = make_workflow(*chain(delay, send()), name="Onboarding")
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track, data={"firstName": "Ann"})
        drain()
        assert execution_of().status == Execution.WAITING and mail.outbox == []

        template_update(
            template=template, name="Welcome, renamed", subject="Renamed for {{ firstName }}"
        )
        track_ok(track, email="bob@example.com", data={"firstName": "Bob"})
        for hours in (1, 2):  # Ann's delay ends, then Bob's
            traveller.move_to(T0 + timedelta(hours=hours))
            drain()

    for email in ("ann@example.com", "bob@example.com"):
        execution = execution_of(email)
        assert execution.status == Execution.COMPLETED, execution.error
        assert execution.step_runs.get(step_key="welcome").status == StepRun.COMPLETED
    assert sorted((m.to[0], m.subject) for m in mail.outbox) == [
        ("ann@example.com", "Renamed for Ann"),
        ("bob@example.com", "Renamed for Bob"),
    ]
    assert set(Message.objects.values_list("template_id", flat=True)) == {template.pk}
    # Documents name the template by its new name.
    [exported] = document_export([workflow.name])["workflows"]
    assert exported["steps"][1]["config"]["template"] == "Welcome, renamed"


def test_it_sends_transactional_mail_to_an_unsubscribed_contact(track, receipt, make_workflow):
    make_workflow(*chain(send("receipt", "Receipt")), trigger="order.completed")
    track_ok(track, event="order.completed", subscribed=False, data={"order_id": "B-2"})
    drain()

    assert [m.to for m in mail.outbox] == [["ann@example.com"]]
    assert Message.objects.get().status == Message.SENT
    assert execution_of().step_runs.get().status == StepRun.COMPLETED


def test_it_never_sends_twice_when_the_worker_dies_after_sending(track, template, make_workflow):
    make_workflow(*chain(send(), tag()))
    track_ok(track, data={"firstName": "Ann"})
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)

    with crash_after("send_email"), pytest.raises(WorkerKilled):
        engine.execution_advance(pk)
    assert len(mail.outbox) == 1
    ex = Execution.objects.get(pk=pk)
    assert (ex.status, ex.current_step.key) == (Execution.RUNNING, "welcome")
    assert history(ex) == [("welcome", StepRun.STARTED, "")]

    # The task is delivered again: the visit is finished from the ledger, not repeated.
    assert engine.execution_advance(pk) == Execution.COMPLETED
    assert engine.execution_advance(pk) == ""
    drain(now=timezone.now() + timedelta(days=1))
    assert len(mail.outbox) == 1
    message = Message.objects.get()
    ex.refresh_from_db()
    assert history(ex) == [
        ("welcome", StepRun.COMPLETED, "next"),
        ("tag", StepRun.COMPLETED, "next"),
    ]
    assert ex.step_runs.get(step_key="welcome").message_id == message.pk


def test_it_does_not_send_again_when_the_worker_died_during_the_provider_call(
    track, template, make_workflow
):
    make_workflow(*chain(send()))
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        [pk] = engine.executions_claim_due(now=T0, limit=10)
        backend = "django.core.mail.backends.locmem.EmailBackend.send_messages"
        with mock.patch(backend, side_effect=WorkerKilled), pytest.raises(WorkerKilled):
            engine.execution_advance(pk)
        assert Message.objects.get().status == Message.SENDING

        # Whether the provider took it is unknown: never risk a second copy.
        traveller.move_to(T0 + timedelta(minutes=11))
        assert engine.execution_advance(pk) == Execution.COMPLETED

    assert mail.outbox == []
    message = Message.objects.get()
    assert message.status == Message.UNKNOWN
    assert Execution.objects.get(pk=pk).step_runs.get().message_id == message.pk


def test_it_retries_a_transient_provider_error_and_then_sends_once(track, template, make_workflow):
    make_workflow(*chain(send()))
    backend = "django.core.mail.backends.locmem.EmailBackend.send_messages"
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        with mock.patch(backend, side_effect=ConnectionRefusedError("provider down")):
            drain(now=T0)
        ex = execution_of()
        run = ex.step_runs.get()
        assert (ex.status, run.status, run.attempts) == (Execution.RUNNING, StepRun.STARTED, 1)
        assert "provider down" in run.error
        assert ex.wake_at > T0
        assert not Message.objects.exists()

        traveller.move_to(ex.wake_at)
        drain(now=ex.wake_at)

    ex.refresh_from_db()
    assert ex.status == Execution.COMPLETED
    assert len(mail.outbox) == 1
    assert Message.objects.get().idempotency_key == f"exec-{ex.pk}-run-{run.pk}"


def test_it_hands_the_ledger_key_to_an_anymail_provider(settings, track, template, make_workflow):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    make_workflow(*chain(send()))
    track_ok(track)
    drain()

    message = Message.objects.get()
    params = mail.outbox[0].anymail_test_params
    assert params["metadata"]["idempotency_key"] == message.idempotency_key
    assert params["tags"] == ["marketing"]
    assert message.status == Message.SENT


# --- Plunk's shape: templateId and a CUSTOM recipient -------------------------------------------


def send_to(recipient, key="notify", template="Welcome", field="template"):
    config = {field: template}
    if recipient is not None:
        config["recipient"] = recipient
    return {"key": key, "type": "send_email", "config": config}


CUSTOM = {"type": "CUSTOM", "customEmail": "sales@team.example"}


def test_a_custom_recipient_gets_it_though_the_contact_is_unsubscribed(
    track, template, make_workflow
):
    make_workflow(*chain(send_to(CUSTOM), tag()))
    track_ok(track, data={"firstName": "Ann"}, subscribed=False)
    drain()

    ex = execution_of()
    assert ex.status == Execution.COMPLETED, ex.error
    [sent] = mail.outbox
    assert sent.to == ["sales@team.example"]
    assert sent.subject == "Welcome, Ann"  # rendered with the contact's data
    # The unsubscribe link in the body is the contact's; a header would let the team's mail
    # client unsubscribe the contact in one click, so there is none.
    assert "List-Unsubscribe" not in sent.extra_headers
    message = Message.objects.get()
    run = ex.step_runs.get(step_key="notify")
    assert (message.contact, message.to_email) == (Contact.objects.get(), "sales@team.example")
    assert message.idempotency_key == f"exec-{ex.pk}-run-{run.pk}"
    assert run.message_id == message.pk
    assert run.output["to"] == "sales@team.example"
    assert Contact.objects.get().subscribed is False


def test_a_custom_recipient_is_sent_once_per_visit(track, template, make_workflow):
    make_workflow(*chain(send_to(CUSTOM), tag()))
    track_ok(track)
    [pk] = engine.executions_claim_due(now=timezone.now(), limit=10)
    with crash_after("send_email"), pytest.raises(WorkerKilled):
        engine.execution_advance(pk)
    # The visit is run again: the ledger has it, nothing is sent again.
    assert engine.execution_advance(pk) == Execution.COMPLETED
    drain(now=timezone.now() + timedelta(days=1))
    assert [m.to for m in mail.outbox] == [["sales@team.example"]]
    assert Message.objects.count() == 1


def test_a_contact_recipient_is_the_default_and_still_checks_the_subscription(
    track, template, make_workflow
):
    make_workflow(*chain(send_to({"type": "CONTACT", "customEmail": ""})))
    track_ok(track, subscribed=False)
    drain()
    assert mail.outbox == []
    assert history(execution_of()) == [("notify", StepRun.SKIPPED, "next")]


@pytest.mark.parametrize(
    "config, stored",
    [
        ({"templateId": "Welcome"}, {"template": "Welcome"}),
        (
            {"templateId": "Welcome", "recipient": {"type": "CONTACT", "customEmail": ""}},
            {"template": "Welcome"},  # the contact is the default: one stored form
        ),
        (
            {"template": "Welcome", "recipient": {"type": "CUSTOM", "customEmail": " a@b.io "}},
            {"template": "Welcome", "recipient": {"type": "CUSTOM", "customEmail": "a@b.io"}},
        ),
        ({"template": "Welcome"}, {"template": "Welcome"}),
    ],
)
def test_it_accepts_plunks_shape_and_stores_ours(template, make_workflow, config, stored):
    workflow = make_workflow(*chain({"key": "notify", "type": "send_email", "config": config}))
    step = workflow.steps.get()
    assert step.template == template
    [exported] = document_export([workflow.name])["workflows"][0]["steps"]
    assert exported["config"] == stored


def test_a_template_id_that_is_a_number_is_our_templates_key(template, make_workflow):
    workflow = make_workflow(*chain(send_to(None, template=template.pk, field="templateId")))
    assert workflow.steps.get().template == template
    [exported] = document_export([workflow.name])["workflows"][0]["steps"]
    assert exported["config"] == {"template": "Welcome"}


@pytest.mark.parametrize(
    "config, message",
    [
        ({"templateId": 999_999}, "template #999999 does not exist"),
        ({"templateId": "Nope"}, "template 'Nope' does not exist"),
        ({"template": "Welcome", "recipient": {"type": "CUSTOM"}}, "needs customEmail"),
        (
            {"template": "Welcome", "recipient": {"type": "CUSTOM", "customEmail": "not-an-email"}},
            "not an email address",
        ),
        ({"template": "Welcome", "recipient": {"type": "TEAM"}}, "recipient.type"),
        ({"template": "Welcome", "recipient": {"type": "CUSTOM", "cc": "x@y.z"}}, "recipient.cc"),
    ],
)
def test_it_refuses_a_bad_recipient_or_template(template, make_workflow, config, message):
    with pytest.raises(GraphError) as caught:
        make_workflow(*chain({"key": "notify", "type": "send_email", "config": config}))
    assert message in str(caught.value)
