"""The contacts API's routes (included by config/urls.py under /v1/). Fixed paths come before
`contacts/<lookup>`, which would otherwise take them (the background jobs' contacts/import and
contacts/bulk-* are in jobs_urls.py, included before this module)."""

from django.urls import path

from contacts_app.api import (
    ContactDetailView,
    ContactFieldsView,
    ContactFieldValuesView,
    ContactListView,
    ContactLookupView,
)

urlpatterns = [
    path("contacts", ContactListView.as_view(), name="contact-list"),
    path("contacts/lookup", ContactLookupView.as_view(), name="contact-lookup"),
    path("contacts/fields", ContactFieldsView.as_view(), name="contact-fields"),
    path(
        "contacts/fields/<str:field>/values",
        ContactFieldValuesView.as_view(),
        name="contact-field-values",
    ),
    path("contacts/<str:lookup>", ContactDetailView.as_view(), name="contact-detail"),
]
