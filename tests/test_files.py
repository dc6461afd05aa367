"""The workflow file: import/export round trips, all-or-nothing validation, locking, the demo
file and the management commands."""

import io
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.core.management import CommandError, call_command

from templates_app.models import Template
from tests.conftest import chain, drain
from tests.flow import execution_of, track_ok
from workflows_app.files import DocumentError, document_export, document_import
from workflows_app.models import Execution, Step, Transition, Workflow

DEMO = Path(settings.BASE_DIR) / "demo" / "workflows.json"


def demo_document():
    return json.loads(DEMO.read_text())


def export_via_command(*names):
    out = io.StringIO()
    call_command("exportworkflows", *names, stdout=out)
    return json.loads(out.getvalue())


def wipe():
    Workflow.objects.all().delete()
    Template.objects.all().delete()


def valid_document():
    return {
        "templates": [
            {
                "name": "Hello",
                "type": "marketing",
                "subject": "Hi {{ firstName }}",
                "html": "<p>x</p>",
            }
        ],
        "workflows": [
            {
                "name": "Greeter",
                "trigger_event": "user.signup",
                "enabled": True,
                "steps": [
                    {"key": "hello", "type": "send_email", "config": {"template": "Hello"}},
                ],
                "transitions": [{"from": "trigger", "to": "hello"}],
            }
        ],
    }


# --- The demo file ----------------------------------------------------------------------------


def test_the_demo_file_imports_with_the_command(db):
    out = io.StringIO()
    call_command("importworkflows", str(DEMO), stdout=out)
    assert "imported 3 template(s) and 2 workflow(s)" in out.getvalue()

    onboarding = Workflow.objects.get(name="Onboarding")
    assert (onboarding.trigger_event, onboarding.enabled, onboarding.allow_reentry) == (
        "user.signup",
        True,
        False,
    )
    assert Step.objects.filter(workflow=onboarding).count() == 7
    assert Transition.objects.filter(workflow=onboarding).count() == 7
    assert Workflow.objects.get(name="Receipts").allow_reentry is True
    assert set(Template.objects.values_list("name", "type")) == {
        ("Welcome", "marketing"),
        ("Nudge", "marketing"),
        ("Receipt", "transactional"),
    }


def test_the_demo_workflows_run(track, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    document_import(demo_document())
    track_ok(track, data={"firstName": "Ann", "plan": "pro"})
    track_ok(track, event="order.completed", data={"order_id": "A-1", "total": 30})
    drain()

    assert sorted(m.subject for m in mail.outbox) == ["Welcome, Ann", "Your receipt for order A-1"]
    onboarding = execution_of(workflow__name="Onboarding")
    assert (onboarding.status, onboarding.current_step.key) == (Execution.WAITING, "pause")
    assert execution_of(workflow__name="Receipts").status == Execution.COMPLETED


def test_the_exported_demo_matches_the_file(db):
    document_import(demo_document())
    exported = export_via_command()
    source = demo_document()

    assert [t["name"] for t in exported["templates"]] == sorted(
        t["name"] for t in source["templates"]
    )
    by_name = {w["name"]: w for w in exported["workflows"]}
    for workflow in source["workflows"]:
        out = by_name[workflow["name"]]
        for field in ("description", "trigger_event", "allow_reentry", "enabled"):
            assert out[field] == workflow[field]
        assert [(s["key"], s["type"], s["name"], s["config"]) for s in out["steps"]] == [
            (s["key"], s["type"], s.get("name", ""), s["config"]) for s in workflow["steps"]
        ]
        assert sorted((t["from"], t["to"], t["branch"]) for t in out["transitions"]) == sorted(
            (t["from"], t["to"], t.get("branch", "next")) for t in workflow["transitions"]
        )


# --- Round trips ------------------------------------------------------------------------------


def test_export_then_import_into_an_empty_database_is_the_identity(db):
    document_import(demo_document())
    Template.objects.create(
        name="Unused",
        type=Template.TRANSACTIONAL,
        subject="s",
        html="<p>h</p>",
        text="plain",
        from_email="Team <team@example.com>",
        reply_to="help@example.com",
    )
    first = export_via_command()
    wipe()

    document_import(json.loads(json.dumps(first)))  # through JSON, as a file would be
    assert export_via_command() == first


def test_importing_the_export_again_changes_nothing(db):
    document_import(demo_document())
    first = document_export()
    step_ids = dict(Step.objects.values_list("key", "id"))

    assert document_import(first) == {"templates": 3, "workflows": 2}
    assert document_export() == first
    assert dict(Step.objects.values_list("key", "id")) == step_ids  # matched by key, kept


def test_import_updates_templates_and_workflows_by_name(db):
    document_import(demo_document())
    document = document_export(["Receipts"])
    document["templates"][0]["subject"] = "Receipt #{{ event.order_id }}"
    document["workflows"][0]["description"] = "Changed"
    document["workflows"][0]["enabled"] = False
    document_import(document)

    assert Template.objects.get(name="Receipt").subject == "Receipt #{{ event.order_id }}"
    receipts = Workflow.objects.get(name="Receipts")
    assert (receipts.description, receipts.enabled) == ("Changed", False)
    assert Workflow.objects.count() == 2 and Template.objects.count() == 3


def test_export_of_named_workflows_carries_only_their_templates(db):
    document_import(demo_document())
    document = export_via_command("Receipts")
    assert [w["name"] for w in document["workflows"]] == ["Receipts"]
    assert [t["name"] for t in document["templates"]] == ["Receipt"]


# --- All or nothing ---------------------------------------------------------------------------


def test_import_validates_everything_and_changes_nothing_when_a_part_is_invalid(db):
    Template.objects.create(name="Hello", subject="Old", html="<p>old</p>")
    document = valid_document()
    document["templates"][0]["subject"] = "New"
    document["templates"].append(
        {"name": "Broken", "type": "marketing", "subject": "s", "html": "{% if %}"}
    )
    document["workflows"].append(
        {
            "name": "Bad",
            "trigger_event": "user.signup",
            "steps": [
                {"key": "mail", "type": "send_email", "config": {"template": "Missing"}},
                {"key": "island", "type": "exit"},
            ],
            "transitions": [{"from": "trigger", "to": "mail"}],
        }
    )
    document["workflows"].append({"name": "NoTrigger", "steps": [], "transitions": []})

    with pytest.raises(DocumentError) as caught:
        document_import(document)
    errors = caught.value.errors
    text = "\n".join(errors)
    assert "templates[1] (Broken).html" in text
    assert "workflow 'Bad': step 'mail' (config.template): template 'Missing' does not exist" in (
        text
    )
    assert "workflow 'Bad': step 'island': not reachable from the trigger" in text
    assert "workflow 'NoTrigger'.trigger_event: required text" in text
    # Nothing happened, not even the valid parts.
    assert list(Template.objects.values_list("name", "subject")) == [("Hello", "Old")]
    assert not Workflow.objects.exists()


@pytest.mark.parametrize(
    "document, message",
    [
        ([], "the document must be an object"),
        ({"templates": {"name": "T"}, "workflows": []}, "must be lists"),
        ({"templates": {}, "workflows": []}, "must be lists"),
        ({"templates": [], "workflows": [], "extra": 1}, "unknown top-level keys: extra"),
        ({"templates": [{"name": "T", "subject": "s"}]}, "templates[0].html: required text"),
        (
            {"templates": [{"name": "T", "subject": "s", "html": "h", "type": "spam"}]},
            "templates[0].type",
        ),
        (
            {"workflows": [{"name": "W", "trigger_event": "e", "enabled": "yes"}]},
            "workflow 'W'.enabled: true or false",
        ),
        (
            {
                "workflows": [
                    {"name": "W", "trigger_event": "e"},
                    {"name": "W", "trigger_event": "e"},
                ]
            },
            "workflow 'W': appears twice",
        ),
        ({"workflows": [{"name": "W", "trigger_event": "e", "color": 1}]}, "unknown keys color"),
    ],
)
def test_import_rejects_malformed_documents(db, document, message):
    with pytest.raises(DocumentError) as caught:
        document_import(document)
    assert message in str(caught.value)
    assert not Workflow.objects.exists() and not Template.objects.exists()


def test_import_obeys_locking_and_then_changes_nothing(track, make_workflow):
    update = {"key": "a", "type": "update_contact", "config": {"set": {"a": 1}}}
    delay = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}
    make_workflow(*chain(update, delay), name="Busy")
    track_ok(track)
    drain()
    assert execution_of().status == Execution.WAITING
    document = valid_document()
    busy = document_export(["Busy"])["workflows"][0]
    busy["steps"] = busy["steps"][:1]
    busy["transitions"] = busy["transitions"][:1]
    document["workflows"].append(busy)

    with pytest.raises(DocumentError) as caught:
        document_import(document)
    assert "Workflow 'Busy' has 1 active execution(s)" in str(caught.value)
    # The earlier parts of the document were rolled back with it.
    assert not Template.objects.filter(name="Hello").exists()
    assert not Workflow.objects.filter(name="Greeter").exists()
    assert set(Step.objects.values_list("key", flat=True)) == {"a", "pause"}


def test_reimporting_an_unchanged_workflow_is_allowed_while_it_runs(track, make_workflow):
    update = {"key": "a", "type": "update_contact", "config": {"set": {"a": 1}}}
    delay = {"key": "pause", "type": "delay", "config": {"amount": 1, "unit": "days"}}
    make_workflow(*chain(update, delay), name="Busy")
    track_ok(track)
    drain()
    assert execution_of().status == Execution.WAITING
    version = Workflow.objects.get(name="Busy").graph_version
    document = document_export(["Busy"])
    document["workflows"][0]["description"] = "still editable while locked"
    document_import(document)
    busy = Workflow.objects.get(name="Busy")
    assert busy.description == "still editable while locked"
    assert busy.graph_version == version  # the graph itself was not rewritten


# --- The commands -----------------------------------------------------------------------------


def test_importworkflows_reports_every_problem_and_imports_nothing(db, tmp_path):
    document = valid_document()
    document["workflows"][0]["steps"][0]["config"]["template"] = "Nope"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(CommandError) as caught:
        call_command("importworkflows", str(path))
    assert "nothing imported" in str(caught.value)
    assert "template 'Nope' does not exist" in str(caught.value)
    assert not Template.objects.exists()


@pytest.mark.parametrize("content", [None, "{not json"])
def test_importworkflows_refuses_an_unreadable_file(db, tmp_path, content):
    path = tmp_path / "in.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CommandError, match="cannot read"):
        call_command("importworkflows", str(path))


def test_importworkflows_reads_stdin(db, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(json.dumps(valid_document())))
    out = io.StringIO()
    call_command("importworkflows", "-", stdout=out)
    assert "imported 1 template(s) and 1 workflow(s)" in out.getvalue()
    assert Workflow.objects.get().name == "Greeter"


def test_exportworkflows_prints_the_document(db):
    document_import(valid_document())
    assert export_via_command() == document_export()
    assert export_via_command("Greeter")["workflows"][0]["steps"][0]["key"] == "hello"


def test_exportworkflows_refuses_an_unknown_name(db):
    with pytest.raises(CommandError, match="no workflow named 'Nope'"):
        call_command("exportworkflows", "Nope", stdout=io.StringIO())
