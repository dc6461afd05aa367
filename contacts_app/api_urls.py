"""This app's /v1 API routes (included by config/urls.py under /v1/)."""

from django.urls import path  # noqa: F401

urlpatterns: list = []
