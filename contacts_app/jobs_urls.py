"""Part of the /v1 API's routes (included by config/urls.py under /v1/, before the contacts
routes: `contacts/import` would otherwise be taken for a contact's email)."""

from django.urls import path

from contacts_app import jobs_api

urlpatterns = [
    path("contacts/import", jobs_api.ContactImportView.as_view(), name="contacts-import"),
    path(
        "contacts/import/<str:job_id>",
        jobs_api.ContactImportStatusView.as_view(),
        name="contacts-import-status",
    ),
    path(
        "contacts/bulk-subscribe",
        jobs_api.ContactBulkSubscribeView.as_view(),
        name="contacts-bulk-subscribe",
    ),
    path(
        "contacts/bulk-unsubscribe",
        jobs_api.ContactBulkUnsubscribeView.as_view(),
        name="contacts-bulk-unsubscribe",
    ),
    path(
        "contacts/bulk-delete",
        jobs_api.ContactBulkDeleteView.as_view(),
        name="contacts-bulk-delete",
    ),
    path(
        "contacts/jobs/<str:job_id>",
        jobs_api.ContactBulkStatusView.as_view(),
        name="contacts-job-status",
    ),
]
