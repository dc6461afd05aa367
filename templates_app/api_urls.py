"""This app's /v1 API routes (included by config/urls.py under /v1/)."""

from django.urls import path

from templates_app import api

urlpatterns: list = [
    path("templates", api.TemplateListView.as_view(), name="api-templates"),
    path("templates/<int:pk>", api.TemplateDetailView.as_view(), name="api-template"),
    path(
        "templates/<int:pk>/duplicate",
        api.TemplateDuplicateView.as_view(),
        name="api-template-duplicate",
    ),
    path("templates/<int:pk>/usage", api.TemplateUsageView.as_view(), name="api-template-usage"),
    path(
        "templates/<int:pk>/preview",
        api.TemplatePreviewView.as_view(),
        name="api-template-preview",
    ),
]
