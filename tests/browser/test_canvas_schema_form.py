"""The form the canvas generates from a step type's config schema (static/canvas/SchemaForm.jsx),
for a type that names no hand-written one: each kind of field pydantic's schema has (text,
integer, nullable number, enum, lists of strings and of enum values, a nested model behind a
$ref, and a JSON box for what it can not render), values stored with their JSON types, the
server's errors under their fields, nested ones included, and the stored config shown again
after a reload. PlanCheck's ports through the same form: test_canvas_branch_rules.py."""

import json
from typing import Literal

import pytest
from pydantic import Field

from tests.browser.conftest import login, screenshot
from tests.browser.test_canvas import add, drag_connect, open_canvas, select
from workflows_app.models import Step
from workflows_app.services import workflow_create
from workflows_app.steps import STEP_TYPES
from workflows_app.steps.base import Outcome, RunContext, StepConfig, StepType

pytestmark = pytest.mark.django_db(transaction=True)


class Address(StepConfig):
    city: str = Field(min_length=1)
    zip: str | None = None


class SurveyConfig(StepConfig):
    question: str = Field(min_length=1, description="What to ask")
    score: int = Field(ge=1, le=10)
    weight: float | None = None
    channel: Literal["email", "sms"] = "email"
    tags: list[str] = Field(default_factory=list)
    kinds: list[Literal["a", "b"]] = Field(default_factory=list)
    address: Address | None = None
    limits: dict[str, int] = Field(default_factory=dict)


class Survey(StepType):
    type = "survey"
    label = "Survey"
    Config = SurveyConfig

    def run(self, ctx: RunContext) -> Outcome:
        return Outcome(kind="next")


@pytest.fixture
def survey(monkeypatch):
    # live_server serves from this process: the canvas's palette comes from this registry.
    monkeypatch.setitem(STEP_TYPES, Survey.type, Survey())


def field_error(page, field_id):
    return page.locator(f".wf-field:has(#{field_id}) .wf-field-message")


def as_json(page):
    """The config as the form holds it, through the JSON switch (and back to the form)."""
    page.click("#cfg-as-json")
    config = json.loads(page.locator("#cfg-json").input_value())
    page.click("#cfg-as-json")
    return config


def test_every_kind_of_field_keeps_its_json_type(page, superuser, survey):
    workflow = workflow_create(name="Survey", trigger_event="user.signup")
    login(page, "boss")
    open_canvas(page, workflow)
    page.locator(".react-flow__node-trigger").click()
    add(page, "survey")
    page.wait_for_selector('.react-flow__node[data-id="survey-1"]')
    page.wait_for_timeout(250)
    drag_connect(page, "trigger", "next", "survey-1")
    select(page, "survey-1")
    form = page.locator('[data-testid="schema-form"]')
    assert form.locator('label[for="cfg-prop-score"]').inner_text() == "Score *"
    assert form.locator('label[for="cfg-prop-weight"]').inner_text() == "Weight"
    assert "Address" in form.locator("#cfg-prop-address legend").inner_text()
    assert page.locator("#cfg-prop-channel").input_value() != ""  # the schema's default
    assert as_json(page) == {"channel": "email"}

    # Refused by the server: each error under its field, the nested one too.
    page.fill("#cfg-prop-question", "How was it?")
    page.fill("#cfg-prop-score", "11")
    page.fill("#cfg-prop-address-zip", "75001")
    page.click("button.wf-save")
    assert "less than or equal to 10" in field_error(page, "cfg-prop-score").inner_text()
    assert "Field required" in field_error(page, "cfg-prop-address-city").inner_text()
    assert field_error(page, "cfg-prop-question").count() == 0

    page.fill("#cfg-prop-score", "7")
    page.fill("#cfg-prop-weight", "1.5")
    page.select_option("#cfg-prop-channel", label="sms")
    page.click("#cfg-prop-tags .wf-add-row")
    page.click("#cfg-prop-tags .wf-add-row")
    page.locator("#cfg-prop-tags input").nth(0).fill("vip")
    page.locator("#cfg-prop-tags input").nth(1).fill("beta")
    page.check("#cfg-prop-kinds-1")
    page.fill("#cfg-prop-address-city", "Paris")
    page.fill("#cfg-prop-address-zip", "")  # emptied: gone (its default, null, applies)
    page.fill("#cfg-prop-limits", '{"daily": 2}')
    expected = {
        "question": "How was it?",
        "score": 7,
        "weight": 1.5,
        "channel": "sms",
        "tags": ["vip", "beta"],
        "kinds": ["b"],
        "address": {"city": "Paris"},
        "limits": {"daily": 2},
    }
    assert as_json(page) == expected
    screenshot(page, "canvas-schema-form")
    page.click("button.wf-save")
    page.wait_for_selector('[data-testid="notice"]:has-text("Saved.")')
    stored = Step.objects.get(workflow=workflow, key="survey-1").config
    assert stored == expected  # stored as sent (Survey keeps it): the types are the form's
    assert type(stored["score"]) is int and type(stored["weight"]) is float

    # Reloaded: the form shows the stored config; an emptied optional field leaves it.
    page.reload()
    page.wait_for_selector('.react-flow__node[data-id="survey-1"]')
    select(page, "survey-1")
    assert page.locator("#cfg-prop-score").input_value() == "7"
    assert page.locator("#cfg-prop-weight").input_value() == "1.5"
    assert page.locator("#cfg-prop-channel option:checked").inner_text() == "sms"
    assert page.locator("#cfg-prop-tags input").nth(1).input_value() == "beta"
    assert page.locator("#cfg-prop-kinds-1").is_checked()
    assert page.locator("#cfg-prop-address-city").input_value() == "Paris"
    assert json.loads(page.locator("#cfg-prop-limits").input_value()) == {"daily": 2}
    page.fill("#cfg-prop-weight", "")
    page.locator("#cfg-prop-tags .wf-icon").nth(0).click()
    assert as_json(page) == {
        **{k: v for k, v in expected.items() if k != "weight"},
        "tags": ["beta"],
    }
