"""The contact's own pages, opened from links in email (`unsubscribeUrl`, `subscribeUrl`,
`manageUrl`). Each link carries a signed token of its own kind; GET only shows the page (link
scanners open links), POST acts. Every change goes through `contact_set_subscribed`.

The unsubscribe page's POST is also the RFC 8058 one-click target of the List-Unsubscribe-Post
header. While the database is down every page answers 503 with a "try again" page, and the
links keep working afterwards.
"""

from functools import wraps

from django.core import signing
from django.db import OperationalError
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts_app.models import Contact
from contacts_app.services import (
    MANAGE_SALT,
    SUBSCRIBE_SALT,
    UNSUBSCRIBE_SALT,
    contact_set_subscribed,
)

MAX_AGE = 60 * 60 * 24 * 365  # a year-old email's link still works


def _link_page(link: str):
    """A public page opened by a signed link: GET and POST only, no CSRF token (mail clients
    POST without one; the signed token is the credential), 503 while the database is down."""

    def decorate(view):
        @csrf_exempt
        @require_http_methods(["GET", "POST"])
        @wraps(view)
        def page(request, token: str):
            try:
                return view(request, token)
            except OperationalError:
                # The database is down or restarting: say so kindly; the link keeps working.
                response = render(
                    request,
                    "contacts_app/unsubscribe_unavailable.html",
                    {"link": link},
                    status=503,
                )
                response["Retry-After"] = "60"
                return response

        return page

    return decorate


def _contact(token: str, salt: str) -> Contact | None:
    try:
        contact_id = signing.loads(token, salt=salt, max_age=MAX_AGE)
        return Contact.objects.get(pk=contact_id)
    except (signing.BadSignature, Contact.DoesNotExist, ValueError):
        return None


def _invalid(request, link: str):
    return render(request, "contacts_app/unsubscribe_invalid.html", {"link": link}, status=400)


def _set(contact: Contact, subscribed: bool) -> None:
    contact_set_subscribed(contact=contact, subscribed=subscribed)
    contact.subscribed = subscribed


@_link_page("unsubscribe")
def unsubscribe(request, token: str):
    contact = _contact(token, UNSUBSCRIBE_SALT)
    if contact is None:
        return _invalid(request, "unsubscribe")
    done = None
    if request.method == "POST":
        subscribe = request.POST.get("action") == "resubscribe"
        _set(contact, subscribe)
        done = "resubscribed" if subscribe else "unsubscribed"
    return render(
        request, "contacts_app/unsubscribe.html", {"contact": contact, "done": done, "token": token}
    )


@_link_page("subscribe")
def subscribe(request, token: str):
    """Resubscribes after a confirmation: GET asks, POST subscribes."""
    contact = _contact(token, SUBSCRIBE_SALT)
    if contact is None:
        return _invalid(request, "subscribe")
    done = False
    if request.method == "POST":
        _set(contact, True)
        done = True
    return render(request, "contacts_app/subscribe.html", {"contact": contact, "done": done})


@_link_page("preferences")
def manage(request, token: str):
    """The contact's preferences: the current state and a button to change it."""
    contact = _contact(token, MANAGE_SALT)
    if contact is None:
        return _invalid(request, "preferences")
    done = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action not in ("subscribe", "unsubscribe"):
            return render(
                request,
                "contacts_app/manage.html",
                {"contact": contact, "error": "Choose subscribe or unsubscribe."},
                status=400,
            )
        _set(contact, action == "subscribe")
        done = "subscribed" if contact.subscribed else "unsubscribed"
    return render(request, "contacts_app/manage.html", {"contact": contact, "done": done})
