"""Property-based fuzz of the developer API, through Django's test client against the real views
on PostgreSQL (committed for real, as in production: transactional_db).

Whatever the body, headers or path: never a 500; every refusal is the JSON error envelope; a
refused /v1/track call stores nothing (no contact, event, execution or Idempotency-Key).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contacts_app.models import ApiKey, Contact, Event, IdempotencyKey
from contacts_app.services import apikey_create
from workflows_app.models import Execution
from workflows_app.services import workflow_create

CAP = 20_000
EVENTS = ["user.signup", "user.login", "order.paid"]
EMAILS = ["ann@example.com", "BOB@Example.com", "zoë@example.com", "ann@MÜNCHEN.de"]
FUZZ = settings(
    max_examples=1500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,  # no example database on disk: the suite leaves nothing behind
)

# Strings with what PostgreSQL refuses or people forget: NUL, lone surrogates, combining marks.
weird_char = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(["\x00", "\ud800", "\udfff", "\u0301", "\u0130", "\ufeff", "\u2028", "@"]),
)
text = st.text(weird_char, max_size=40)
huge_text = st.integers(min_value=1, max_value=300_000).map(lambda n: "x" * n)
number = st.one_of(
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalar = st.one_of(st.none(), st.booleans(), number, text)
json_value = st.recursive(
    scalar,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
    ),
    max_leaves=25,
)
clean_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**18), 10**18),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20),
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
# Number spellings json.dumps never writes, spliced into the text as they are.
raw_number = st.sampled_from(
    [
        "1e400",
        "-1e400",
        "NaN",
        "-Infinity",
        "Infinity",
        "9" * 400 + ".5",
        "0." + "1" * 400,
        "7" * 5000,
        "-0",
        "1E+2",
        "1e-400",
        "01",
        "1.",
        ".5",
        "0x10",
    ]
)


@st.composite
def track_body(draw) -> bytes:
    kind = draw(st.sampled_from(["valid", "valid", "plausible", "random", "raw", "deep", "bytes"]))
    if kind == "valid":  # the right shape; only the data's content is left to chance
        body = {"event": draw(st.sampled_from(EVENTS)), "email": draw(st.sampled_from(EMAILS))}
        if draw(st.booleans()):
            body["subscribed"] = draw(st.booleans())
        keys = st.one_of(st.sampled_from(["plan", "n", "name"]), text)
        body["data"] = draw(st.dictionaries(keys, st.one_of(clean_value, json_value), max_size=6))
        return json.dumps(body).encode()
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "deep":
        n = draw(st.integers(min_value=1, max_value=120_000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"data":']))
        closed = draw(st.booleans())
        inner = opener * n + "1" + ("]" * n if opener == "[" else "}" * n) if closed else opener * n
        return inner.encode()
    if kind == "random":
        return json.dumps(draw(json_value)).encode("utf-8", "surrogatepass")
    body: dict = {}
    fields = {
        "event": st.one_of(st.sampled_from(EVENTS), json_value, huge_text),
        "email": st.one_of(st.sampled_from(EMAILS), text, json_value, huge_text),
        "subscribed": st.one_of(st.booleans(), json_value),
        "data": st.one_of(
            st.dictionaries(text, json_value, max_size=6),
            st.dictionaries(st.sampled_from(["plan", "n"]), huge_text, max_size=1),
            json_value,
        ),
    }
    for name, strategy in fields.items():
        if draw(st.integers(0, 9)) < 8:
            body[name] = draw(strategy)
    if draw(st.booleans()):
        body[draw(text)] = draw(json_value)
    encoded = json.dumps(body)  # ASCII: lone surrogates become \ud800 escapes
    if kind == "raw" and body:
        encoded = encoded[:-1] + f', "data": {{"n": {draw(raw_number)}}}}}'
    return encoded.encode()


def stored() -> tuple[int, int, int, int]:
    return (
        Contact.objects.count(),
        Event.objects.count(),
        Execution.objects.count(),
        IdempotencyKey.objects.count(),
    )


def assert_envelope(response) -> None:
    assert response["Content-Type"].startswith("application/json"), response.content[:200]
    body = response.json()
    assert body["success"] is False
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    assert set(body["error"]) <= {"code", "message", "statusCode", "fields", "errors"}
    assert body["error"]["statusCode"] == response.status_code


@pytest.fixture
def keys(transactional_db, settings):
    settings.PUBLIC_KEY_RATE_LIMIT_PER_MINUTE = 0  # the fuzz is no abuse: no 429s
    settings.CONTACT_MAX_DATA_BYTES = CAP
    # A contact just under the cap: almost any new key for it is refused inside the statement.
    Contact.objects.create(email="ann@example.com", data={"filler": "f" * (CAP - 25)})
    for event in EVENTS:
        workflow_create(
            name=f"On {event}",
            trigger_event=event,
            enabled=True,
            graph={
                "steps": [{"key": "done", "type": "exit", "config": {}}],
                "transitions": [{"from": "trigger", "to": "done"}],
            },
        )
    return [apikey_create(name=kind, kind=kind)[1] for kind in (ApiKey.SECRET, ApiKey.PUBLIC)]


def test_it_never_fails_on_any_track_body(keys):
    client = Client()
    statuses: dict[int, int] = {}
    over_cap = []

    @FUZZ
    @given(
        raw=track_body(),
        key=st.sampled_from(keys),
        idempotency_key=st.one_of(st.none(), st.none(), st.sampled_from(["k1", "k2"]), text),
        content_type=st.sampled_from(["application/json"] * 8 + ["text/plain", ""]),
    )
    def run(raw, key, idempotency_key, content_type):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
        if idempotency_key is not None:
            headers["HTTP_IDEMPOTENCY_KEY"] = idempotency_key
        before = stored()
        response = client.post("/v1/track", data=raw, content_type=content_type, **headers)
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        assert response.status_code < 500, response.content[:500]
        if response.status_code != 200:
            assert_envelope(response)
            assert stored() == before, (response.status_code, response.content[:300])
            if "CONTACT_MAX_DATA_BYTES" in response.json()["error"]["message"]:
                over_cap.append(raw)

    run()
    # The fuzz reached both sides: accepted calls and each kind of refusal.
    assert statuses.get(200, 0) > 50, statuses
    assert {400, 413, 415} <= set(statuses), statuses
    assert over_cap, "no call met the cap on contact data"


def test_it_never_fails_on_any_contact_lookup(keys):
    client = Client()

    @settings(FUZZ, max_examples=1000)
    @given(lookup=st.one_of(text, st.binary(max_size=60), huge_text, st.uuids().map(str)))
    def run(lookup):
        raw = lookup if isinstance(lookup, bytes) else lookup.encode("utf-8", "surrogatepass")
        path = "/v1/contacts/" + quote(raw, safe="")
        response = client.get(path, HTTP_AUTHORIZATION=f"Bearer {keys[0]}")
        assert response.status_code in (200, 400, 404), (path[:200], response.content[:300])
        if response.status_code != 200:
            assert_envelope(response)

    run()
