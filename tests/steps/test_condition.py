import pytest

from contacts_app.models import Contact
from tests.conftest import drain
from tests.flow import execution_of, history, track_ok
from workflows_app.graph import GraphError, graph_validate
from workflows_app.models import Execution, Step, StepRun
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError, RunContext

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
}
EVENT_DATA = {
    "total": 99.5,
    "count": "12",
    "items": ["a", "b"],
    "order": {"total": 250, "lines": [{"sku": "X"}]},
    "note": "",
}


def check(field, operator, value=None, *, subscribed=True, context=None):
    """Runs the Condition step for an unsaved contact and context; returns its branch."""
    config = CONDITION.parse_config({"field": field, "operator": operator, "value": value})
    contact = Contact(email="ann@example.com", subscribed=subscribed, data=CONTACT_DATA)
    execution = Execution(contact=contact, context=EVENT_DATA if context is None else context)
    ctx = RunContext(
        execution=execution,
        contact=contact,
        step=Step(key="check", type="condition"),
        step_run=StepRun(),
        config=config,
        now=None,
    )
    outcome = CONDITION.run(ctx)
    assert outcome.kind == "next"
    assert outcome.output["result"] == (outcome.branch == "yes")
    return outcome.branch


CASES = [
    # equals / not_equals: strings exactly, numbers as numbers, booleans as booleans
    ("contact.plan", "equals", "pro", "yes"),
    ("contact.plan", "equals", "Pro", "no"),
    ("contact.plan", "not_equals", "free", "yes"),
    ("contact.plan", "not_equals", "pro", "no"),
    ("contact.seats", "equals", 10, "yes"),
    ("contact.seats", "equals", "10", "yes"),
    ("contact.seats", "equals", 10.0, "yes"),
    ("contact.seats", "equals", "10.0", "yes"),
    ("contact.seats", "equals", 11, "no"),
    ("contact.score", "equals", 7.5, "yes"),
    ("event.count", "equals", 12, "yes"),
    ("event.total", "not_equals", "99.5", "no"),
    ("contact.beta", "equals", True, "yes"),
    ("contact.beta", "equals", "true", "yes"),
    ("contact.beta", "equals", False, "no"),
    ("contact.beta", "equals", 1, "no"),  # a boolean is not the number 1
    ("contact.flag", "equals", False, "yes"),  # the string "false" counts as a boolean
    ("contact.flag", "equals", "false", "yes"),
    ("event.items", "equals", ["a", "b"], "yes"),
    ("event.items", "equals", ["b", "a"], "no"),
    ("event.note", "equals", "", "yes"),  # an empty string is present, not missing
    # greater/less: numbers and numeric strings only
    ("contact.seats", "greater_than", 9, "yes"),
    ("contact.seats", "greater_than", 10, "no"),
    ("contact.seats", "greater_or_equal", 10, "yes"),
    ("contact.seats", "less_than", "11", "yes"),
    ("contact.seats", "less_or_equal", 10, "yes"),
    ("contact.seats", "less_or_equal", 9.99, "no"),
    ("contact.score", "greater_than", 7, "yes"),  # "7.5" as a number
    ("event.count", "greater_than", 9, "yes"),  # "12" > 9 as numbers ("12" < "9" as strings)
    ("event.total", "less_than", 100, "yes"),
    ("contact.plan", "greater_than", 1, "no"),  # not a number: no
    ("contact.plan", "less_than", 1, "no"),
    ("contact.seats", "greater_than", "many", "no"),
    ("contact.beta", "greater_than", 0, "no"),  # booleans are not numbers
    # contains / not_contains: substring of a string, member of a list
    ("contact.bio", "contains", "Django", "yes"),
    ("contact.bio", "contains", "django", "no"),
    ("contact.bio", "not_contains", "Flask", "yes"),
    ("contact.bio", "not_contains", "Liquid", "no"),
    ("contact.tags", "contains", "vip", "yes"),
    ("contact.tags", "contains", "vi", "no"),  # members, not substrings of members
    ("contact.tags", "contains", "3", "yes"),  # members compare as equals does
    ("contact.tags", "not_contains", "late", "yes"),
    ("contact.tags", "not_contains", "early", "no"),
    ("contact.email", "contains", "@example.com", "yes"),
    # exists / not_exists
    ("contact.plan", "exists", None, "yes"),
    ("contact.plan", "not_exists", None, "no"),
    ("contact.missing", "exists", None, "no"),
    ("contact.missing", "not_exists", None, "yes"),
    ("contact.nickname", "exists", None, "no"),  # null counts as missing
    ("contact.nickname", "not_exists", None, "yes"),
    ("event.note", "exists", None, "yes"),
    # built-in contact fields and nested paths
    ("contact.email", "equals", "ann@example.com", "yes"),
    ("contact.subscribed", "equals", True, "yes"),
    ("contact.address.city", "equals", "Lyon", "yes"),
    ("contact.address.zip", "equals", 69001, "yes"),
    ("contact.address.city.name", "exists", None, "no"),  # a string has no keys
    ("event.order.total", "greater_or_equal", 250, "yes"),
    ("event.order.lines", "exists", None, "yes"),
    ("event.plan", "exists", None, "no"),  # event data is not contact data
]


@pytest.mark.parametrize("field, operator, value, branch", CASES)
def test_it_follows_the_documented_rules(field, operator, value, branch):
    assert check(field, operator, value) == branch


MISSING_ANSWERS = {
    "equals": "no",
    "not_equals": "yes",
    "contains": "no",
    "not_contains": "no",
    "greater_than": "no",
    "less_than": "no",
    "greater_or_equal": "no",
    "less_or_equal": "no",
    "exists": "no",
    "not_exists": "yes",
}


@pytest.mark.parametrize("operator, branch", MISSING_ANSWERS.items())
@pytest.mark.parametrize("field", ["contact.nope", "event.nope", "contact.nickname"])
def test_a_missing_field_satisfies_only_not_exists_and_not_equals(field, operator, branch):
    value = None if operator in ("exists", "not_exists") else 0
    assert check(field, operator, value) == branch


def test_it_reads_the_subscription_of_the_contact():
    assert check("contact.subscribed", "equals", False, subscribed=False) == "yes"
    assert check("contact.subscribed", "equals", "false", subscribed=False) == "yes"
    assert check("contact.subscribed", "equals", True, subscribed=False) == "no"


def test_it_reads_a_resuming_event_by_its_dotted_name():
    context = {"plan": "pro", "user.activated": {"via": "mobile"}}
    assert check("event.user.activated.via", "equals", "mobile", context=context) == "yes"
    assert check("event.user.activated", "exists", None, context=context) == "yes"
    assert check("event.user.deleted", "exists", None, context=context) == "no"


def test_it_records_the_value_it_compared():
    config = CONDITION.parse_config({"field": "contact.seats", "operator": "equals", "value": 10})
    contact = Contact(email="a@example.com", data={"seats": 10})
    ctx = RunContext(
        execution=Execution(contact=contact, context={}),
        contact=contact,
        step=Step(key="c", type="condition"),
        step_run=StepRun(),
        config=config,
        now=None,
    )
    assert CONDITION.run(ctx).output == {"value": 10, "result": True}


@pytest.mark.parametrize(
    "config, field",
    [
        ({"field": "plan", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "account.plan", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "contact.", "operator": "equals", "value": "pro"}, "field"),
        ({"field": "contact.plan", "operator": "matches", "value": "pro"}, "operator"),
        ({"field": "contact.plan", "operator": "equals"}, ""),
        ({"field": "contact.plan", "operator": "equals", "value": "x", "extra": 1}, "extra"),
    ],
)
def test_it_rejects_a_bad_config(config, field):
    with pytest.raises(ConfigError) as caught:
        CONDITION.parse_config(config)
    assert field in caught.value.errors


def test_exists_needs_no_value():
    assert CONDITION.parse_config({"field": "contact.plan", "operator": "exists"}).value is None


def test_it_must_use_yes_and_no_branches(db):
    with pytest.raises(GraphError) as caught:
        graph_validate(
            {
                "steps": [
                    {
                        "key": "is_pro",
                        "type": "condition",
                        "config": {"field": "contact.plan", "operator": "exists"},
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


def is_pro_workflow(make_workflow, field="contact.plan"):
    steps = [
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": field, "operator": "equals", "value": "pro"},
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
    assert Contact.objects.get().data["path"] == taken


def test_it_reads_event_data_that_is_not_kept_on_the_contact(track, make_workflow):
    is_pro_workflow(make_workflow, field="event.plan")
    track_ok(track, data={"plan": {"value": "pro", "persistent": False}})
    drain()
    assert "plan" not in Contact.objects.get().data
    assert Contact.objects.get().data["path"] == "pro"
