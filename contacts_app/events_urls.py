"""The events API's routes (included by config/urls.py under /v1/)."""

from django.urls import path

from contacts_app import events_api

urlpatterns: list = [
    path("events", events_api.EventListView.as_view(), name="api-events"),
    path("events/names", events_api.EventNamesView.as_view(), name="api-event-names"),
    path("events/stats", events_api.EventStatsView.as_view(), name="api-event-stats"),
    path(
        "events/contact/<uuid:contact_id>",
        events_api.ContactEventsView.as_view(),
        name="api-contact-events",
    ),
]
