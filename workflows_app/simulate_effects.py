"""The dry run's stand-in for the outside world (RunContext.dry_run): what the steps would send,
call and write, recorded instead of done. Each method takes the real function's arguments and
follows its rules up to the point where the real one would touch the outside world."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings

from contacts_app.models import Contact
from contacts_app.services import (
    ContactDataTooLarge,
    contact_data_changes,
    contact_data_size,
    subscription_event_name,
    unsubscribe_url,
)
from templates_app.models import Message, Template
from templates_app.policy import FrequencyCap, FrequencyCapped, marketing_sent_count
from templates_app.services import SendResult, SendSkipped, template_render
from workflows_app.outbound import METHODS, Refused, Reply, literal_refusal, sign_headers
from workflows_app.steps.base import RunContext


class DryRunEffects:
    """What the steps would send, call and write, recorded instead (RunContext.dry_run). Each
    method takes the real function's arguments and follows its rules up to the point where
    the real one would touch the outside world."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.step = ""  # the key of the step running now
        self.now = start  # the virtual time of its visit
        self.emails: list[dict[str, Any]] = []
        self.webhooks: list[dict[str, Any]] = []
        self.contact_change: dict[str, Any] | None = None

    def message_send(
        self,
        *,
        idempotency_key: str,
        template: Template,
        contact: Contact,
        context: dict[str, Any] | None = None,
        workflow_name: str = "",
        to_email: str | None = None,
        frequency_cap: FrequencyCap | None = None,
    ) -> SendResult:
        # templates_app.services.message_send's rules: marketing mail to the contact only while
        # they are subscribed (a fixed recipient is not the contact), and within the cap.
        to_contact = template.type == Template.MARKETING and to_email is None
        if to_contact and not contact.subscribed:
            raise SendSkipped("skipped: unsubscribed")
        if to_contact and frequency_cap is not None:
            self._check_cap(contact, frequency_cap)
        rendered = template_render(
            template=template, contact=contact, context=context, workflow_name=workflow_name
        )
        to = contact.email if to_email is None else to_email
        # templates_app.services._build_email's: one-click unsubscribe on marketing mail to
        # the contact.
        headers = (
            {
                "List-Unsubscribe": f"<{unsubscribe_url(contact)}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
            if template.type == Template.MARKETING and to.lower() == contact.email.lower()
            else {}
        )
        self.emails.append(
            {
                "step": self.step,
                "to": to,
                "from": template.from_email or settings.DEFAULT_FROM_EMAIL,
                "reply_to": template.reply_to,
                "subject": rendered.subject,
                "html": rendered.html,
                "text": rendered.text,
                "headers": headers,
                "template": template.name,
                "type": template.type,
                "at": (self.now - self.start).total_seconds(),
                "at_time": self.now.isoformat(),
            }
        )
        message = Message(
            template=template,
            to_email=to,
            subject=rendered.subject,
            html=rendered.html,
            text=rendered.text,
            status=Message.SENT,
        )
        return SendResult(message, sent_now=True)

    def _check_cap(self, contact: Contact, cap: FrequencyCap) -> None:
        """FrequencyCapped when one more marketing email to the contact at the virtual time
        would go over `cap`: counting the ledger's (a stored contact's real sends, up to now)
        and this dry run's own, in the cap's window before the virtual time."""
        since = self.now - cap.window
        sent = marketing_sent_count(contact=contact, since=since) if contact.pk else 0
        sent += sum(
            1
            for email in self.emails
            if email["type"] == Template.MARKETING
            and email["to"].lower() == contact.email.lower()
            and self.start + timedelta(seconds=email["at"]) > since
        )
        if sent >= cap.limit:
            raise FrequencyCapped(
                f"frequency cap: {sent} marketing email{'' if sent == 1 else 's'} to this "
                f"contact in the last {cap.describe_window()} (cap {cap.text})"
            )

    def post_json(
        self,
        *,
        url: str,
        payload: Any,
        headers: dict[str, str],
        timeout: float,
        secret: str,
        msg_id: str,
        at: datetime,
        method: str = "POST",
    ) -> Reply:
        # outbound.post_json's request, up to the network: the same checks, body and headers
        # (signed with the workflow's secret at the virtual time).
        if url.split(":", 1)[0].lower() not in ("http", "https"):
            raise Refused("only http and https URLs are allowed")
        if method not in METHODS:
            raise Refused(f"the method must be one of {', '.join(METHODS)}")
        # The guard judges the address a name resolves to, which a dry run does not look up;
        # an address written in the URL it can judge.
        if (refusal := literal_refusal(url)) is not None:
            raise Refused(refusal)
        body = "" if method == "GET" else json.dumps(payload, separators=(",", ":"), default=str)
        self.webhooks.append(
            {
                "step": self.step,
                "method": method,
                "url": url,
                "headers": {
                    **headers,
                    **({} if method == "GET" else {"Content-Type": "application/json"}),
                    **sign_headers(secret=secret, msg_id=msg_id, body=body, at=at),
                },
                "body": None if method == "GET" else json.loads(body),
                "timeout_seconds": timeout,
            }
        )
        return Reply(200, {}, b"", False)

    def contact_update_data(
        self,
        *,
        contact: Contact,
        set: dict[str, Any] | None = None,  # noqa: A002 - the real function's name
        unset: list[str] | None = None,
        subscribed: bool | None = None,
    ) -> Contact:
        # contacts_app.services.contact_update_data's rules, on the dry run's copy.
        to_set, nulls = contact_data_changes(set)
        to_unset = list(dict.fromkeys([*(unset or []), *nulls]))
        data = {**contact.data, **to_set}
        for key in to_unset:
            data.pop(key, None)
        limit = settings.CONTACT_MAX_DATA_BYTES
        if to_set and limit and (size := contact_data_size(data)) > limit:
            raise ContactDataTooLarge(limit, size)
        now_subscribed = contact.subscribed if subscribed is None else subscribed
        self.contact_change = {
            "set": to_set,
            "unset": to_unset,
            "subscribed": subscribed,
            "data": data,
            # A real change of subscription records this system event.
            "event": (
                subscription_event_name(now_subscribed)
                if now_subscribed != contact.subscribed
                else None
            ),
        }
        return contact_copy(contact, data=data, subscribed=now_subscribed)


def contact_copy(contact: Contact, **changes: Any) -> Contact:
    values = {"data": dict(contact.data or {}), "subscribed": contact.subscribed, **changes}
    # id=None for a made-up contact: a model default would give it a random one (a Split
    # keys on it; without one it uses the address, always the same).
    return Contact(
        id=contact.pk,
        email=contact.email,
        created_at=contact.created_at,
        updated_at=contact.updated_at,
        **values,
    )


@dataclass
class DryRunContext(RunContext):
    visit: int = 0

    @property
    def visit_key(self) -> str:
        # No rows, so no ids: a webhook's `webhook-id` is this instead of exec-<id>-run-<id>.
        return f"dry-run-{self.visit}"
