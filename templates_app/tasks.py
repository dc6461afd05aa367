"""django-q2 task entry points of templates_app: they only call the sending service."""

from templates_app import sending


def deliver_messages(ids: list[int]) -> int:
    """Delivers the API sends among `ids` still queued (POST /v1/send); returns how many were
    sent now. Safe to run twice: each row is claimed by one conditional update."""
    return sending.messages_deliver(ids)
