"""Query parameters, fuzzed (hypothesis): dates, cursors, paging and filter strings, hostile
ones included (offsets Python takes and PostgreSQL refuses, years past 9999, NUL, non-ASCII,
bytes that are not UTF-8, very long values), sent to every list and statistics endpoint of
the API and to the admin's Executions tab and canvas statistics. Never a 500: the API answers
200 or a 400 in its JSON envelope naming a parameter it was sent; the admin 200 or 400.

The test client re-raises what a view raises, so a 500 fails here with its traceback."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import reverse
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from contacts_app.models import Contact
from tests.canvas_data import staff_user, workflow_with_waiting_runs

pytestmark = pytest.mark.django_db

EXAMPLES = 250  # per endpoint

# --- values ---------------------------------------------------------------------------------

YEARS = st.one_of(
    st.integers(0, 99_999).map(lambda y: f"{y:04d}"),
    st.sampled_from(["9999", "0001", "0000", "-001", "+10000", "１９９９"]),
)
OFFSETS = st.one_of(
    st.builds(
        lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
        st.sampled_from("+-"),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    st.sampled_from(["", "Z", "z", "+23:59", "-23:59", "+16:00", "-16:00", "+15:59", "+2359"]),
)
TWO_DIGITS = st.integers(0, 99).map(lambda n: f"{n:02d}")
DATES = st.builds(lambda y, m, d: f"{y}-{m}-{d}", YEARS, TWO_DIGITS, TWO_DIGITS)
MOMENTS = st.builds(
    lambda day, sep, h, mi, s, frac, off: f"{day}{sep}{h}:{mi}:{s}{frac}{off}",
    DATES,
    st.sampled_from(["T", " ", "t"]),
    TWO_DIGITS,
    TWO_DIGITS,
    TWO_DIGITS,
    st.sampled_from(["", ".5", ".123456", ".1234567890123"]),
    OFFSETS,
)
EDGE_MOMENTS = st.sampled_from(
    [
        "9999-12-31T23:59:59-23:59",
        "0001-01-01T00:00:00+23:59",
        "9999-12-31T23:59:59.999999-00:01",
        "0001-01-01",
        "9999-12-31",
        "2024-01-01T00:00:00-23:59",
        "2024-01-01T00:00:00+16:00",
        "2024-02-30",
        "2024-13-01T00:00:00",
    ]
)
IDS = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["", "x", "²", "١", "１", "1e3", " 1", "0x10", "-0", "9" * 40]),
)
CURSORS = st.builds(lambda when, pk: f"{when}_{pk}", st.one_of(MOMENTS, EDGE_MOMENTS), IDS)
NUMBERS = st.one_of(
    st.integers(-(2**80), 2**80).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(["", " 1", "1 ", "+1", "1_000", "١٢", "²", "NaN", "-Infinity", "1e400"]),
)
WORDS = st.sampled_from(
    [
        "asc",
        "desc",
        "createdAt",
        "email",
        "name",
        "true",
        "FALSE",
        "marketing",
        "active",
        "RUNNING",
        "WAITING",
        "running",
        "email.open",
        "ann@example.com",
        "ANN@",
        "6f1d0c2e-6c2d-4c1b-9a57-0d5c2b2f3a10",
        "null",
        "[]",
        "%",
        "_",
        "\\",
        "'; DROP TABLE x; --",
    ]
)
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)  # non-ASCII, NUL...
LONG = st.builds(
    lambda piece, n: piece * n, st.text(min_size=1, max_size=3), st.integers(300, 9000)
)
RAW_BYTES = st.binary(max_size=24)  # sent percent-encoded: not always UTF-8
VALUES = st.one_of(
    MOMENTS, EDGE_MOMENTS, DATES, CURSORS, NUMBERS, IDS, WORDS, TEXT, LONG, RAW_BYTES
)


def params_for(names: list[str]):
    return st.dictionaries(st.sampled_from(names), VALUES, min_size=1, max_size=len(names))


def query_string(params: dict[str, str | bytes]) -> str:
    return "&".join(f"{name}={quote(value, safe='')}" for name, value in params.items())


FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no example database on disk: the suite leaves nothing behind
)

# Tried for every parameter on every run, whatever hypothesis draws: inputs that once gave 500s.
KNOWN = [
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2024-01-01T00:00:00-23:59",
    "2024-01-01T00:00:00-23:59_1",
    "9999-12-31T23:59:59-23:59_1",
    "2024-01-01T00:00:00+16:00_1",
    "2024-13-01T00:00:00_1",
    "\x00",
    "é" * 5000,
    b"\xff\xfe",
]


def fuzz(names: list[str]):
    """`settings` + `given` for a check of one request, with KNOWN for each name first."""

    def decorate(check):
        check = given(params=params_for(names))(check)
        for name in names:
            for value in KNOWN:
                check = example(params={name: value})(check)
        return FUZZ(check)

    return decorate


# --- the endpoints --------------------------------------------------------------------------

PAGE = ["page", "pageSize"]
# Plunk's names for ours: a rule about the period (from before to) names ours.
ALIASES = {"startDate": "from", "endDate": "to", "limit": "pageSize", "eventName": "name"}
API = [
    ("/v1/contacts", ["cursor", "limit", "search", "sort", "dir", "subscribed"]),
    (
        "/v1/events",
        [*PAGE, "limit", "from", "to", "startDate", "endDate", "name", "eventName"]
        + ["contactId", "email"],
    ),
    ("/v1/events/contact/{contact}", [*PAGE, "limit"]),
    ("/v1/events/stats", ["from", "to", "startDate", "endDate"]),
    ("/v1/templates", [*PAGE, "search", "sort", "dir", "type"]),
    ("/v1/workflows", [*PAGE, "search", "sort", "dir", "status"]),
    ("/v1/workflows/{workflow}/executions", [*PAGE, "status"]),
    ("/v1/workflows/{workflow}/stats", ["from", "to", "goal"]),
]


@pytest.fixture
def workflow(db, template):
    return workflow_with_waiting_runs(emails=["ann@example.com", "bob@example.com"])


def api_path(template: str, workflow) -> str:
    contact = Contact.objects.order_by("email").first()
    return template.format(workflow=workflow.pk, contact=contact.pk)


@pytest.mark.parametrize(("path", "names"), API, ids=[path for path, _ in API])
def test_no_query_breaks_an_api_list(workflow, secret_key, path, names):
    client = Client()
    url = api_path(path, workflow)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    assert client.get(url, **auth).status_code == 200  # the endpoint itself works
    tried: list[dict] = []

    @fuzz(names)
    def check(params):
        tried.append(params)
        response = client.get(f"{url}?{query_string(params)}", **auth)
        assert response.status_code in (200, 400), (params, response.content[:500])
        if response.status_code == 400:
            body = response.json()
            assert body["success"] is False and body["error"]["statusCode"] == 400
            named = set(body["error"].get("fields", {}))
            sent = set(params) | {ALIASES[name] for name in params if name in ALIASES}
            assert named & sent, (params, body)

    check()
    assert len(tried) >= EXAMPLES  # the fuzz ran (explicit examples come on top)


@pytest.fixture
def admin_user_client(db):
    client = Client()
    client.force_login(staff_user("viewer", "workflows_app.view_workflow"))
    return client


@pytest.mark.parametrize("viewer", ["superuser", "view_only"])
def test_no_query_breaks_the_executions_tab(workflow, admin_client, admin_user_client, viewer):
    client = admin_client if viewer == "superuser" else admin_user_client
    url = reverse("admin:workflows_app_workflow_executions", args=[workflow.pk])
    assert client.get(url).status_code == 200
    tried: list[dict] = []

    @fuzz(["before", "after", "q", "status"])
    def check(params):
        tried.append(params)
        response = client.get(f"{url}?{query_string(params)}")
        assert response.status_code in (200, 400), (params, response.content[:500])

    check()
    assert len(tried) >= EXAMPLES  # the fuzz ran (explicit examples come on top)


def test_no_query_breaks_the_canvas_statistics(workflow, admin_client):
    url = reverse("admin:workflows_app_workflow_canvas_stats", args=[workflow.pk])
    assert admin_client.get(url).status_code == 200
    tried: list[dict] = []

    @fuzz(["from", "to", "goal"])
    def check(params):
        tried.append(params)
        response = admin_client.get(f"{url}?{query_string(params)}")
        assert response.status_code in (200, 400), (params, response.content[:500])
        if response.status_code == 400 and response["Content-Type"] == "application/json":
            assert response.json()["field"] in params

    check()
    assert len(tried) >= EXAMPLES  # the fuzz ran (explicit examples come on top)
