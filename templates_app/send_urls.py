"""Part of the /v1 API's routes (included by config/urls.py under /v1/)."""

from django.urls import path

from templates_app.send_api import SendView

urlpatterns: list = [
    path("send", SendView.as_view(), name="api-send"),
]
