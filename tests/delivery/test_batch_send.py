"""Workflow emails in one provider call: Postmark's /email/batch (templates_app.backends
.PostmarkEmailBackend), through the ledger (templates_app.services.messages_send_many) and the
engine (a task's Send Email visits go to SendEmail.run_many in groups of EMAIL_BATCH_SIZE).
Each email keeps the single send's guarantees: one ledger row per key, committed "sending"
before the call, never sent twice. Against bench/provider.py's Postmark stand-in, a real
HTTP/1.1 server on loopback that records every message it accepts."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import DatabaseError, connections
from django.utils import timezone

from bench.provider import ProviderStandIn
from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app import services
from templates_app.backends import PostmarkEmailBackend
from templates_app.models import Message, Template
from templates_app.policy import FrequencyCapped, parse_frequency_cap
from templates_app.rendering import TemplateError
from templates_app.services import (
    Outgoing,
    SendPermanentError,
    SendResult,
    SendSkipped,
    SendTransientError,
    messages_send_many,
)
from tests.conftest import chain
from workflows_app import engine
from workflows_app.models import Execution, StepRun
from workflows_app.steps import STEP_TYPES


@pytest.fixture
def provider(settings) -> Iterator[ProviderStandIn]:
    stand_in = ProviderStandIn().start()
    settings.EMAIL_BACKEND = "templates_app.backends.PostmarkEmailBackend"
    settings.ANYMAIL = {"POSTMARK_API_URL": stand_in.url, "POSTMARK_SERVER_TOKEN": stand_in.token}
    yield stand_in
    services._provider_connection_drop(getattr(services._kept, "entry", (None,))[0])
    stand_in.stop()


@pytest.fixture
def receipt(db):
    return Template.objects.create(
        name="Receipt",
        type=Template.TRANSACTIONAL,
        subject="Order {{ order }}",
        html="<p>Thanks {{ email }}</p>",
    )


def outgoing(template, n: int, **kwargs) -> Outgoing:
    contact = contact_upsert(email=f"c{n}@example.com", subscribed=True)[0]
    return Outgoing(
        idempotency_key=f"k-{n}", template=template, contact=contact, context={"order": n}, **kwargs
    )


def test_emails_go_in_one_call_each_with_its_own_row_and_id(provider, receipt):
    results = messages_send_many([outgoing(receipt, n) for n in range(5)])

    assert provider.calls == 1
    accepted = {a.to: a for a in provider.accepted()}
    assert sorted(accepted) == [f"c{n}@example.com" for n in range(5)]
    for n, result in enumerate(results):
        assert isinstance(result, SendResult) and result.sent_now
        row = Message.objects.get(idempotency_key=f"k-{n}")
        assert row.status == Message.SENT and row.sent_at is not None
        assert row.subject == f"Order {n}"
        # The provider's id for this very message, and our token in its metadata.
        assert row.provider_message_id == accepted[row.to_email].message_id
        assert accepted[row.to_email].message_token == row.token
    assert Event.objects.filter(name="email.sent").count() == 5


def test_keys_already_in_the_ledger_are_not_sent_again(provider, receipt):
    items = [outgoing(receipt, n) for n in range(3)]
    messages_send_many(items)
    again = messages_send_many(items)

    assert provider.calls == 1 and len(provider.accepted()) == 3
    assert all(isinstance(r, SendResult) and not r.sent_now for r in again)
    assert Message.objects.count() == 3


def test_a_row_left_sending_by_a_dead_worker_is_unknown_and_not_sent(provider, receipt):
    items = [outgoing(receipt, n) for n in range(2)]
    contact = items[0].contact
    # A worker inserted this row and died before (or while) calling the provider.
    Message.objects.create(
        idempotency_key="k-0", contact=contact, template=receipt, to_email=contact.email,
        status=Message.SENDING,
    )  # fmt: skip
    results = messages_send_many(items)

    assert isinstance(results[0], SendResult) and not results[0].sent_now
    assert results[0].message.status == Message.UNKNOWN
    assert [a.to for a in provider.accepted()] == ["c1@example.com"]


def test_a_key_another_worker_inserted_meanwhile_is_left_to_it(provider, receipt, monkeypatch):
    items = [outgoing(receipt, n) for n in range(2)]
    theirs = Message.objects.create(
        idempotency_key="k-1", contact=items[1].contact, template=receipt,
        to_email=items[1].contact.email, status=Message.SENDING,
    )  # fmt: skip
    # As if the ledger was read just before the other worker's insert.
    monkeypatch.setattr(type(Message.objects), "in_bulk", lambda self, *a, **k: {})
    results = messages_send_many(items)

    assert isinstance(results[1], SendResult) and not results[1].sent_now
    assert results[1].message.pk == theirs.pk
    assert [a.to for a in provider.accepted()] == ["c0@example.com"]
    assert Message.objects.get(pk=theirs.pk).status == Message.SENDING  # theirs to finish


def test_each_email_keeps_its_own_outcome(provider, receipt):
    marketing = Template.objects.create(
        name="News", type=Template.MARKETING, subject="News", html="<p>News</p>"
    )
    broken = Template.objects.create(
        name="Broken", type=Template.TRANSACTIONAL, subject="x", html="{{ 'a' | nosuchfilter }}"
    )
    unsubscribed = outgoing(marketing, 1)
    Contact.objects.filter(pk=unsubscribed.contact.pk).update(subscribed=False)
    items = [
        outgoing(receipt, 0),
        unsubscribed,
        outgoing(broken, 2),
        outgoing(marketing, 3, to_email="team@example.com"),  # CUSTOM: no subscription check
    ]
    results = messages_send_many(items)

    assert isinstance(results[0], SendResult) and results[0].message.status == Message.SENT
    assert isinstance(results[1], SendSkipped)
    assert isinstance(results[2], TemplateError)
    assert isinstance(results[3], SendResult) and results[3].message.to_email == "team@example.com"
    assert sorted(a.to for a in provider.accepted()) == ["c0@example.com", "team@example.com"]
    assert Message.objects.count() == 2


def test_a_message_the_provider_refuses_fails_alone(provider, receipt, monkeypatch):
    handle = provider._handle

    def refuse_c1(path, token, body):
        status, replies = handle(path, token, body)
        for reply in replies:
            if reply["To"] == "c1@example.com":
                reply.update(ErrorCode=406, Message="You tried to send to an inactive recipient")
        return status, replies

    monkeypatch.setattr(provider, "_handle", refuse_c1)
    results = messages_send_many([outgoing(receipt, n) for n in range(3)])

    assert isinstance(results[1], SendPermanentError)
    row = Message.objects.get(idempotency_key="k-1")
    assert row.status == Message.FAILED and "inactive recipient" in row.error
    assert Message.objects.filter(status=Message.SENT).count() == 2


@pytest.mark.parametrize(
    ("status", "expected"), [(503, SendTransientError), (401, SendPermanentError)]
)
def test_a_refused_call_is_each_emails_refusal(provider, receipt, monkeypatch, status, expected):
    monkeypatch.setattr(
        provider, "_handle", lambda path, token, body: (status, {"ErrorCode": 1, "Message": "no"})
    )
    results = messages_send_many([outgoing(receipt, n) for n in range(3)])

    assert all(isinstance(r, expected) for r in results)
    if expected is SendTransientError:  # nothing taken: the keys are free for the retries
        assert Message.objects.count() == 0
    else:
        assert set(Message.objects.values_list("status", flat=True)) == {Message.FAILED}


@pytest.mark.parametrize(
    "reply",
    [
        "not json",
        [{"ErrorCode": 0, "MessageID": "only-one"}],  # fewer results than messages
        {"ErrorCode": 0, "Message": "OK"},  # not a list
    ],
)
def test_an_answer_that_can_not_be_read_leaves_every_email_unknown(
    provider, receipt, monkeypatch, reply
):
    # The provider said 200: it may well have taken them all. Not sent again, not "failed"
    # (which a person might resend): unknown, for a person to decide.
    monkeypatch.setattr(provider, "_handle", lambda path, token, body: (200, reply))
    results = messages_send_many([outgoing(receipt, n) for n in range(3)])

    assert all(isinstance(r, SendResult) for r in results)
    assert set(Message.objects.values_list("status", flat=True)) == {Message.UNKNOWN}


def test_a_call_cut_off_mid_way_leaves_every_email_unknown(provider, receipt, settings):
    settings.ANYMAIL = {**settings.ANYMAIL, "REQUESTS_TIMEOUT": 0.3}
    provider.reset(latency=1.0)  # the provider takes them, after our timeout
    results = messages_send_many([outgoing(receipt, n) for n in range(3)])

    assert all(isinstance(r, SendResult) for r in results)
    assert set(Message.objects.values_list("status", flat=True)) == {Message.UNKNOWN}
    provider.reset(latency=0.0)
    messages_send_many([outgoing(receipt, n) for n in range(3)])  # the retried visits
    assert set(Message.objects.values_list("status", flat=True)) == {Message.UNKNOWN}
    assert provider.calls == 0  # never sent again


def test_a_row_the_database_refuses_fails_only_its_email(provider, receipt):
    long_subject = outgoing(receipt, 1)
    long_subject = Outgoing(**{**long_subject.__dict__, "context": {"order": "x" * 1200}})
    results = messages_send_many([outgoing(receipt, 0), long_subject, outgoing(receipt, 2)])

    assert isinstance(results[1], DatabaseError)  # 1,206 characters for a 998 column
    assert [isinstance(results[i], SendResult) for i in (0, 2)] == [True, True]
    assert sorted(a.to for a in provider.accepted()) == ["c0@example.com", "c2@example.com"]
    assert provider.calls == 1


def test_capped_emails_go_in_the_same_call_and_the_cap_holds(db, provider):
    news = Template.objects.create(
        name="News", type=Template.MARKETING, subject="News", html="<p>News</p>"
    )
    cap = parse_frequency_cap("1/7d")
    first, other = outgoing(news, 0, frequency_cap=cap), outgoing(news, 1, frequency_cap=cap)
    second = Outgoing(**{**first.__dict__, "idempotency_key": "k-0-again"})
    results = messages_send_many([first, second, other])

    assert isinstance(results[0], SendResult) and results[0].message.status == Message.SENT
    assert isinstance(results[1], FrequencyCapped)  # c0 had its one marketing email
    assert isinstance(results[2], SendResult)
    assert provider.calls == 1
    assert sorted(a.to for a in provider.accepted()) == ["c0@example.com", "c1@example.com"]


def test_a_message_anymail_can_not_build_fails_alone(provider, receipt):
    odd = Template.objects.create(
        name="Odd sender",
        type=Template.TRANSACTIONAL,
        subject="Hi",
        html="<p>Hi</p>",
        from_email="Acme, Inc <news@example.com>",  # an unquoted comma: anymail refuses it
    )
    results = messages_send_many([outgoing(receipt, 0), outgoing(odd, 1), outgoing(receipt, 2)])

    assert isinstance(results[1], SendPermanentError)
    assert Message.objects.get(idempotency_key="k-1").status == Message.FAILED
    assert Message.objects.filter(status=Message.SENT).count() == 2
    assert provider.calls == 1


def test_a_batch_past_postmarks_size_limit_is_cut_into_calls(provider, receipt, monkeypatch):
    monkeypatch.setattr(PostmarkEmailBackend, "batch_max_bytes", 2000)  # about three emails
    results = messages_send_many([outgoing(receipt, n) for n in range(8)])

    assert all(isinstance(r, SendResult) and r.sent_now for r in results)
    assert 2 <= provider.calls < 8
    assert len(provider.accepted()) == 8


def test_postmarks_bulk_api_setting_turns_batches_off(settings):
    settings.EMAIL_BACKEND = "templates_app.backends.PostmarkEmailBackend"
    assert STEP_TYPES["send_email"].batch_size() == 50
    settings.ANYMAIL = {"POSTMARK_USE_BULK_API": True}
    assert STEP_TYPES["send_email"].batch_size() == 1


# -- Through the engine (threads on PostgreSQL: transactional_db) --------------------------------


def start_runs(track, count: int) -> list[int]:
    for i in range(count):
        assert track.post({"event": "order.paid", "email": f"c{i}@example.com"}).status_code == 200
    return engine.executions_claim_due(now=timezone.now(), limit=1000)


def send_step(template: Template) -> dict:
    return {"key": "receipt", "type": "send_email", "config": {"template": template.name}}


@pytest.mark.django_db(transaction=True)
def test_a_tasks_send_visits_go_to_the_provider_in_groups(provider, settings, track, make_workflow):
    settings.EMAIL_BATCH_SIZE = 10
    template = Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Hi", html="<p>Hi {{ email }}</p>"
    )
    make_workflow(*chain(send_step(template)), trigger="order.paid")
    ids = start_runs(track, 25)

    assert engine.executions_advance(ids) == {Execution.COMPLETED: 25}

    assert provider.calls == 3  # 25 emails in three groups (9, 8, 8)
    accepted = [a.to for a in provider.accepted()]
    assert sorted(accepted) == sorted(f"c{i}@example.com" for i in range(25))
    visits = StepRun.objects.filter(execution_id__in=ids, step_key="receipt")
    assert visits.filter(status=StepRun.COMPLETED, message__status=Message.SENT).count() == 25
    engine.effects_pool_close()


@pytest.mark.django_db(transaction=True)
def test_a_worker_dying_after_the_call_sends_nothing_twice(
    provider, settings, track, make_workflow, monkeypatch
):
    template = Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Hi", html="<p>Hi</p>"
    )
    make_workflow(*chain(send_step(template)), trigger="order.paid")
    ids = start_runs(track, 6)

    class Killed(BaseException):
        """The process dying: nothing below catches it."""

    def die(sent):
        raise Killed()

    monkeypatch.setattr(services, "_sent", die)  # the provider took them; we die before the update
    with pytest.raises(Killed):
        engine.executions_advance(ids)
    monkeypatch.undo()
    assert len(provider.accepted()) == 6
    assert set(Message.objects.values_list("status", flat=True)) == {Message.SENDING}

    # The sweep hands the runs on once their lease is over; the next worker carries the visits on.
    Execution.objects.filter(pk__in=ids).update(lease_until=timezone.now())
    engine.executions_recover(now=timezone.now() + timezone.timedelta(seconds=1))
    again = engine.executions_claim_due(
        now=timezone.now() + timezone.timedelta(seconds=1), limit=100
    )
    assert sorted(again) == sorted(ids)
    assert engine.executions_advance(again) == {Execution.COMPLETED: 6}

    assert len(provider.accepted()) == 6  # not one sent twice
    assert set(Message.objects.values_list("status", flat=True)) == {Message.UNKNOWN}
    assert StepRun.objects.filter(execution_id__in=ids, status=StepRun.STARTED).count() == 0
    engine.effects_pool_close()
    connections.close_all()


def test_without_a_batch_api_each_email_is_its_own_call(settings):
    settings.EMAIL_BACKEND = "anymail.backends.postmark.EmailBackend"
    assert STEP_TYPES["send_email"].batch_size() == 1
    settings.EMAIL_BACKEND = "templates_app.backends.PostmarkEmailBackend"
    settings.EMAIL_BATCH_SIZE = 2000
    assert STEP_TYPES["send_email"].batch_size() == 500  # Postmark's limit
