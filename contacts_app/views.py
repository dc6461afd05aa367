"""Unsubscribe pages: GET confirms (never unsubscribes by itself), POST acts at once, which is
also the RFC 8058 one-click target of the List-Unsubscribe-Post header."""

from django.core import signing
from django.db import OperationalError
from django.shortcuts import render
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts_app.models import Contact
from contacts_app.services import UNSUBSCRIBE_SALT, contact_set_subscribed

MAX_AGE = 60 * 60 * 24 * 365  # a year-old email's link still works


@csrf_exempt  # mail clients POST without a CSRF token; the signed token is the credential
@require_http_methods(["GET", "POST"])
def unsubscribe(request, token: str):
    try:
        return _unsubscribe(request, token)
    except OperationalError:
        # The database is down or restarting: say so kindly; the link keeps working.
        response = render(request, "contacts_app/unsubscribe_unavailable.html", status=503)
        response["Retry-After"] = "60"
        return response


def _unsubscribe(request, token: str):
    try:
        contact_id = signing.loads(token, salt=UNSUBSCRIBE_SALT, max_age=MAX_AGE)
        contact = Contact.objects.get(pk=contact_id)
    except (signing.BadSignature, Contact.DoesNotExist, ValueError):
        return render(request, "contacts_app/unsubscribe_invalid.html", status=400)
    done = None
    if request.method == "POST":
        subscribe = request.POST.get("action") == "resubscribe"
        contact_set_subscribed(contact=contact, subscribed=subscribe)
        contact.subscribed = subscribe
        done = "resubscribed" if subscribe else "unsubscribed"
    return render(
        request, "contacts_app/unsubscribe.html", {"contact": contact, "done": done, "token": token}
    )
