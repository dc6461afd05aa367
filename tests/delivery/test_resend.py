"""The ledger's `unknown` state is visible to ops, and a person may decide to resend."""

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.contrib.auth.models import Permission
from django.core import mail
from django.test import Client
from django.urls import reverse

from contacts_app.services import contact_set_subscribed, contact_upsert
from templates_app.models import Message, Template
from templates_app.services import ResendRefused, message_resend, message_send
from tests.conftest import chain
from tests.flow import T0, WorkerKilled, track_ok
from workflows_app import engine
from workflows_app.models import Execution


@pytest.fixture
def anymail_test(settings):
    settings.EMAIL_BACKEND = "anymail.backends.test.EmailBackend"
    settings.EMAIL_PROVIDER_IDEMPOTENT = False


@pytest.fixture
def contact(db):
    return contact_upsert(email="ann@example.com", data={"firstName": "Ann"})[0]


@pytest.fixture
def marketing(db):
    return Template.objects.create(name="M", subject="Hi {{ firstName }}", html="<p>News</p>")


@pytest.fixture
def transactional(db):
    return Template.objects.create(name="T", type="transactional", subject="Receipt", html="x")


def left_unknown(contact, template, key="exec-1-run-1"):
    """What a worker killed between the provider call and the ledger update leaves, once the
    run's retry has looked at it: an `unknown` row."""
    Message.objects.create(
        idempotency_key=key,
        contact=contact,
        template=template,
        to_email=contact.email,
        from_email="a@b.c",
        subject="Hi Ann",
        html="<p>News</p>",
        text="News",
        status=Message.SENDING,
    )
    message = message_send(idempotency_key=key, template=template, contact=contact).message
    assert message.status == Message.UNKNOWN
    return message


@pytest.fixture
def ops(db, django_user_model):
    user = django_user_model.objects.create_user("ops", "ops@example.com", "pw-123456789")
    user.is_staff = True
    user.save()
    # Messages are contact data: reading them takes the contact permission too.
    user.user_permissions.add(Permission.objects.get(codename="view_message"))
    user.user_permissions.add(Permission.objects.get(codename="view_contact"))
    return user


def login(user):
    client = Client()
    client.force_login(user)
    return client


def test_it_resends_an_unknown_message_as_a_new_row_recorded_as_theirs(
    contact, marketing, anymail_test, ops
):
    old = left_unknown(contact, marketing)
    before = Message.objects.values().get(pk=old.pk)

    new = message_resend(message=old, user=ops)

    assert new.pk != old.pk
    assert new.idempotency_key == "exec-1-run-1:resend-1"
    assert (new.resend_of, new.resent_by, new.status) == (old, ops, Message.SENT)
    assert new.provider_message_id and new.token != old.token
    assert Message.objects.values().get(pk=old.pk) == before  # the old row stays as it was
    [sent] = mail.outbox
    assert (sent.subject, sent.to) == ("Hi Ann", ["ann@example.com"])
    assert sent.anymail_test_params["metadata"]["message_token"] == new.token
    assert "List-Unsubscribe" in sent.extra_headers  # the same delivery code


def test_each_row_is_resent_once_and_a_failed_resend_can_be_resent_again(
    contact, marketing, anymail_test, ops
):
    old = left_unknown(contact, marketing)
    first = message_resend(message=old, user=ops)
    with pytest.raises(ResendRefused, match="already been resent"):
        message_resend(message=old, user=ops)
    with pytest.raises(ResendRefused, match="this one is sent"):
        message_resend(message=first, user=ops)
    Message.objects.filter(pk=first.pk).update(status=Message.FAILED)
    second = message_resend(message=first, user=ops)
    assert second.idempotency_key == "exec-1-run-1:resend-2"
    assert second.resend_of == first
    assert len(mail.outbox) == 2


@pytest.mark.parametrize(
    "status",
    [Message.QUEUED, Message.SENDING, Message.SENT, Message.DELIVERED, Message.BOUNCED],
)
def test_it_refuses_to_resend_anything_but_unknown_or_failed(
    contact, marketing, anymail_test, ops, status
):
    old = left_unknown(contact, marketing)
    Message.objects.filter(pk=old.pk).update(status=status)
    with pytest.raises(ResendRefused, match="Only a message whose delivery is unknown or failed"):
        message_resend(message=old, user=ops)
    assert Message.objects.count() == 1 and mail.outbox == []


def test_it_refuses_marketing_to_a_contact_who_unsubscribed_since(
    contact, marketing, transactional, anymail_test, ops
):
    news = left_unknown(contact, marketing, key="k-news")
    receipt = left_unknown(contact, transactional, key="k-receipt")
    contact_set_subscribed(contact=contact, subscribed=False)
    with pytest.raises(ResendRefused, match="has unsubscribed since"):
        message_resend(message=news, user=ops)
    assert message_resend(message=receipt, user=ops).status == Message.SENT  # always sent
    assert len(mail.outbox) == 1


def test_a_failed_message_may_be_resent_too(contact, transactional, anymail_test, ops):
    old = left_unknown(contact, transactional)
    Message.objects.filter(pk=old.pk).update(status=Message.FAILED)
    assert message_resend(message=old, user=ops).status == Message.SENT


# --- Admin ----------------------------------------------------------------------------------


def test_the_message_list_filters_what_needs_a_decision(contact, marketing, anymail_test, ops):
    unknown = left_unknown(contact, marketing, key="k-unknown")
    message_send(idempotency_key="k-sent", template=marketing, contact=contact)
    page = login(ops).get("/admin/templates_app/message/?decision=unknown")
    assert page.status_code == 200
    assert [m.pk for m in page.context["cl"].result_list] == [unknown.pk]


def test_only_a_user_with_the_resend_permission_can_resend(contact, marketing, anymail_test, ops):
    old = left_unknown(contact, marketing)
    client = login(ops)
    change = client.get(f"/admin/templates_app/message/{old.pk}/change/")
    assert b'id="delivery-unknown"' in change.content
    assert b"Resend as a new message" not in change.content
    url = reverse("admin:templates_app_message_resend", args=[old.pk])
    assert client.post(url).status_code == 403
    assert Message.objects.count() == 1 and mail.outbox == []

    ops.user_permissions.add(Permission.objects.get(codename="resend_message"))
    client = login(ops)
    assert (
        b"Resend as a new message"
        in client.get(f"/admin/templates_app/message/{old.pk}/change/").content
    )
    assert client.get(url).status_code == 403  # a GET never sends
    response = client.post(url)
    new = Message.objects.get(resend_of=old)
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:templates_app_message_change", args=[new.pk])
    assert new.resent_by == ops and len(mail.outbox) == 1


def test_the_admin_says_why_a_resend_is_refused(contact, marketing, anymail_test, ops):
    old = left_unknown(contact, marketing)
    contact_set_subscribed(contact=contact, subscribed=False)
    ops.user_permissions.add(Permission.objects.get(codename="resend_message"))
    client = login(ops)
    response = client.post(
        reverse("admin:templates_app_message_resend", args=[old.pk]), follow=True
    )
    assert "has unsubscribed since" in response.content.decode()
    assert Message.objects.count() == 1 and mail.outbox == []


def test_the_execution_page_marks_a_send_left_unknown(track, template, make_workflow, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    workflow = make_workflow(
        *chain({"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}})
    )
    with time_machine.travel(T0, tick=False) as traveller:
        track_ok(track)
        [pk] = engine.executions_claim_due(now=T0, limit=10)
        backend = "django.core.mail.backends.locmem.EmailBackend.send_messages"
        with mock.patch(backend, side_effect=WorkerKilled), pytest.raises(WorkerKilled):
            engine.execution_advance(pk)
        traveller.move_to(T0 + timedelta(minutes=11))
        engine.execution_advance(pk)
    message = Message.objects.get(status=Message.UNKNOWN)

    from django.contrib.auth import get_user_model

    boss = get_user_model().objects.create_superuser("boss", "boss@example.com", "pw-123456789")
    page = login(boss).get(
        reverse("admin:workflows_app_workflow_execution", args=[workflow.pk, pk])
    )
    assert page.status_code == 200
    html = page.content.decode()
    assert "Delivery unknown" in html
    assert reverse("admin:templates_app_message_change", args=[message.pk]) in html

    # Resending from there leaves the run and the old row alone.
    response = login(boss).post(reverse("admin:templates_app_message_resend", args=[message.pk]))
    assert response.status_code == 302
    assert Message.objects.get(pk=message.pk).status == Message.UNKNOWN
    assert Message.objects.get(resend_of=message).status == Message.SENT
    assert Execution.objects.get(pk=pk).status == Execution.COMPLETED
    assert len(mail.outbox) == 1


def test_the_list_action_resends_the_unknown_and_refuses_the_rest(
    contact, marketing, anymail_test, ops
):
    unknown = left_unknown(contact, marketing, key="k-unknown")
    sent = message_send(idempotency_key="k-sent", template=marketing, contact=contact).message
    ops.user_permissions.add(Permission.objects.get(codename="resend_message"))
    response = login(ops).post(
        "/admin/templates_app/message/",
        {"action": "resend_selected", "_selected_action": [unknown.pk, sent.pk]},
        follow=True,
    )
    notes = [str(m) for m in response.context["messages"]]
    assert f"Message {unknown.pk} resent as message" in " ".join(notes)
    assert f"Message {sent.pk} not resent" in " ".join(notes)
    assert Message.objects.filter(resend_of=unknown).count() == 1
    assert not Message.objects.filter(resend_of=sent).exists()
    assert len(mail.outbox) == 2  # the original "k-sent" and the one resend
