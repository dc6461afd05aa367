import io
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


def chunked_bodies(app, *, limit: int, path_limits: dict[str, int] | None = None):
    """Gives chunked request bodies (Transfer-Encoding: chunked, no Content-Length) a length.

    Django reads a body only up to CONTENT_LENGTH, so without one it sees an empty body. A
    server that has de-chunked the input says so with `wsgi.input_terminated` (gunicorn does);
    then the body is read here, up to one byte past `limit`, and handed on with its length.
    A body past the limit keeps that length, so every view's own size check refuses it (413).
    `path_limits` gives a path its own (larger) limit: POST /v1/send carries attachments, and
    POST /v1/contacts/import a CSV file of up to 5 MB."""

    def wrapper(environ, start_response):
        if not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            most = (path_limits or {}).get(environ.get("PATH_INFO", ""), limit)
            body = environ["wsgi.input"].read(most + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return app(environ, start_response)

    return wrapper


def _application():
    django_app = get_wsgi_application()
    from django.conf import settings

    from contacts_app.jobs_api import ENVELOPE_BYTES
    from contacts_app.jobs_csv import IMPORT_MAX_BYTES
    from templates_app.sending import MAX_REQUEST_BYTES as SEND_MAX_BYTES

    return chunked_bodies(
        django_app,
        limit=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        path_limits={
            "/v1/send": SEND_MAX_BYTES,
            "/v1/contacts/import": IMPORT_MAX_BYTES + ENVELOPE_BYTES,
        },
    )


application = _application()
