"""Property-based fuzz of the canvas save: thousands of generated bodies, from nearly valid
graphs to byte noise, through the real view on PostgreSQL. None may give a 500, every refusal
is JSON, and a refused save changes nothing (graph and version as before)."""

import json
import math

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.canvas_data import WAIT_GRAPH
from workflows_app.graph import workflow_graph_snapshot
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=1200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(max_size=12) | st.sampled_from(["", "\x00", "\ud800", "a" * 300, "trigger"])
numbers = st.integers(min_value=-(10**30), max_value=10**30) | st.floats(allow_nan=True)
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=12,
)
keys = st.sampled_from(["pause", "done", "mail", "Bad Key", ""]) | json_values
types = st.sampled_from([*STEP_TYPES, "nope"]) | json_values
configs = (
    st.sampled_from(
        [
            {"amount": 2, "unit": "days"},
            {"reason": "x"},
            {"template": "Welcome"},
            {"event": "user.activated", "timeout": {"amount": 1, "unit": "hours"}},
            {"field": "contact.plan", "operator": "equals", "value": "pro"},
            {"url": "https://example.com/hook", "headers": {"X": "1"}},
            {"set": {"stage": "active"}},
        ]
    )
    | json_values
)
positions = st.fixed_dictionaries({"x": numbers, "y": numbers}) | json_values
steps = (
    st.fixed_dictionaries(
        {"key": keys, "type": types},
        optional={"name": text | json_values, "config": configs, "position": positions},
    )
    | json_values
)
ports = st.sampled_from(["trigger", "pause", "done", "mail"]) | json_values
transitions = (
    st.fixed_dictionaries(
        {"from": ports, "to": ports},
        optional={
            "branch": st.sampled_from(["next", "yes", "event", "timeout", "bogus"]) | json_values
        },
    )
    | json_values
)
graphs = (
    st.fixed_dictionaries(
        {},
        optional={
            "steps": st.lists(steps, max_size=5) | json_values,
            "transitions": st.lists(transitions, max_size=6) | json_values,
        },
    )
    | json_values
)
bodies = (
    st.fixed_dictionaries(
        {"graph": graphs},
        optional={"graph_version": st.integers(min_value=-2, max_value=50) | json_values},
    )
    | json_values
)


def encode(body) -> bytes:
    # Python's json writes NaN/Infinity tokens, which is exactly what a hostile client sends.
    return json.dumps(body, allow_nan=True).encode("utf-8", "surrogatepass")


@pytest.fixture
def canvas(admin_client, template):
    workflow = workflow_create(name="Fuzzed", trigger_event="user.signup", graph=WAIT_GRAPH)
    url = reverse("admin:workflows_app_workflow_canvas", args=[workflow.pk])

    def save(raw: bytes):
        before = workflow_graph_snapshot(workflow)
        response = admin_client.put(url, data=raw, content_type="application/json")
        assert response.status_code in (200, 400, 409), (response.status_code, raw[:300])
        body = response.json()
        if response.status_code != 200:
            assert body["ok"] is False and isinstance(body["message"], str)
            assert workflow_graph_snapshot(workflow) == before, raw[:300]
        else:
            version, graph = workflow_graph_snapshot(workflow)
            assert body["workflow"]["graph_version"] == version and body["graph"] == graph
            for step in graph["steps"]:
                assert all(math.isfinite(v) for v in step["position"].values())
        return response.status_code

    save.workflow = workflow  # type: ignore[attr-defined]
    return save


@FUZZ
@given(body=bodies)
def test_no_canvas_body_gives_a_500_or_half_a_save(canvas, body):
    canvas(encode(body))


@settings(
    max_examples=800,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    raw=st.binary(max_size=200)
    | st.text(max_size=200).map(lambda s: s.encode("utf-8", "surrogatepass"))
)
def test_no_byte_noise_gives_a_500(canvas, raw):
    canvas(raw)


def test_the_checks_above_hold_for_a_valid_save_too(canvas):
    """The same property checker accepts a real save, so the fuzz is not blind to success."""
    version, graph = workflow_graph_snapshot(canvas.workflow)
    graph["steps"][0]["config"]["amount"] = 3
    assert canvas(encode({"graph": graph, "graph_version": version})) == 200
    assert workflow_graph_snapshot(canvas.workflow)[1]["steps"][0]["config"]["amount"] == 3
