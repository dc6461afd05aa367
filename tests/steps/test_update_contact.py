import pytest
from django.core import mail

from contacts_app.models import Contact
from templates_app.models import Template
from tests.conftest import chain, drain
from tests.flow import execution_of, history, track_ok
from workflows_app.files import document_export
from workflows_app.models import Execution, StepRun
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import ConfigError


def update(key="tag", **config):
    return {"key": key, "type": "update_contact", "config": config}


def test_it_sets_and_removes_keys(track, make_workflow):
    make_workflow(
        *chain(update(set={"stage": "active", "plan": "pro", "seats": 3}, unset=["trial"]))
    )
    track_ok(track, data={"plan": "free", "trial": True, "firstName": "Ann"})
    drain()

    contact = Contact.objects.get()
    assert contact.data == {"plan": "pro", "firstName": "Ann", "stage": "active", "seats": 3}
    assert contact.subscribed is True
    ex = execution_of()
    assert ex.status == Execution.COMPLETED
    assert history(ex) == [("tag", StepRun.COMPLETED, "next")]
    assert ex.step_runs.get().output == {"data": contact.data, "subscribed": True}


def test_removing_a_key_that_is_not_there_is_harmless(track, make_workflow):
    make_workflow(*chain(update(unset=["nothing"])))
    track_ok(track, data={"plan": "free"})
    drain()
    assert Contact.objects.get().data == {"plan": "free"}
    assert execution_of().status == Execution.COMPLETED


def test_it_sets_nested_values_as_given(track, make_workflow):
    make_workflow(*chain(update(set={"address": {"city": "Lyon"}, "tags": ["a", "b"]})))
    track_ok(track, data={"address": {"zip": "1"}})
    drain()
    # Top-level keys are replaced whole: the write is absolute, so a repeated visit is harmless.
    assert Contact.objects.get().data == {"address": {"city": "Lyon"}, "tags": ["a", "b"]}


def test_it_unsubscribes_and_later_marketing_mail_is_skipped(track, template, make_workflow):
    send = {"key": "welcome", "type": "send_email", "config": {"template": "Welcome"}}
    make_workflow(*chain(update(subscribed=False), send))
    track_ok(track)
    drain()

    assert Contact.objects.get().subscribed is False
    ex = execution_of()
    assert history(ex) == [
        ("tag", StepRun.COMPLETED, "next"),
        ("welcome", StepRun.SKIPPED, "next"),
    ]
    assert mail.outbox == []


def test_it_resubscribes(track, make_workflow):
    make_workflow(*chain(update(subscribed=True)))
    track_ok(track, subscribed=False)
    assert Contact.objects.get().subscribed is False
    drain()
    assert Contact.objects.get().subscribed is True


def test_a_null_subscribed_leaves_the_subscription_alone(track, make_workflow):
    make_workflow(*chain(update(set={"x": 1}, subscribed=None)))
    track_ok(track, subscribed=False)
    drain()
    contact = Contact.objects.get()
    assert (contact.subscribed, contact.data) == (False, {"x": 1})


def test_the_change_reaches_later_steps(track, make_workflow):
    Template.objects.create(
        name="Plan",
        type=Template.TRANSACTIONAL,
        subject="{{ data.plan }} {{ contact.plan }} {{ plan }}",
        html="x",
    )
    send = {"key": "mail", "type": "send_email", "config": {"template": "Plan"}}
    make_workflow(*chain(update(set={"plan": "enterprise"}), send))
    track_ok(track, data={"plan": "free"})
    drain()
    # The contact's data has the change; a bare `{{ plan }}` is the run's event data, which
    # wins over contact data in Plunk's scope.
    assert mail.outbox[0].subject == "enterprise enterprise free"


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"set": {}, "unset": [], "subscribed": None},
        {"set": {"a": 1}, "unset": ["a"]},
        {"set": ["a"]},
        {"unset": "a"},
        {"subscribed": "maybe"},
        {"set": {"a": 1}, "delete": ["b"]},
    ],
)
def test_it_rejects_a_config_that_changes_nothing_or_is_malformed(config):
    with pytest.raises(ConfigError):
        STEP_TYPES["update_contact"].parse_config(config)


def test_a_condition_later_in_the_same_pass_sees_the_change(track, make_workflow):
    steps = [
        update(set={"plan": "pro"}),
        {
            "key": "is_pro",
            "type": "condition",
            "config": {"field": "contact.plan", "operator": "equals", "value": "pro"},
        },
    ]
    transitions = [{"from": "trigger", "to": "tag"}, {"from": "tag", "to": "is_pro"}]
    make_workflow(steps, transitions)
    track_ok(track, data={"plan": "free"})
    drain()
    assert history(execution_of())[-1] == ("is_pro", StepRun.COMPLETED, "yes")


# --- Plunk's shape: {updates, subscriptionAction} ----------------------------------------------


@pytest.mark.parametrize(
    "config, stored",
    [
        (
            {"updates": {"plan": "pro", "trial": None, "note": ""}, "subscriptionAction": "none"},
            {"set": {"plan": "pro"}, "unset": ["trial"]},
        ),
        (
            {"subscriptionAction": "unsubscribe"},
            {"subscribed": False},
        ),
        (
            {"updates": {"seats": 0, "vip": False}, "subscriptionAction": "subscribe"},
            {"set": {"seats": 0, "vip": False}, "subscribed": True},
        ),
        ({"updates": {"plan": "pro"}}, {"set": {"plan": "pro"}}),
        # Ours, without what changes nothing (tests/steps/test_canonical_configs.py).
        ({"set": {"plan": "pro"}}, {"set": {"plan": "pro"}}),
        ({"set": {"plan": "pro"}, "unset": [], "subscribed": None}, {"set": {"plan": "pro"}}),
    ],
)
def test_it_accepts_plunks_shape_and_stores_ours(make_workflow, config, stored):
    workflow = make_workflow(*chain(update(**config)))
    assert workflow.steps.get().config == stored
    [exported] = document_export([workflow.name])["workflows"][0]["steps"]
    assert exported["config"] == stored


@pytest.mark.parametrize(
    "config",
    [
        {"updates": {}, "subscriptionAction": "none"},
        {"updates": {"a": ""}},
        {"updates": ["a"]},
        {"subscriptionAction": "maybe"},
        {"updates": {"a": 1}, "set": {"b": 2}},
        {"updates": {"a": 1}, "extra": True},
    ],
)
def test_it_refuses_a_plunk_config_that_changes_nothing_or_is_malformed(config):
    with pytest.raises(ConfigError):
        STEP_TYPES["update_contact"].parse_config(config)


def test_plunks_shape_runs_updates_removals_and_unsubscribe(track, make_workflow):
    config = {
        "updates": {"plan": "pro", "trial": None, "firstName": "", "seats": 5},
        "subscriptionAction": "unsubscribe",
    }
    make_workflow(*chain(update(**config)))
    track_ok(track, data={"plan": "free", "trial": True, "firstName": "Ann"})
    drain()

    contact = Contact.objects.get()
    assert contact.data == {"plan": "pro", "firstName": "Ann", "seats": 5}
    assert contact.subscribed is False
    assert execution_of().status == Execution.COMPLETED


def test_plunks_subscribe_action_resubscribes(track, make_workflow):
    make_workflow(*chain(update(subscriptionAction="subscribe")))
    track_ok(track, subscribed=False)
    drain()
    assert Contact.objects.get().subscribed is True
