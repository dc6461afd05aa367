from django.apps import AppConfig


class WorkflowsAppConfig(AppConfig):
    name = "workflows_app"
    verbose_name = "Workflows"

    def ready(self):
        # anymail reports provider events only through this signal; the receiver is a thin
        # adapter that calls services.
        from anymail.signals import tracking

        from workflows_app.provider_events import handle_tracking

        tracking.connect(handle_tracking, dispatch_uid="workflows_app.provider_events")
