"""Part of the /v1 API's routes (included by config/urls.py under /v1/)."""

urlpatterns: list = []
