from django.apps import AppConfig


class TemplatesAppConfig(AppConfig):
    name = "templates_app"
    verbose_name = "Email"

    def ready(self):
        from templates_app import checks  # noqa: F401 - registers the system checks
