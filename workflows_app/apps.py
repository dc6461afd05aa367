from django.apps import AppConfig


class WorkflowsAppConfig(AppConfig):
    name = "workflows_app"
    verbose_name = "Workflows"

    def ready(self):
        # anymail reports provider events only through these signals; the receivers are thin
        # adapters that call services.
        from anymail.signals import inbound, tracking

        from contacts_app.services import contact_eraser_set, system_event_recorder_set
        from workflows_app.provider_events import handle_inbound, handle_tracking
        from workflows_app.services import contact_erase
        from workflows_app.track import track_internal

        tracking.connect(handle_tracking, dispatch_uid="workflows_app.provider_events")
        inbound.connect(handle_inbound, dispatch_uid="workflows_app.provider_events.inbound")
        # System events raised below this app (contact.subscribed / .unsubscribed from
        # contacts_app, email.sent from templates_app) start and resume workflows like tracked
        # events: contacts_app calls this recorder (see system_event_record there).
        system_event_recorder_set(track_internal)
        # The contacts API's DELETE (contacts_app) erases through this app: runs are cancelled
        # first (see contact_privacy_erase there).
        contact_eraser_set(contact_erase)
