"""The contacts API's routes (included by config/urls.py under /v1/)."""

from django.urls import path

from contacts_app.api import ContactDetailView

urlpatterns = [
    path("contacts/<str:lookup>", ContactDetailView.as_view(), name="contact-detail"),
]
