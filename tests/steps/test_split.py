"""A/B Split: its config, a branch that is a pure function of (contact, workflow, step) and the
weights (so the same in every process and on re-entry), weights that hold over many contacts,
and the split through the engine, graph validation, the file format and the API."""

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
from django.conf import settings

from contacts_app.models import Contact
from tests.api.test_workflows_api import Api, error
from tests.canvas_data import WAIT_GRAPH
from tests.conftest import drain
from tests.flow import execution_of, history, track_ok
from workflows_app.canvas import canvas_palette
from workflows_app.files import document_export, document_import
from workflows_app.graph import GraphError, graph_validate, workflow_graph_document
from workflows_app.models import Execution, StepRun, Workflow
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError
from workflows_app.steps.split import split_choose, split_point

SPLIT = STEP_TYPES["split"]
AB = {"branches": [{"id": "a", "weight": 70}, {"id": "b", "weight": 30}]}


def branches(*weights, ids="abcdefghijk"):
    return {"branches": [{"id": i, "weight": w} for i, w in zip(ids, weights, strict=False)]}


# --- config -------------------------------------------------------------------------------------


def test_its_ports_are_its_branch_ids_in_order():
    parsed = SPLIT.parse_config(branches(1, 2, 3, ids=["control", "v-2", "long_" + "x" * 59]))
    assert SPLIT.branches_for(parsed) == ("control", "v-2", "long_" + "x" * 59)


def test_it_is_stored_canonically():
    raw = {"branches": [{"weight": 33.5, "id": "a"}, {"weight": 66.5, "id": "b"}]}
    stored = SPLIT.stored_config(raw, SPLIT.parse_config(raw))
    assert json.dumps(stored) == (
        '{"branches": [{"id": "a", "weight": 33.5}, {"id": "b", "weight": 66.5}]}'
    )
    # An empty config (a step just added on the canvas) is an even A/B, written out.
    assert SPLIT.stored_config({}, SPLIT.parse_config({})) == branches(50, 50)


def test_two_and_ten_branches_are_fine():
    assert len(SPLIT.branches_for(SPLIT.parse_config(branches(1, 1)))) == 2
    ten = SPLIT.parse_config(branches(*[0.5] * 10))
    assert SPLIT.branches_for(ten) == tuple("abcdefghij")
    assert SPLIT.parse_config(branches(1_000_000, 1e-9)).branches[0].weight == 1_000_000


@pytest.mark.parametrize(
    ("config", "where", "message"),
    [
        (branches(100), "branches", "at least 2"),
        (branches(*[1] * 11), "branches", "at most 10"),
        ({"branches": []}, "branches", "at least 2"),
        (branches(1, 1, 0), "branches.2.weight", "must be greater than 0"),
        (branches(1, -5), "branches.1.weight", "must be greater than 0"),
        (branches(1, float("inf")), "branches.1.weight", "at most 1000000"),
        (branches(1, 1_000_001), "branches.1.weight", "at most 1000000"),
        (branches(1, "30"), "branches.1.weight", "must be a number"),
        (branches(1, True), "branches.1.weight", "must be a number"),
        (branches(1, None), "branches.1.weight", "must be a number"),
        ({"branches": [{"id": "a", "weight": 1}, {"id": "b"}]}, "branches.1.weight", "required"),
        (branches(1, 1, ids=["a", "a"]), "branches", "branch ids must be unique ('a'"),
        (branches(1, 1, ids=["a", ""]), "branches.1.id", "at least 1 character"),
        (branches(1, 1, ids=["a", "a b"]), "branches.1.id", "pattern"),
        (branches(1, 1, ids=["a", "x" * 65]), "branches.1.id", "at most 64"),
        (branches(1, 1, ids=["a", 7]), "branches.1.id", "string"),
        ({**AB, "seed": 3}, "seed", "Extra inputs"),
        ({"branches": [{"id": "a", "weight": 1, "name": "A"}, AB["branches"][1]]}, "", ""),
        ({"branches": {"a": 1, "b": 1}}, "branches", "list"),
    ],
)
def test_it_rejects_a_bad_config_naming_the_field(config, where, message):
    with pytest.raises(ConfigError) as caught:
        SPLIT.parse_config(config)
    if where == "":  # an unknown key inside a branch
        assert "branches.0.name" in caught.value.errors
        return
    assert message in caught.value.errors[where], caught.value.errors


def test_the_canvas_gets_a_port_per_branch_rule():
    described = next(kind for kind in canvas_palette() if kind["type"] == "split")
    assert described["label"] == "A/B Split"
    # The canvas's rule (static/canvas/graph.js portsFor): `when` {} always applies, so the
    # ports are config.branches[].id, labelled by the id, with no extra port.
    assert described["branch_list"] == {
        "field": "branches",
        "id": "id",
        "label": "id",
        "when": {},
        "extra": [],
    }
    assert described["branches"] == []
    assert described["side_effects"] is False and described["waits"] is False
    schema = described["config_schema"]
    assert schema["properties"]["branches"]["minItems"] == 2
    assert schema["properties"]["branches"]["maxItems"] == 10
    # A step added on the canvas starts from the schema's defaults: two ports at once.
    assert schema["properties"]["branches"]["default"] == branches(50, 50)["branches"]


# --- the choice ---------------------------------------------------------------------------------


def run_split(config, contact_pk, workflow_id=7, step_key="ab", email="ann@example.com"):
    """The step's own run() on what it reads (no database: the step has no side effects)."""
    ctx = SimpleNamespace(
        contact=SimpleNamespace(pk=contact_pk, email=email),
        step=SimpleNamespace(workflow_id=workflow_id, key=step_key),
        config=SPLIT.parse_config(config),
    )
    return SPLIT.run(ctx)


def test_the_choice_lays_the_point_over_the_cumulative_weights():
    parsed = SPLIT.parse_config(branches(70, 20, 10))
    assert split_choose(parsed.branches, 0.0) == "a"
    assert split_choose(parsed.branches, 0.6999) == "a"
    assert split_choose(parsed.branches, 0.7) == "b"
    assert split_choose(parsed.branches, 0.8999) == "b"
    assert split_choose(parsed.branches, 0.9) == "c"
    assert split_choose(parsed.branches, 1 - 2**-53) == "c"


def test_the_outcome_records_the_branch_and_the_bucket():
    outcome = run_split(AB, contact_pk=42)
    point = split_point(42, 7, "ab")
    assert 0 <= point < 1
    assert outcome.kind == "next"
    assert outcome.branch == ("a" if point < 0.7 else "b")
    assert outcome.output == {"branch": outcome.branch, "bucket": point}
    assert outcome.context_update == {}


def test_the_same_contact_at_the_same_step_always_takes_the_same_branch():
    for pk in range(1, 200):
        assert run_split(AB, pk).output == run_split(AB, pk).output
    # Another workflow or another step is another draw: over many contacts, some differ.
    first = [run_split(AB, pk).branch for pk in range(1, 200)]
    assert first != [run_split(AB, pk, workflow_id=8).branch for pk in range(1, 200)]
    assert first != [run_split(AB, pk, step_key="ab2").branch for pk in range(1, 200)]


def test_a_contact_that_is_not_stored_is_split_by_its_address():
    assert run_split(AB, None, email="x@example.com").output["bucket"] == split_point(
        "x@example.com", 7, "ab"
    )


CROSS_PROCESS = """
import json, sys
from types import SimpleNamespace
import django
django.setup()
from workflows_app.steps import STEP_TYPES
split = STEP_TYPES["split"]
config = split.parse_config(json.loads(sys.argv[1]))
out = []
for pk in range(1, 301):
    ctx = SimpleNamespace(contact=SimpleNamespace(pk=pk, email=""),
                          step=SimpleNamespace(workflow_id=7, key="ab"), config=config)
    out.append(split.run(ctx).output)
print(json.dumps(out))
"""


@pytest.mark.parametrize("hash_seed", ["0", "4242"])
def test_another_process_takes_the_same_branches(hash_seed):
    config = branches(50, 30, 20)
    env = {**os.environ, "PYTHONHASHSEED": hash_seed}  # salted hash() would differ here
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    done = subprocess.run(
        [sys.executable, "-c", CROSS_PROCESS, json.dumps(config)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = json.loads(done.stdout.strip().splitlines()[-1])
    assert theirs == [run_split(config, pk).output for pk in range(1, 301)]
    assert {o["branch"] for o in theirs} == {"a", "b", "c"}


# --- the weights hold ---------------------------------------------------------------------------

N = 20_000
TOLERANCE = 0.02  # ±2 percentage points; the binomial standard deviation here is ≤0.36 points


@pytest.mark.parametrize(
    "weights",
    [(70, 30), (50, 30, 20), (1, 1, 1), (0.5, 0.25, 0.25), (10, 10, 10, 10, 60)],
)
@pytest.mark.parametrize("contacts", ["uuid4", "sequential"])
def test_the_weights_hold_over_many_contacts(weights, contacts):
    parsed = SPLIT.parse_config(branches(*weights)).branches
    keys = [uuid.uuid4() for _ in range(N)] if contacts == "uuid4" else range(1, N + 1)
    counts = Counter(split_choose(parsed, split_point(key, 7, "ab")) for key in keys)
    total = sum(weights)
    for branch, weight in zip("abcde", weights, strict=False):
        share = counts[branch] / N
        assert abs(share - weight / total) <= TOLERANCE, (branch, share, weight / total)


# --- through the engine -------------------------------------------------------------------------


def tag(key):
    return {"key": key, "type": "update_contact", "config": {"set": {"route": key}}}


def split_workflow(make_workflow, config=AB, to=("a", "b"), **kw):
    steps = [{"key": "ab", "type": "split", "config": config}, *(tag(f"to_{b}") for b in to)]
    transitions = [{"from": "trigger", "to": "ab"}]
    transitions += [{"from": "ab", "branch": b, "to": f"to_{b}"} for b in to]
    return make_workflow(steps, transitions, **kw)


def expected(contact, workflow, config=AB):
    return split_choose(
        SPLIT.parse_config(config).branches, split_point(contact.pk, workflow.pk, "ab")
    )


def test_the_engine_takes_the_branch_and_follows_its_transition(track, make_workflow):
    workflow = split_workflow(make_workflow)
    emails = [f"c{i}@example.com" for i in range(16)]
    for email in emails:
        track_ok(track, email=email)
    drain()
    taken = set()
    for email in emails:
        ex = execution_of(email)
        contact = Contact.objects.get(email=email)
        branch = expected(contact, workflow)
        taken.add(branch)
        assert ex.status == Execution.COMPLETED
        assert history(ex) == [
            ("ab", StepRun.COMPLETED, branch),
            (f"to_{branch}", StepRun.COMPLETED, "next"),
        ]
        assert contact.data["route"] == f"to_{branch}"
        visit = ex.step_runs.get(step_key="ab")
        assert visit.output == {
            "branch": branch,
            "bucket": split_point(contact.pk, workflow.pk, "ab"),
        }
    assert taken == {"a", "b"}  # 2**-15 odds of failing by chance; the workflow pk fixes them


def test_a_contact_that_reenters_takes_the_same_branch(track, make_workflow):
    workflow = split_workflow(make_workflow, config=branches(1, 1, 1, 1), to="abcd", reentry=True)
    for email in ("ann@example.com", "bob@example.com", "cy@example.com"):
        for _ in range(3):
            track_ok(track, email=email)
            drain()
        runs = Execution.objects.filter(contact__email=email).order_by("id")
        assert runs.count() == 3
        firsts = [history(ex)[0] for ex in runs]
        contact = Contact.objects.get(email=email)
        assert (
            firsts
            == [("ab", StepRun.COMPLETED, expected(contact, workflow, branches(1, 1, 1, 1)))] * 3
        )


def test_a_branch_without_a_transition_completes_the_run(track, make_workflow):
    workflow = split_workflow(make_workflow, to=("a",))  # b leads nowhere
    for i in range(64):  # until a contact draws b (at 30% each, 0.7**64 odds of none)
        email = f"c{i}@example.com"
        track_ok(track, email=email)
        drain()
        if expected(Contact.objects.get(email=email), workflow) == "b":
            break
    else:
        pytest.fail("no contact drew b")
    ex = execution_of(email)
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [("ab", StepRun.COMPLETED, "b")]
    assert "route" not in Contact.objects.get(email=email).data


# --- graph, file format, API --------------------------------------------------------------------


def graph_with(config, *ports):
    return {
        "steps": [
            {"key": "ab", "type": "split", "config": config},
            *({"key": f"to_{p}", "type": "exit"} for p in ports),
        ],
        "transitions": [{"from": "trigger", "to": "ab"}]
        + [{"from": "ab", "branch": p, "to": f"to_{p}"} for p in ports],
    }


def test_the_graph_refuses_a_port_it_does_not_have(db):
    graph_validate(graph_with(AB, "a", "b"))
    with pytest.raises(GraphError) as caught:
        graph_validate(graph_with(AB, "a", "next"))
    assert "a A/B Split step has branches a, b, not 'next'" in str(caught.value)


def test_an_invalid_split_reports_its_config_not_its_ports(db):
    with pytest.raises(GraphError) as caught:
        graph_validate(graph_with(branches(1, 0), "a", "b"))
    assert [(e["step"], e["field"]) for e in caught.value.errors] == [
        ("ab", "config.branches.1.weight")
    ]


FILE = {
    "templates": [],
    "workflows": [
        {
            "name": "Onboarding test",
            "trigger_event": "user.signup",
            "steps": [
                {"key": "ab", "type": "split", "config": branches(2.5, 1, 1, ids=["x", "y", "z"])},
                tag("to_x"),
                tag("to_z"),
            ],
            "transitions": [
                {"from": "trigger", "to": "ab"},
                {"from": "ab", "branch": "x", "to": "to_x"},
                {"from": "ab", "branch": "z", "to": "to_z"},
            ],
        }
    ],
}


def test_export_then_import_is_the_identity(db):
    document_import(FILE)
    first = document_export()
    config = next(s for s in first["workflows"][0]["steps"] if s["key"] == "ab")["config"]
    assert config == branches(2.5, 1, 1, ids=["x", "y", "z"])
    assert {"from": "ab", "to": "to_z", "branch": "z"} in first["workflows"][0]["transitions"]
    Workflow.objects.all().delete()
    document_import(json.loads(json.dumps(first)))  # through JSON, as a file would be
    assert document_export() == first


def test_the_graph_api_takes_a_split(secret_key):
    api = Api(secret_key)
    workflow = workflow_create(name="Draft", trigger_event="user.signup")
    path = f"/v1/workflows/{workflow.pk}/graph"
    version = api.get(path).json()["data"]["version"]
    bad = graph_with(branches(1, 1, 0), "a", "b")
    fault = error(api.call("put", path, {"version": version, "graph": bad}), 400)
    assert "must be greater than 0" in fault["fields"]["graph.steps.ab.config.branches.2.weight"]

    good = graph_with({"branches": [{"weight": 9, "id": "a"}, {"weight": 1, "id": "b"}]}, "a", "b")
    response = api.call("put", path, {"version": version, "graph": good})
    assert response.status_code == 200, response.content
    saved = workflow_graph_document(workflow)
    assert saved["steps"][0]["config"] == branches(9, 1)
    assert {"from": "ab", "to": "to_b", "branch": "b"} in saved["transitions"]


def test_the_step_api_inserts_a_split_leading_on_by_a_branch(secret_key):
    api = Api(secret_key)
    workflow = workflow_create(name="Draft", trigger_event="user.signup", graph=WAIT_GRAPH)
    inserted = api.post(
        f"/v1/workflows/{workflow.pk}/transitions/pause:next/insert-step",
        {"type": "split", "key": "ab", "branch": "b", "config": AB},
    )
    assert inserted.status_code == 201, inserted.content
    # With no config it is an even a/b split, leading on by its first branch.
    again = api.post(
        f"/v1/workflows/{workflow.pk}/transitions/ab:b/insert-step", {"type": "split", "key": "cd"}
    )
    assert again.status_code == 201, again.content
    assert sorted(
        (t["from"], t["branch"], t["to"]) for t in workflow_graph_document(workflow)["transitions"]
    ) == [
        ("ab", "b", "cd"),
        ("cd", "a", "done"),
        ("pause", "next", "ab"),
        ("trigger", "next", "pause"),
    ]
    wrong = api.post(
        f"/v1/workflows/{workflow.pk}/transitions/pause:next/insert-step",
        {"type": "split", "key": "ef", "branch": "next"},
    )
    assert "its branches: a, b" in error(wrong, 400)["message"]
