"""Event names that changed: the email events took Plunk's names (migration 0005 renamed every
stored reference). A name from before, in a file exported earlier or typed from habit, means
the new one, so every place that takes an event name a workflow listens for maps it."""

LEGACY_EVENT_NAMES = {
    "email.delivered": "email.delivery",
    "email.opened": "email.open",
    "email.clicked": "email.click",
    "email.bounced": "email.bounce",
    "email.complained": "email.complaint",
}


def current_event_name(name: str) -> str:
    return LEGACY_EVENT_NAMES.get(name, name)
