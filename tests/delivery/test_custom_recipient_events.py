"""A message sent to a fixed address (Send Email's CUSTOM recipient, e.g. a team inbox) is
recorded against the contact, but what happens to it in that inbox is not the contact's doing:
its bounce or complaint must not unsubscribe the contact."""

import pytest

from contacts_app.models import Contact, Event
from contacts_app.services import contact_upsert
from templates_app.models import Message
from templates_app.services import message_apply_provider_event

pytestmark = pytest.mark.django_db


def message_to(contact, to_email):
    return Message.objects.create(
        idempotency_key=f"k-{to_email}",
        contact=contact,
        to_email=to_email,
        from_email="hello@example.com",
        subject="New signup",
        status=Message.SENT,
    )


@pytest.mark.parametrize("event_type", ["bounced", "complained"])
def test_a_bounce_at_a_fixed_address_leaves_the_contact_subscribed(event_type):
    contact, _ = contact_upsert(email="cust@example.com")
    message = message_to(contact, "team@example.com")
    assert message_apply_provider_event(message=message, event_type=event_type)
    assert Contact.objects.get(pk=contact.pk).subscribed is True
    assert not Event.objects.filter(name="contact.unsubscribed").exists()
    assert Message.objects.get(pk=message.pk).status == event_type


def test_a_bounce_at_the_contacts_own_address_unsubscribes_it():
    contact, _ = contact_upsert(email="cust@example.com")
    message = message_to(contact, "cust@example.com")
    message_apply_provider_event(message=message, event_type="complained")
    assert Contact.objects.get(pk=contact.pk).subscribed is False
    assert Event.objects.filter(name="contact.unsubscribed", contact=contact).count() == 1
