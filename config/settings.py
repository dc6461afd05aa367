"""All settings, each from the environment with a safe default (see README's settings table)."""

import os
import pkgutil
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anymail
import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.logcontext import log_format

# Before any app loads: prometheus_client chooses its multiprocess mode when first imported (and
# django-q2 imports it), so config.metrics sets PROMETHEUS_MULTIPROC_DIR (or its default) first.
from config.metrics import MULTIPROC_DIR as PROMETHEUS_MULTIPROC_DIR  # noqa: F401

BASE_DIR = Path(__file__).resolve().parent.parent


def env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def env_bool(name: str, default: bool = False) -> bool:
    """A typo (`DEBUG=ture`, `SECURE_SSL_REDIRECT=enabled`) stops the start-up, instead of
    quietly meaning "off"."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    word = value.strip().lower()
    if word not in TRUE_WORDS + FALSE_WORDS:
        raise ImproperlyConfigured(
            f"{name} must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)} (or empty), got {value!r}"
        )
    return word in TRUE_WORDS


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from exc


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in env(name, default).split(",") if item.strip()]


def env_redis_url(name: str) -> str:
    """A Redis URL, or "" when unset. Anything else stops the start-up with an error naming the
    variable but not repeating its value, which may hold a password."""
    value = env(name).strip()
    if not value:
        return ""
    try:
        parts = urlsplit(value)
        valid = parts.scheme in ("redis", "rediss") and bool(parts.hostname)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        valid = False
    if not valid:
        raise ImproperlyConfigured(
            f"{name} must be a Redis URL, redis://[:password@]host[:port][/db] or rediss://... "
            "(TLS); leave it unset for the database broker."
        )
    return value


DEV_SECRET_KEY = "dev-only-insecure-key-do-not-use-in-production"
DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env("SECRET_KEY", DEV_SECRET_KEY)
if not DEBUG and SECRET_KEY == DEV_SECRET_KEY:
    raise ImproperlyConfigured(
        "SECRET_KEY is the development key while DEBUG is off. Set SECRET_KEY to a long random "
        "value (python -c 'import secrets; print(secrets.token_urlsafe(50))'), "
        "or set DEBUG=true for local development."
    )

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "127.0.0.1,localhost")
PUBLIC_URL = env("PUBLIC_URL", "http://127.0.0.1:8000").rstrip("/")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", PUBLIC_URL)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # the API reference page's assets, served by us (no CDN)
    "corsheaders",
    "anymail",
    "axes",
    "contacts_app",
    "templates_app",
    "workflows_app",
    # After workflows_app: its `qcluster` command (clean shutdown) wraps django-q2's, and of
    # two commands with one name Django runs the one of the app listed first.
    "django_q",
]

MIDDLEWARE = [
    # First: every line logged while a request is handled carries its id (X-Request-ID).
    "config.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything that may answer: a browser's preflight to /v1/track gets its CORS reply.
    "corsheaders.middleware.CorsMiddleware",
    "config.middleware.RejectNulQueryMiddleware",  # NUL in a query parameter: 400, not 500
    "config.middleware.RateLimitHeadersMiddleware",  # RateLimit-* on every API reply
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.middleware.AdminBadSelectionMiddleware",  # a malformed admin selection: 400
    # Last, as django-axes asks: turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
# Unset DATABASE_URL: an SQLite file in the project folder (WAL mode, IMMEDIATE transactions so
# concurrent writers queue instead of failing). PostgreSQL in production and in the test suite.
SQLITE_PATH = env("SQLITE_PATH", str(BASE_DIR / "db.sqlite3"))
DATABASE_URL = env("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            conn_max_age=env_int("CONN_MAX_AGE", 600),
            conn_health_checks=True,
        )
    }
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # The same backend, with a health check that polls the socket instead of a round trip.
        DATABASES["default"]["ENGINE"] = "config.pgbackend"
    # Behind a pooler in transaction mode (PgBouncer): a server-side cursor (QuerySet.iterator)
    # would be read on a server connection other than the one that opened it. Off there.
    DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool(
        "DATABASE_DISABLE_SERVER_SIDE_CURSORS", False
    )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SQLITE_PATH,
            "OPTIONS": {
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
            },
        }
    }
# /v1/track's statement is prepared once per connection. Turn off behind a pooler that does not
# support prepared statements (PgBouncer before 1.21, or without max_prepared_statements).
DATABASE_PREPARED_STATEMENTS = env_bool("DATABASE_PREPARED_STATEMENTS", True)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where collectstatic puts the static files (whitenoise serves them from there).
STATIC_ROOT = Path(env("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- HTTPS and the proxy in front (README: "Running in production") ---------------------------
# Behind a TLS-terminating proxy, set SECURE_PROXY_SSL_HEADER_ENABLED=true: the proxy's
# X-Forwarded-Proto says whether the request was HTTPS, and its X-Forwarded-For says who sent it
# (PROXY_COUNT proxies append to it; the address they saw is trusted, what the client wrote is not).
SECURE_PROXY_SSL_HEADER_ENABLED = env_bool("SECURE_PROXY_SSL_HEADER_ENABLED", False)
if SECURE_PROXY_SSL_HEADER_ENABLED:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
PROXY_COUNT = env_int("PROXY_COUNT", 1 if SECURE_PROXY_SSL_HEADER_ENABLED else 0)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# A load balancer's health check may come over plain HTTP from inside the network.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^metrics$"]
# HSTS is remembered by browsers for SECURE_HSTS_SECONDS: turn it on once HTTPS works.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = PUBLIC_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE

# --- Admin login throttling (django-axes) -----------------------------------------------------
# AXES_FAILURE_LIMIT wrong passwords for one username from one address lock that pair out for
# AXES_COOLOFF_MINUTES. Unlock early: delete the AccessAttempt in the admin, or
# `manage.py axes_reset` (everything) / `axes_reset_username NAME` / `axes_reset_ip ADDRESS`.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_ENABLED = env_bool("AXES_ENABLED", True)
AXES_FAILURE_LIMIT = env_int("AXES_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("AXES_COOLOFF_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The address is REMOTE_ADDR, or behind PROXY_COUNT proxies the one they put in X-Forwarded-For.
AXES_CLIENT_IP_CALLABLE = "config.client_ip.client_ip"
AXES_LOCKOUT_TEMPLATE = "admin/login_locked.html"
# No "BEGIN version ..." / "Successful login" INFO lines on every command and login; lockouts
# are still logged as warnings.
AXES_VERBOSE = False

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["contacts_app.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["contacts_app.auth.IsSecretKey"],
    # Refuses NaN/Infinity, out-of-range numbers and deep nesting with a 400, never a 500.
    "DEFAULT_PARSER_CLASSES": ["contacts_app.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "contacts_app.api_errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    # Every endpoint counts against its key's per-minute limit (RateLimit-* headers, 429).
    "DEFAULT_THROTTLE_CLASSES": ["contacts_app.auth.KeyRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Lifecycle API",
    "DESCRIPTION": (
        "Events in, workflows, email out. Authenticate with `Authorization: Bearer <key>`: "
        "secret keys (sk_...) may call every endpoint, public keys (pk_...) only /v1/track. "
        "Errors are `{success: false, error: {code, message, statusCode, fields?, errors?}}`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGERUI_DIST": "SIDECAR",
    "SWAGGERUI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {
        "ExecutionStatusEnum": ["RUNNING", "WAITING", "COMPLETED", "EXITED", "FAILED", "CANCELLED"],
        "StepTypeEnum": "workflows_app.models.step_type_choices",
    },
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "ApiKey": {"type": "http", "scheme": "bearer", "description": "sk_... or pk_..."}
        }
    },
    "SECURITY": [{"ApiKey": []}],
    "AUTHENTICATION_WHITELIST": [],
}
# Browsers may call /v1/track (with a public key) from these origins, e.g.
# "https://www.example.com,https://app.example.com". Empty: no cross-origin calls.
CORS_ALLOWED_ORIGINS = env_list("CORS_ALLOWED_ORIGINS", "")
CORS_URLS_REGEX = r"^/v1/track$"
CORS_ALLOW_METHODS = ("POST", "OPTIONS")
CORS_ALLOW_HEADERS = ("authorization", "content-type", "idempotency-key")
CORS_EXPOSE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After")
# Requests per minute for secret keys (sk_) without a limit of their own (0, the default: no
# limit; they are held by your own backend, and /v1/track then stays one statement).
SECRET_KEY_RATE_LIMIT_PER_MINUTE = env_int("SECRET_KEY_RATE_LIMIT_PER_MINUTE", 0)
# /v1/track limits; a body over TRACK_MAX_BODY_BYTES gets 413.
TRACK_MAX_BODY_BYTES = env_int("TRACK_MAX_BODY_BYTES", 256 * 1024)
TRACK_MAX_DATA_BYTES = env_int("TRACK_MAX_DATA_BYTES", 64 * 1024)
TRACK_MAX_DATA_DEPTH = env_int("TRACK_MAX_DATA_DEPTH", 8)
TRACK_MAX_EVENT_LENGTH = 255
IDEMPOTENCY_WINDOW_SECONDS = env_int("IDEMPOTENCY_WINDOW_SECONDS", 24 * 3600)
# Seconds a process trusts its memory of an API key (kind, rate limit). Revocation is checked
# in the database on every /v1/track call regardless.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 30)
# Requests per minute for public keys (pk_, published in web pages) without a limit of their own.
PUBLIC_KEY_RATE_LIMIT_PER_MINUTE = env_int("PUBLIC_KEY_RATE_LIMIT_PER_MINUTE", 600)
# A contact's stored data, as JSON text, never grows past this (0: no cap).
CONTACT_MAX_DATA_BYTES = env_int("CONTACT_MAX_DATA_BYTES", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = max(TRACK_MAX_BODY_BYTES, 2_621_440)
# Serves bench/reference.py at POST /bench/reference, for bench/track.py only; never in production.
BENCH_REFERENCE_ENDPOINT = env_bool("BENCH_REFERENCE_ENDPOINT", False)

# --- Engine -----------------------------------------------------------------------------------
ENGINE_MAX_STEPS_PER_ADVANCE = env_int("ENGINE_MAX_STEPS_PER_ADVANCE", 100)
# How long a worker holds a run it claimed before the clock hands it to another worker. Short,
# so the runs of a killed worker go on within a minute; renewed (a heartbeat) while a task runs.
ENGINE_LEASE_SECONDS = env_int("ENGINE_LEASE_SECONDS", 45)
# How often that renewal happens (seconds; default an eighth of the lease).
ENGINE_HEARTBEAT_SECONDS: float = env_int("ENGINE_HEARTBEAT_SECONDS", 0) or max(
    ENGINE_LEASE_SECONDS / 8, 0.25
)
# Side-effect steps (emails, webhooks) of one worker task run this many at a time, each in its
# own thread with its own database connection: a worker process holds up to this many more.
ENGINE_CONCURRENCY = env_int("ENGINE_CONCURRENCY", 16)
CLOCK_INTERVAL_MS = env_int("CLOCK_INTERVAL_MS", 200)
CLOCK_BATCH_SIZE = env_int("CLOCK_BATCH_SIZE", 200)
CLOCK_SWEEP_SECONDS = env_int("CLOCK_SWEEP_SECONDS", 60)
# How often a clock makes the runs of a vanished worker (lease over) due again.
CLOCK_RECOVER_SECONDS = env_int("CLOCK_RECOVER_SECONDS", 5)
# The clock stops claiming while this many tasks wait for a worker (back-pressure).
CLOCK_MAX_QUEUED_TASKS = env_int("CLOCK_MAX_QUEUED_TASKS", 10)  # of ENGINE_TASK_SIZE runs
# Runs per worker task: the clock hands them out in tasks of this many, and a task moves its
# runs together (one write for all; up to ENGINE_CONCURRENCY side effects at a time, emails in
# batches of EMAIL_BATCH_SIZE). A worker process takes one task at a time, so a task should be
# large enough that its CPU work outweighs its wait on the network (bench/send.py: 223 sends/s
# at 200 ms with 50, 308 with 100).
ENGINE_TASK_SIZE = env_int("ENGINE_TASK_SIZE", 100)
# Every worker (qcluster) and clock process records that it is alive this often; the System
# page shows a process late after two intervals without one, dead after four.
HEARTBEAT_SECONDS = env_int("HEARTBEAT_SECONDS", 10)

# --- Metrics (GET /metrics, README: "Metrics") -----------------------------------------------
# Set: Prometheus scrapes with `Authorization: Bearer <METRICS_TOKEN>`. Unset: /metrics answers
# only requests from this host (loopback, after PROXY_COUNT).
METRICS_TOKEN = env("METRICS_TOKEN")

# --- Background worker (django-q2) -----------------------------------------------------------
# The task broker. Unset: the database (a task commits, or rolls back, with the work it names).
# redis://[:password@]host:port/db or rediss://... (TLS): Redis, for when one table polled by
# every worker becomes the bottleneck. Redis holds no acknowledgement: a task whose worker dies
# is lost, and its runs come back through the lease sweep (config/broker.py says more).
Q_BROKER_URL = env_redis_url("Q_BROKER_URL")
# A Redis that stops answering (a network partition) must not hang a clock, a worker or a web
# request for ever: each call gives up after these seconds, unless the URL sets its own.
_redis = urlsplit(Q_BROKER_URL)
_redis_query = {"socket_connect_timeout": "5", "socket_timeout": "10"}
_redis_query.update(parse_qsl(_redis.query))
Q_CLUSTER: dict[str, Any] = {
    "name": "lifecycle",
    **(
        {"redis": urlunsplit(_redis._replace(query=urlencode(_redis_query)))}
        if Q_BROKER_URL
        else {"orm": "default"}
    ),
    "workers": env_int("Q_WORKERS", 2),
    "timeout": env_int("Q_TIMEOUT", 600),
    # Must exceed timeout; a task whose worker died is delivered again after this many seconds.
    "retry": env_int("Q_RETRY", 660),
    "max_attempts": 3,
    # Saving successes costs a prune query per task; failures are still kept.
    "save_limit": -1,
    "ack_failures": True,
    "poll": env_int("Q_POLL_MS", 50) / 1000,
    "catch_up": False,
    "sync": env_bool("Q_SYNC", False),
    "label": "Background tasks",
}

# --- Webhooks ---------------------------------------------------------------------------------
# Off: webhook URLs resolving to private, loopback, link-local (cloud metadata) or other
# reserved addresses are refused, at every redirect too. Turn on only for trusted internal use.
WEBHOOK_ALLOW_PRIVATE_NETWORKS = env_bool("WEBHOOK_ALLOW_PRIVATE_NETWORKS", False)
# Allows loopback (127.0.0.0/8, ::1) only, every other private range stays refused.
WEBHOOK_ALLOW_LOOPBACK = env_bool("WEBHOOK_ALLOW_LOOPBACK", False)
WEBHOOK_MAX_RESPONSE_BYTES = env_int("WEBHOOK_MAX_RESPONSE_BYTES", 64 * 1024)
# Caps every Webhook step's timeout_seconds (the whole call: connect, redirects, headers, body).
WEBHOOK_MAX_TIMEOUT_SECONDS = env_int("WEBHOOK_MAX_TIMEOUT_SECONDS", 30)

# --- Templates --------------------------------------------------------------------------------
# One render (preview, test send, workflow send, a Webhook body) taking longer fails with a
# clear error; size and range limits are in templates_app/rendering.py.
TEMPLATE_RENDER_TIMEOUT_SECONDS = env_int("TEMPLATE_RENDER_TIMEOUT_SECONDS", 2)

# --- Email ------------------------------------------------------------------------------------
EMAIL_PROVIDER = env("EMAIL_PROVIDER", "console")
# The installed django-anymail's providers: its backend modules, read from disk (importing
# them at settings time would need settings).
ANYMAIL_PROVIDERS = sorted(
    module.name
    for module in pkgutil.iter_modules([str(Path(anymail.__file__).parent / "backends")])
    if module.name not in ("base", "base_requests", "console")
)
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", "Lifecycle <hello@example.com>")
if EMAIL_PROVIDER == "console":
    EMAIL_BACKEND = "django.core.mail.backends.console.EmailBackend"
elif EMAIL_PROVIDER == "smtp":
    # Django's, with a deadline on the whole of each phase (templates_app/backends.py).
    EMAIL_BACKEND = "templates_app.backends.SMTPBackend"
    EMAIL_HOST = env("EMAIL_HOST", "localhost")
    EMAIL_PORT = env_int("EMAIL_PORT", 25)
    EMAIL_HOST_USER = env("EMAIL_HOST_USER")
    EMAIL_HOST_PASSWORD = env("EMAIL_HOST_PASSWORD")
    EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
elif EMAIL_PROVIDER == "locmem":
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
elif EMAIL_PROVIDER == "resend":
    EMAIL_BACKEND = "templates_app.backends.ResendEmailBackend"
elif EMAIL_PROVIDER == "postmark":
    # anymail's, which can also send different messages in one call (/email/batch).
    EMAIL_BACKEND = "templates_app.backends.PostmarkEmailBackend"
elif EMAIL_PROVIDER in ANYMAIL_PROVIDERS:
    # Any django-anymail provider by its module name: postmark, sendgrid, mailgun, amazon_ses,
    # brevo, sparkpost, test ... with its keys in ANYMAIL_* variables.
    EMAIL_BACKEND = f"anymail.backends.{EMAIL_PROVIDER}.EmailBackend"
else:
    raise ImproperlyConfigured(
        f"EMAIL_PROVIDER {EMAIL_PROVIDER!r} is not a provider. Valid: "
        + ", ".join(dict.fromkeys(["console", "smtp", "locmem", "resend", *ANYMAIL_PROVIDERS]))
    )
# Providers that de-duplicate on our ledger key: a send interrupted mid-way may be retried.
EMAIL_PROVIDER_IDEMPOTENT = EMAIL_PROVIDER in ("resend",)
# A worker sends up to this many workflow emails in one provider call where the provider has
# a batch API for different messages (Postmark: /email/batch, up to 500); 1 sends each alone.
EMAIL_BATCH_SIZE = env_int("EMAIL_BATCH_SIZE", 50)
if not 1 <= EMAIL_BATCH_SIZE <= 500:
    raise ImproperlyConfigured(f"EMAIL_BATCH_SIZE must be 1 to 500, got {EMAIL_BATCH_SIZE}")
ANYMAIL: dict[str, Any] = {
    key.removeprefix("ANYMAIL_"): value
    for key, value in os.environ.items()
    if key.startswith("ANYMAIL_")
}
# Seconds any one network operation of a send may take (SMTP: each socket operation; the HTTP
# providers of django-anymail: connect and each read). A send is a few of them.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 20)
ANYMAIL_REQUESTS_TIMEOUT = EMAIL_TIMEOUT  # read by anymail unless ANYMAIL_REQUESTS_TIMEOUT is set
if "REQUESTS_TIMEOUT" in ANYMAIL:  # from the environment: a number, not a string
    try:
        ANYMAIL["REQUESTS_TIMEOUT"] = float(ANYMAIL["REQUESTS_TIMEOUT"])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "ANYMAIL_REQUESTS_TIMEOUT must be a number of seconds, got "
            f"{ANYMAIL['REQUESTS_TIMEOUT']!r}"
        ) from exc

# --- Send policy for marketing mail (README: "Send policy") ----------------------------------
# At most this many marketing emails per contact in any rolling period, across all workflows,
# e.g. "3/7d" (units s, m, h, d, w); a workflow may set its own or none. Empty: no cap.
MARKETING_FREQUENCY_CAP = env("MARKETING_FREQUENCY_CAP").strip()
# Marketing mail due in this window of the contact's day waits until it ends, e.g.
# "21:00-08:00" (may cross midnight). Empty: none.
QUIET_HOURS = env("QUIET_HOURS").strip()
# The time zone of contacts whose data has no valid `timezone` (an IANA name).
DEFAULT_TIMEZONE = env("DEFAULT_TIMEZONE", "UTC").strip()
try:
    from templates_app.policy import parse_frequency_cap, parse_quiet_hours, parse_timezone

    for _name, _parse in (
        ("MARKETING_FREQUENCY_CAP", parse_frequency_cap),
        ("QUIET_HOURS", parse_quiet_hours),
        ("DEFAULT_TIMEZONE", parse_timezone),
    ):
        _parse(globals()[_name])
except ValueError as exc:
    raise ImproperlyConfigured(f"{_name}: {exc}") from None

# A step begins only while its run's lease has at least the longest a step may take left, and
# the heartbeat renews the lease while steps run: so no step outlives its lease (else the sweep
# would hand the run to a second worker while the first is still in the step). The lease must
# leave room for that step and for a late renewal or two.
ENGINE_STEP_BOUND_SECONDS = max(WEBHOOK_MAX_TIMEOUT_SECONDS, EMAIL_TIMEOUT)
if ENGINE_LEASE_SECONDS < ENGINE_STEP_BOUND_SECONDS + 2 * ENGINE_HEARTBEAT_SECONDS:
    raise ImproperlyConfigured(
        f"ENGINE_LEASE_SECONDS ({ENGINE_LEASE_SECONDS}) must be at least the longest a step may "
        f"take ({ENGINE_STEP_BOUND_SECONDS} s, the larger of WEBHOOK_MAX_TIMEOUT_SECONDS and "
        f"EMAIL_TIMEOUT) plus two heartbeats (ENGINE_HEARTBEAT_SECONDS, "
        f"{ENGINE_HEARTBEAT_SECONDS:g} s). Raise it, or lower those."
    )

# LOG_FORMAT=json: one JSON object per line (time, level, logger, message, exception, and the
# request id or the execution/workflow/step the line is about), for every process.
try:
    LOG_FORMAT = log_format(env("LOG_FORMAT", "text"))
except ValueError as exc:
    raise ImproperlyConfigured(str(exc)) from None
_log_handler = ["console"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logcontext.JsonFormatter"},
    },
    # Unsubscribe tokens are credentials: never written (e.g. "Bad Request: /unsubscribe/...").
    # Redaction first, so the JSON line's message and exception are the redacted ones.
    "filters": {
        "redact": {"()": "config.redact.RedactFilter"},
        "context": {"()": "config.logcontext.ContextFilter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
            "filters": ["redact", "context"],
        }
    },
    "root": {"handlers": _log_handler, "level": env("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        **(
            {
                # Loggers with a handler of their own (Django's development-only console,
                # runserver's), so that their lines are JSON too, written once.
                "django": {"handlers": _log_handler, "propagate": False},
                "django.server": {"handlers": _log_handler, "propagate": False},
                "py.warnings": {"handlers": _log_handler, "propagate": False},
            }
            if LOG_FORMAT == "json"
            else {}
        ),
    },
}
if LOG_FORMAT == "json":
    # Python's warnings are written to stderr as they are; as JSON lines through logging.
    LOGGING_CONFIG = "config.logcontext.configure_logging"
