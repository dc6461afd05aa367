"""Condition, as on Plunk (../shared/plunk-v2-reference.md, "Steps"): its operators, field paths,
JavaScript's comparisons, the multi-branch mode, and runs through the real engine."""

import math

import pytest

from contacts_app.models import Contact
from tests.conftest import drain
from tests.flow import execution_of, history, track_ok
from workflows_app.canvas import canvas_palette
from workflows_app.files import document_export, document_import
from workflows_app.graph import GraphError, graph_validate
from workflows_app.models import Execution, Step, StepRun, Transition
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError, RunContext
from workflows_app.steps.condition import OPERATORS, js_number, js_string

CONDITION = STEP_TYPES["condition"]

CONTACT_DATA = {
    "plan": "pro",
    "seats": 10,
    "score": "7.5",  # a numeric string
    "beta": True,
    "flag": "false",
    "tags": ["vip", "early", 3],
    "nickname": None,
    "address": {"city": "Lyon", "zip": "69001"},
    "bio": "Loves Django and Liquid",
    "blank": "",
    "padded": "  12 ",
    "hex": "0x1A",
    "word": "abc",
    "underscored": "1_000",
    "inf": "inf",
    "ratio": 0.5,
    "whole": 2.0,
    "huge": 1e21,
    "tiny": 1e-7,
    "single": [5],
    "none": [],
    "mixed": [None, "a", True],
    "nested": [1, [2, 3]],
    "zero": 0,
    "off": False,
    "first name": "Ann",
}
EVENT_DATA = {
    "total": 99.5,
    "count": "12",
    "items": ["a", "b"],
    "order": {"total": 250, "lines": [{"sku": "X"}]},
    "note": "",
    "empty": None,
}


def run_condition(config, *, subscribed=True, context=None):
    """Runs the Condition step for an unsaved contact and context; returns its Outcome."""
    contact = Contact(email="ann@example.com", subscribed=subscribed, data=CONTACT_DATA)
    execution = Execution(contact=contact, context=EVENT_DATA if context is None else context)
    ctx = RunContext(
        execution=execution,
        contact=contact,
        step=Step(key="check", type="condition"),
        step_run=StepRun(),
        config=CONDITION.parse_config(config),
        now=None,
    )
    outcome = CONDITION.run(ctx)
    assert outcome.kind == "next"
    return outcome


def check(field, operator, value=None, **kwargs):
    config = {"field": field, "operator": operator}
    if value is not None:
        config["value"] = value
    outcome = run_condition(config, **kwargs)
    assert outcome.output["result"] == (outcome.branch == "yes")
    return outcome.branch


CASES = [
    # equals is JavaScript's ===: same type and value; objects and lists by value.
    ("data.plan", "equals", "pro", "yes"),
    ("data.plan", "equals", "Pro", "no"),
    ("data.seats", "equals", 10, "yes"),
    ("data.seats", "equals", 10.0, "yes"),  # one number type
    ("data.seats", "equals", "10", "no"),  # 10 !== "10"
    ("data.score", "equals", "7.5", "yes"),
    ("data.score", "equals", 7.5, "no"),
    ("event.count", "equals", 12, "no"),
    ("data.beta", "equals", True, "yes"),
    ("data.beta", "equals", "true", "no"),  # true !== "true"
    ("data.beta", "equals", 1, "no"),
    ("data.flag", "equals", False, "no"),
    ("data.flag", "equals", "false", "yes"),
    ("data.zero", "equals", False, "no"),
    ("data.off", "equals", 0, "no"),
    ("event.items", "equals", ["a", "b"], "yes"),
    ("event.items", "equals", ["b", "a"], "no"),
    ("data.tags", "equals", ["vip", "early", "3"], "no"),  # members strictly too
    ("event.order", "equals", {"lines": [{"sku": "X"}], "total": 250.0}, "yes"),
    ("event.order", "equals", {"total": 250}, "no"),
    ("event.note", "equals", "", "yes"),  # an empty string is present
    ("contact.email", "equals", "ann@example.com", "yes"),
    ("contact.email", "equals", "Ann@example.com", "no"),
    ("contact.subscribed", "equals", True, "yes"),
    ("contact.subscribed", "equals", "true", "no"),
    # notEquals: !== on a present field
    ("data.plan", "notEquals", "free", "yes"),
    ("data.plan", "notEquals", "pro", "no"),
    ("data.seats", "notEquals", "10", "yes"),
    ("data.beta", "notEquals", "true", "yes"),
    ("event.items", "notEquals", ["a", "b"], "no"),
    # contains / notContains: String(field) includes String(value), case-sensitive
    ("data.bio", "contains", "Django", "yes"),
    ("data.bio", "contains", "django", "no"),
    ("data.bio", "notContains", "Flask", "yes"),
    ("data.bio", "notContains", "Liquid", "no"),
    ("contact.email", "contains", "@example.com", "yes"),
    ("contact.email", "contains", "@EXAMPLE.com", "no"),
    ("data.seats", "contains", "0", "yes"),  # String(10) is "10"
    ("data.seats", "contains", 1, "yes"),
    ("data.beta", "contains", "ru", "yes"),  # "true"
    ("data.tags", "contains", "vip,early,3", "yes"),  # a list is joined with commas
    ("data.tags", "contains", "vi", "yes"),  # a substring of the joined form
    ("data.tags", "contains", 3, "yes"),
    ("data.tags", "notContains", "late", "yes"),
    ("data.tags", "notContains", "early", "no"),
    ("data.mixed", "contains", ",a,true", "yes"),  # null members are empty
    ("data.nested", "contains", "1,2,3", "yes"),  # nested lists flatten
    ("data.address", "contains", "Lyon", "no"),  # an object is "[object Object]"
    ("data.address", "contains", "[object Object]", "yes"),
    ("data.ratio", "contains", "0.5", "yes"),
    ("data.whole", "contains", ".0", "no"),  # String(2.0) is "2"
    ("data.whole", "equals", 2, "yes"),
    ("data.huge", "contains", "1e+21", "yes"),
    ("data.tiny", "contains", "1e-7", "yes"),
    ("event.total", "contains", 99.5, "yes"),
    ("data.plan", "contains", True, "no"),  # "pro" does not contain "true"
    ("event.note", "contains", "", "yes"),
    # greaterThan, lessThan, ...: Number() on both sides; NaN is never greater or less
    ("data.seats", "greaterThan", 9, "yes"),
    ("data.seats", "greaterThan", 10, "no"),
    ("data.seats", "greaterThanOrEqual", 10, "yes"),
    ("data.seats", "lessThan", "11", "yes"),
    ("data.seats", "lessThanOrEqual", 10, "yes"),
    ("data.seats", "lessThanOrEqual", 9.99, "no"),
    ("data.seats", "greaterThanOrEqual", "1e1", "yes"),
    ("data.seats", "greaterThan", "1e1", "no"),
    ("data.seats", "lessThan", "Infinity", "yes"),
    ("data.seats", "greaterThan", True, "yes"),  # Number(true) is 1
    ("data.seats", "greaterThan", "many", "no"),  # NaN
    ("data.score", "greaterThan", 7, "yes"),  # "7.5"
    ("event.count", "greaterThan", 9, "yes"),  # "12" > 9 as numbers
    ("event.total", "lessThan", 100, "yes"),
    ("data.padded", "greaterThan", 11, "yes"),  # "  12 " is 12
    ("data.padded", "lessThan", 13, "yes"),
    ("data.blank", "lessThan", 1, "yes"),  # "" is 0
    ("data.blank", "greaterThanOrEqual", 0, "yes"),
    ("data.word", "greaterThan", 1, "no"),  # "abc" is NaN
    ("data.word", "lessThan", 1, "no"),
    ("data.word", "lessThanOrEqual", "abc", "no"),  # NaN <= NaN is false
    ("data.flag", "greaterThan", -1, "no"),  # "false" is NaN
    ("data.beta", "greaterThan", 0, "yes"),  # true is 1
    ("data.beta", "greaterThanOrEqual", 1, "yes"),
    ("data.beta", "lessThan", 1, "no"),
    ("data.off", "lessThan", 1, "yes"),  # false is 0
    ("data.hex", "greaterThan", 25, "yes"),  # "0x1A" is 26
    ("data.hex", "lessThan", 27, "yes"),
    ("data.underscored", "greaterThan", 0, "no"),  # no underscores in JS numbers
    ("data.inf", "greaterThan", 0, "no"),  # only "Infinity" is infinite
    ("data.single", "greaterThan", 4, "yes"),  # [5] is "5" is 5
    ("data.none", "lessThan", 1, "yes"),  # [] is "" is 0
    ("data.tags", "greaterThan", 0, "no"),  # "vip,early,3" is NaN
    ("data.address", "greaterThan", 0, "no"),  # an object is NaN
    ("data.plan", "greaterThan", 1, "no"),
    ("data.plan", "lessThan", 1, "no"),
    # exists / notExists: present and not null
    ("data.plan", "exists", None, "yes"),
    ("data.plan", "notExists", None, "no"),
    ("data.zero", "exists", None, "yes"),
    ("data.off", "exists", None, "yes"),
    ("event.note", "exists", None, "yes"),
    ("data.nickname", "exists", None, "no"),  # null
    ("data.nickname", "notExists", None, "yes"),
    ("event.empty", "notExists", None, "yes"),
    ("data.missing", "exists", None, "no"),
    ("data.missing", "notExists", None, "yes"),
    # field paths
    ("contact.plan", "equals", "pro", "yes"),  # ours: contact.<key> is a data key
    ("contact.data.plan", "equals", "pro", "yes"),  # Plunk: contact.data.X is data.X
    ("data.address.city", "equals", "Lyon", "yes"),
    ("contact.address.city", "equals", "Lyon", "yes"),
    ("contact.data.address.zip", "equals", "69001", "yes"),
    ("data.address.zip", "equals", 69001, "no"),
    ("data.address.city.name", "exists", None, "no"),  # a string has no keys
    ("event.order.total", "greaterThanOrEqual", 250, "yes"),
    ("workflow.order.total", "equals", 250, "yes"),  # workflow.X is the context too
    ("workflow.count", "equals", "12", "yes"),
    ("event.order.lines", "exists", None, "yes"),
    ("event.plan", "exists", None, "no"),  # event data is not contact data
    ("data.total", "exists", None, "no"),  # and contact data is not event data
    ("data.email", "exists", None, "no"),  # the email is contact.email, not data
    ("data.first name", "equals", "Ann", "yes"),  # keys with spaces
    ("data.tags.0", "equals", "vip", "yes"),  # lists by index, as in JS
    ("data.tags.2", "equals", 3, "yes"),
    ("data.tags.3", "exists", None, "no"),
    ("data.tags.01", "exists", None, "no"),
    ("data.tags.length", "equals", 3, "yes"),
    ("event.order.lines.0.sku", "equals", "X", "yes"),
    ("data.plan.length", "exists", None, "no"),  # a string has no properties here
]


@pytest.mark.parametrize(
    "field, operator, value, branch",
    CASES,
    ids=[f"{f} {o} {v!r}" for f, o, v, _ in CASES],
)
def test_it_follows_plunks_rules(field, operator, value, branch):
    assert check(field, operator, value) == branch


MISSING_ANSWERS = {operator: "no" for operator in OPERATORS} | {"notExists": "yes"}


@pytest.mark.parametrize("operator, branch", MISSING_ANSWERS.items())
@pytest.mark.parametrize(
    "field", ["data.nope", "contact.nope", "event.nope", "data.nickname", "event.empty"]
)
def test_a_missing_or_null_field_satisfies_only_not_exists(field, operator, branch):
    # Values that would match an empty field if it were compared: "" and 0.
    for value in ("", 0, "null"):
        assert check(field, operator, None if operator in ("exists", "notExists") else value) == (
            branch
        )


@pytest.mark.parametrize(
    "value, text",
    [
        (True, "true"),
        (False, "false"),
        (None, "null"),
        (10, "10"),
        (2.0, "2"),
        (-0.0, "0"),
        (0.1, "0.1"),
        (1e16, "10000000000000000"),
        (1e21, "1e+21"),
        (1.5e-7, "1.5e-7"),
        (0.000001, "0.000001"),
        (123456789012345678901, "123456789012345680000"),  # a double, as JSON.parse reads it
        ([1, None, [2, "a"]], "1,,2,a"),
        ({"a": 1}, "[object Object]"),
        ("Ann", "Ann"),
    ],
)
def test_string_forms_are_javascripts(value, text):
    assert js_string(value) == text


@pytest.mark.parametrize(
    "value, number",
    [
        ("", 0),
        ("  12 ", 12),
        ("\u00a012\n", 12),
        ("+5", 5),
        ("-.5", -0.5),
        ("5.", 5),
        ("1e3", 1000),
        ("0x10", 16),
        ("0b101", 5),
        ("0o17", 15),
        ("-Infinity", -math.inf),
        (True, 1),
        (None, 0),
        ([], 0),
        (["7"], 7),
        ("abc", math.nan),
        ("-0x10", math.nan),
        ("1_000", math.nan),
        ("infinity", math.nan),
        ("12px", math.nan),
        ("\u0661", math.nan),  # an Arabic-Indic digit is not a JS digit
        ([1, 2], math.nan),
        ({}, math.nan),
    ],
)
def test_numbers_are_javascripts(value, number):
    got = js_number(value)
    assert (math.isnan(got) and math.isnan(number)) or got == number


def test_it_reads_the_subscription_of_the_contact():
    assert check("contact.subscribed", "equals", False, subscribed=False) == "yes"
    assert check("contact.subscribed", "equals", "false", subscribed=False) == "no"
    assert check("contact.subscribed", "equals", True, subscribed=False) == "no"


def test_it_reads_a_resuming_event_by_its_dotted_name():
    context = {"plan": "pro", "user.activated": {"via": "mobile"}}
    assert check("event.user.activated.via", "equals", "mobile", context=context) == "yes"
    assert check("workflow.user.activated.via", "equals", "mobile", context=context) == "yes"
    assert check("event.user.activated", "exists", None, context=context) == "yes"
    assert check("event.user.deleted", "exists", None, context=context) == "no"


def test_it_records_the_value_it_compared():
    outcome = run_condition({"field": "data.seats", "operator": "equals", "value": 10})
    assert outcome.output == {"value": 10, "result": True}
    outcome = run_condition({"field": "data.nope", "operator": "notEquals", "value": 1})
    assert outcome.output == {"value": None, "result": False}


# --- operator names ------------------------------------------------------------------------

OLD_NAMES = {
    "not_equals": "notEquals",
    "not_contains": "notContains",
    "greater_than": "greaterThan",
    "less_than": "lessThan",
    "greater_or_equal": "greaterThanOrEqual",
    "less_or_equal": "lessThanOrEqual",
    "not_exists": "notExists",
}


@pytest.mark.parametrize("old, new", OLD_NAMES.items())
def test_it_accepts_our_old_operator_names_and_stores_plunks(old, new):
    raw = {"field": "data.seats", "operator": old, "value": 5}
    parsed = CONDITION.parse_config(raw)
    assert parsed.operator == new
    stored = CONDITION.stored_config(raw, parsed)
    assert stored == {"field": "data.seats", "operator": new, "value": 5}
    # And they mean the same as Plunk's.
    assert check("data.seats", old, 5) == check("data.seats", new, 5)


def test_the_form_offers_plunks_operator_names_only():
    schema = CONDITION.describe()["config_schema"]
    assert schema["properties"]["operator"]["enum"] == list(OPERATORS)
    assert schema["$defs"]["Branch"]["properties"]["operator"]["enum"] == list(OPERATORS)


@pytest.mark.parametrize(
    "config, where",
    [
        ({"field": "plan", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "account.plan", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "contact.", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "data. plan", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "data.plan", "operator": "matches", "value": "pro"}, "operator"),
        ({"field": "data.plan", "operator": "not_matches", "value": "pro"}, "operator"),
        ({"field": "data.plan", "operator": "equals"}, ""),
        ({"field": "data.plan"}, ""),
        ({"field": "data.plan", "operator": "equals", "value": "x", "extra": 1}, "extra"),
        ({"field": "data.plan", "mode": "switch", "operator": "exists"}, "mode"),
    ],
)
def test_it_rejects_a_bad_config(config, where):
    with pytest.raises(ConfigError) as caught:
        CONDITION.parse_config(config)
    assert where in caught.value.errors


def test_exists_needs_no_value():
    parsed = CONDITION.parse_config({"field": "data.plan", "operator": "notExists"})
    assert parsed.value is None
    assert CONDITION.stored_config({}, parsed) == {"field": "data.plan", "operator": "notExists"}
    explicit = {"mode": "binary", "field": "data.plan", "operator": "exists", "value": None}
    assert CONDITION.stored_config(explicit, CONDITION.parse_config(explicit)) == {
        "field": "data.plan",
        "operator": "exists",
    }


def test_it_must_use_yes_and_no_branches(db):
    with pytest.raises(GraphError) as caught:
        graph_validate(
            {
                "steps": [
                    {
                        "key": "is_pro",
                        "type": "condition",
                        "config": {"field": "data.plan", "operator": "exists"},
                    },
                    {"key": "t", "type": "exit"},
                ],
                "transitions": [
                    {"from": "trigger", "to": "is_pro"},
                    {"from": "is_pro", "to": "t"},
                ],
            }
        )
    assert "is_pro" in str(caught.value)
    assert "branches yes, no, not 'next'" in str(caught.value)


def is_pro_workflow(make_workflow, field="data.plan", operator="equals"):
    steps = [
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": field, "operator": operator, "value": "pro"},
        },
        {"key": "pro", "type": "update_contact", "config": {"set": {"path": "pro"}}},
        {"key": "free", "type": "update_contact", "config": {"set": {"path": "free"}}},
    ]
    transitions = [
        {"from": "trigger", "to": "is_pro"},
        {"from": "is_pro", "branch": "yes", "to": "pro"},
        {"from": "is_pro", "branch": "no", "to": "free"},
    ]
    return make_workflow(steps, transitions)


@pytest.mark.parametrize("plan, branch", [("pro", "yes"), ("free", "no")])
def test_it_takes_the_branch_in_a_run(track, make_workflow, plan, branch):
    is_pro_workflow(make_workflow)
    track_ok(track, data={"plan": plan})
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    taken = "pro" if branch == "yes" else "free"
    assert history(ex) == [
        ("is_pro", StepRun.COMPLETED, branch),
        (taken, StepRun.COMPLETED, "next"),
    ]
    assert ex.step_runs.get(step_key="is_pro").output == {"value": plan, "result": branch == "yes"}
    assert Contact.objects.get().data["path"] == taken


def test_it_reads_event_data_that_is_not_kept_on_the_contact(track, make_workflow):
    is_pro_workflow(make_workflow, field="event.plan")
    track_ok(track, data={"plan": {"value": "pro", "persistent": False}})
    drain()
    assert "plan" not in Contact.objects.get().data
    assert Contact.objects.get().data["path"] == "pro"


def test_a_workflow_saved_with_old_operator_names_runs_and_exports_plunks(track, make_workflow):
    workflow = is_pro_workflow(make_workflow, operator="not_equals")
    assert Step.objects.get(key="is_pro").config == {
        "field": "data.plan",
        "operator": "notEquals",
        "value": "pro",
    }
    exported = document_export()["workflows"][0]["steps"]
    assert next(s for s in exported if s["key"] == "is_pro")["config"]["operator"] == "notEquals"
    track_ok(track, data={"plan": "free"})
    drain()
    assert Contact.objects.get().data["path"] == "pro"  # notEquals "pro": yes
    assert workflow.steps.count() == 3


# --- multi-branch mode -----------------------------------------------------------------------

PLAN_BRANCHES = [
    {"id": "enterprise", "name": "Enterprise", "operator": "equals", "value": "enterprise"},
    {"id": "paid", "name": "Any paid plan", "operator": "contains", "value": "pro"},
    {"id": "old-names", "name": "Old names work", "operator": "not_exists"},
    {"id": "pro_exact", "name": "Pro (never reached)", "operator": "equals", "value": "pro"},
]
MULTI = {"mode": "multi", "field": "data.plan", "branches": PLAN_BRANCHES}


def test_a_multi_condition_has_a_port_per_branch_and_default():
    parsed = CONDITION.parse_config(MULTI)
    assert CONDITION.branches_for(parsed) == (
        "enterprise",
        "paid",
        "old-names",
        "pro_exact",
        "default",
    )
    assert CONDITION.branches_for(
        CONDITION.parse_config({"field": "data.a", "operator": "exists"})
    ) == ("yes", "no")


def test_a_multi_condition_is_stored_with_plunks_names():
    parsed = CONDITION.parse_config(MULTI)
    assert CONDITION.stored_config(MULTI, parsed)["branches"][2] == {
        "id": "old-names",
        "name": "Old names work",
        "operator": "notExists",
    }
    assert CONDITION.stored_config(MULTI, parsed)["mode"] == "multi"


@pytest.mark.parametrize(
    "plan, branch, name",
    [
        ("enterprise", "enterprise", "Enterprise"),
        ("pro", "paid", "Any paid plan"),  # first match wins: pro_exact never runs
        ("pro-plus", "paid", "Any paid plan"),
        (None, "old-names", "Old names work"),
        ("free", "default", "default"),
    ],
)
def test_the_first_matching_branch_wins_else_default(plan, branch, name):
    context = {}
    config = MULTI | {"field": "event.plan"}
    if plan is not None:
        context["plan"] = plan
    outcome = run_condition(config, context=context)
    assert outcome.branch == branch
    assert outcome.output == {"value": plan, "branch": branch, "name": name}


def branch(id_, operator="exists", **extra):
    return {"id": id_, "name": id_ or "x", "operator": operator, **extra}


@pytest.mark.parametrize(
    "config, where",
    [
        ({"mode": "multi", "field": "data.plan"}, ""),
        ({"mode": "multi", "field": "data.plan", "branches": []}, "branches"),
        (
            {
                "mode": "multi",
                "field": "data.plan",
                "branches": [branch(f"b{i}") for i in range(21)],
            },
            "branches",
        ),
        ({"mode": "multi", "field": "data.plan", "branches": [branch("a"), branch("a")]}, ""),
        ({"mode": "multi", "field": "data.plan", "branches": [branch("default")]}, "branches.0.id"),
        ({"mode": "multi", "field": "data.plan", "branches": [branch("")]}, "branches.0.id"),
        ({"mode": "multi", "field": "data.plan", "branches": [branch("a b")]}, "branches.0.id"),
        ({"mode": "multi", "field": "data.plan", "branches": [branch("x" * 65)]}, "branches.0.id"),
        (
            {
                "mode": "multi",
                "field": "data.plan",
                "branches": [{"id": "a", "operator": "exists"}],
            },
            "branches.0.name",
        ),
        (
            {"mode": "multi", "field": "data.plan", "branches": [branch("a", "equals")]},
            "branches.0",
        ),
        (
            {"mode": "multi", "field": "data.plan", "branches": [branch("a", "between")]},
            "branches.0.operator",
        ),
        (
            {
                "mode": "multi",
                "field": "data.plan",
                "operator": "exists",
                "branches": [branch("a")],
            },
            "",
        ),
        ({"field": "data.plan", "operator": "exists", "branches": [branch("a")]}, ""),
    ],
)
def test_it_rejects_a_bad_multi_config(config, where):
    with pytest.raises(ConfigError) as caught:
        CONDITION.parse_config(config)
    assert where in caught.value.errors


def test_twenty_branches_with_long_ids_are_fine():
    branches = [branch(f"{i:02d}" + "x" * 62) for i in range(20)]
    parsed = CONDITION.parse_config({"mode": "multi", "field": "data.a", "branches": branches})
    assert len(CONDITION.branches_for(parsed)) == 21


def test_the_canvas_gets_the_branch_list_rule():
    condition = next(kind for kind in canvas_palette() if kind["type"] == "condition")
    assert condition["branches"] == ["yes", "no"]
    assert condition["branch_list"] == {
        "field": "branches",
        "id": "id",
        "label": "name",
        "when": {"mode": "multi"},
        "extra": ["default"],
    }
    schema = condition["config_schema"]
    assert schema["properties"]["mode"]["enum"] == ["binary", "multi"]
    assert schema["properties"]["branches"]["anyOf"][0]["maxItems"] == 20
    assert set(schema["$defs"]["Branch"]["required"]) == {"id", "name", "operator"}


LONG_ID = "b" * 64


def multi_workflow(make_workflow, **transitions_to):
    branches = [
        {"id": "enterprise", "name": "Enterprise", "operator": "equals", "value": "enterprise"},
        {"id": LONG_ID, "name": "Paid", "operator": "contains", "value": "pro"},
    ]
    steps = [
        {
            "key": "plan",
            "type": "condition",
            "config": {"mode": "multi", "field": "data.plan", "branches": branches},
        },
        *(
            {"key": key, "type": "update_contact", "config": {"set": {"path": key}}}
            for key in ("big", "paid", "other")
        ),
    ]
    transitions = [
        {"from": "trigger", "to": "plan"},
        {"from": "plan", "branch": "enterprise", "to": "big"},
        {"from": "plan", "branch": LONG_ID, "to": "paid"},
        {"from": "plan", "branch": "default", "to": "other"},
    ]
    return make_workflow(steps, transitions)


@pytest.mark.parametrize(
    "plan, port, taken",
    [("enterprise", "enterprise", "big"), ("pro", LONG_ID, "paid"), ("free", "default", "other")],
)
def test_a_multi_condition_takes_its_branch_in_a_run(track, make_workflow, plan, port, taken):
    multi_workflow(make_workflow)
    assert Transition.objects.filter(branch=LONG_ID).count() == 1
    track_ok(track, data={"plan": plan})
    drain()
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [
        ("plan", StepRun.COMPLETED, port),
        (taken, StepRun.COMPLETED, "next"),
    ]
    assert Contact.objects.get().data["path"] == taken


def test_a_multi_condition_refuses_ports_it_does_not_have(db):
    document = {
        "steps": [
            {"key": "plan", "type": "condition", "config": MULTI},
            {"key": "t", "type": "exit"},
        ],
        "transitions": [
            {"from": "trigger", "to": "plan"},
            {"from": "plan", "branch": "yes", "to": "t"},
        ],
    }
    with pytest.raises(GraphError) as caught:
        graph_validate(document)
    assert "branches enterprise, paid, old-names, pro_exact, default, not 'yes'" in str(
        caught.value
    )


def test_a_multi_condition_round_trips_through_a_file(db):
    document = {
        "templates": [],
        "workflows": [
            {
                "name": "Plans",
                "trigger_event": "user.signup",
                "steps": [
                    {"key": "plan", "type": "condition", "config": MULTI},
                    {"key": "t", "type": "exit", "config": {}},
                ],
                "transitions": [
                    {"from": "trigger", "to": "plan"},
                    {"from": "plan", "branch": "old-names", "to": "t"},
                ],
            }
        ],
    }
    document_import(document)
    exported = document_export()["workflows"][0]
    config = next(s for s in exported["steps"] if s["key"] == "plan")["config"]
    assert [b["operator"] for b in config["branches"]] == [
        "equals",
        "contains",
        "notExists",
        "equals",
    ]
    assert {"from": "plan", "to": "t", "branch": "old-names"} in exported["transitions"]


def test_an_invalid_multi_condition_reports_its_config_not_its_ports(db):
    broken = MULTI | {"branches": [*PLAN_BRANCHES, PLAN_BRANCHES[0]]}  # a duplicate id
    document = {
        "steps": [
            {"key": "plan", "type": "condition", "config": broken},
            {"key": "a", "type": "exit"},
            {"key": "b", "type": "exit"},
        ],
        "transitions": [
            {"from": "trigger", "to": "plan"},
            {"from": "plan", "branch": "paid", "to": "a"},
            {"from": "plan", "branch": "default", "to": "b"},
        ],
    }
    with pytest.raises(GraphError) as caught:
        graph_validate(document)
    assert [(e["step"], e["message"]) for e in caught.value.errors] == [
        ("plan", "Value error, branch ids must be unique")
    ]
    # A yes/no condition with an invalid config still has only yes and no.
    document["steps"][0]["config"] = {"field": "data.plan", "operator": "equals"}
    with pytest.raises(GraphError) as caught:
        graph_validate(document)
    assert "branches yes, no, not 'paid'" in str(caught.value)
