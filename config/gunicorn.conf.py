"""gunicorn's settings for every way the web process starts (Procfile, the e2e tests, the
benchmark): `gunicorn -c config/gunicorn.conf.py config.wsgi ...`. Bind, workers and the access
log stay on the command line."""

import os
import sys
from pathlib import Path

from gunicorn.glogging import Logger

# This file is read before gunicorn puts the project on the import path.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from config.logcontext import (  # noqa: E402
    ContextFilter,
    JsonFormatter,
    log_context,
    log_format,
)
from config.redact import RedactFilter  # noqa: E402

# The same choice as Django's settings (a typo stops the start-up there too).
LOG_FORMAT = log_format(os.environ.get("LOG_FORMAT"))


class RedactingLogger(Logger):
    """gunicorn's logger, with the tokens of the contact's pages (unsubscribe, subscribe,
    manage) removed from the access log (request line, Referer) and the error log ("Error
    handling request /unsubscribe/..."); with LOG_FORMAT=json, both write JSON lines, an
    access line with its request's id."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, RedactFilter) for f in log.filters):
                log.addFilter(RedactFilter())
            if LOG_FORMAT == "json":
                if not any(isinstance(f, ContextFilter) for f in log.filters):
                    log.addFilter(ContextFilter())
                for handler in log.handlers:
                    if getattr(handler, "_gunicorn", False):
                        handler.setFormatter(JsonFormatter())

    def access(self, resp, req, environ, request_time):
        # Written after Django is done with the request: its id is taken from the reply.
        request_id = next(
            (value for name, value in resp.headers if name.lower() == "x-request-id"), None
        )
        with log_context(request_id=request_id):
            super().access(resp, req, environ, request_time)


logger_class = RedactingLogger

# gunicorn >= 25 opens a control socket (for `gunicornc`) at one path per user,
# $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl: a second instance on the host
# would take it over, and remove it when it stops. Off unless this instance is given its own.
control_socket_path = os.environ.get("GUNICORN_CONTROL_SOCKET", "")
if control_socket_path:
    control_socket = control_socket_path
else:
    control_socket_disable = True


def child_exit(server, worker):
    """A worker ended (crash, timeout, max_requests, reload): fold its metrics files into the
    archive now (config/metrics.py); the next scrape would, this keeps the folder small."""
    from config.metrics import process_exited

    process_exited(worker.pid)
