"""The workflows API's JSON shapes (camelCase, as Plunk's). Requests are parsed here; what a
graph may hold is the graph service's to judge (workflows_app.graph), so graph documents pass
through as JSON and come back with its errors."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from templates_app.policy import validate_frequency_cap_override
from workflows_app.graph import MAX_POSITION, MAX_STEPS, workflow_active_count
from workflows_app.models import Workflow, step_type_choices

STEP_TYPE_CHOICES = step_type_choices()  # named StepTypeEnum in the schema (settings)

BRANCH_HELP = (
    "next (default), yes / no (Condition), event / timeout (Wait for Event), or a multi-branch "
    "Condition's branch id / default."
)


# --- graph documents (the workflow file format's steps and transitions) -----------------------


class PositionSerializer(serializers.Serializer):
    x = serializers.FloatField(min_value=-MAX_POSITION, max_value=MAX_POSITION)
    y = serializers.FloatField(min_value=-MAX_POSITION, max_value=MAX_POSITION)


class GraphStepSerializer(serializers.Serializer):
    key = serializers.SlugField(max_length=64, help_text="Stable id of the step (a slug).")
    type = serializers.ChoiceField(choices=STEP_TYPE_CHOICES)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    config = serializers.DictField(
        required=False, help_text="The type's config (docs/workflow-format.md)."
    )
    position = PositionSerializer(required=False)


GraphTransitionSerializer = type(
    "GraphTransitionSerializer",
    (serializers.Serializer,),
    {
        "from": serializers.CharField(max_length=64, help_text='A step key or "trigger".'),
        "to": serializers.CharField(max_length=64, help_text="A step key."),
        "branch": serializers.CharField(max_length=64, required=False, help_text=BRANCH_HELP),
    },
)


class GraphDocumentSerializer(serializers.Serializer):
    steps = GraphStepSerializer(many=True, max_length=MAX_STEPS)  # type: ignore[call-arg]  # DRF takes it (ListSerializer); the stubs do not say so
    transitions = GraphTransitionSerializer(many=True, max_length=MAX_STEPS * 4)


@extend_schema_field(GraphDocumentSerializer)
class GraphField(serializers.JSONField):
    """A graph document, passed as it is to the graph service, which reports every problem by
    step and field (documented as the file format's shape)."""


class GraphReplySerializer(serializers.Serializer):
    version = serializers.IntegerField(
        help_text="The graph's version: send it back with PUT so no one's save is lost."
    )
    graph = GraphDocumentSerializer()


class GraphPutSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=0,
        max_value=2**31 - 1,
        help_text="The version the graph was read at (GET .../graph); a stale one is a 409.",
    )
    graph = GraphField()


# --- workflows --------------------------------------------------------------------------------

FREQUENCY_CAP_HELP = (
    "The send policy's cap on this workflow's marketing mail: at most N emails per contact in "
    "any rolling period, counting every workflow's, e.g. 3/7d (units s, m, h, d, w). Empty: "
    "the MARKETING_FREQUENCY_CAP setting; none: no cap."
)


class WorkflowSerializer(serializers.ModelSerializer):
    triggerType = serializers.ChoiceField(source="trigger_type", choices=["event", "manual"])
    eventName = serializers.SerializerMethodField(
        help_text="The event that starts it; null for a manual trigger."
    )
    allowReentry = serializers.BooleanField(source="allow_reentry")
    frequencyCap = serializers.CharField(source="frequency_cap", help_text=FREQUENCY_CAP_HELP)
    graphVersion = serializers.IntegerField(source="graph_version")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")
    activeExecutions = serializers.SerializerMethodField(
        help_text="Runs now running or waiting (while any are, steps and transitions are locked)."
    )

    class Meta:
        model = Workflow
        fields = [
            "id",
            "name",
            "description",
            "triggerType",
            "eventName",
            "enabled",
            "allowReentry",
            "frequencyCap",
            "graphVersion",
            "createdAt",
            "updatedAt",
            "activeExecutions",
        ]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_eventName(self, workflow: Workflow) -> str | None:  # noqa: N802 - the JSON name
        return workflow.trigger_event or None

    def get_activeExecutions(self, workflow: Workflow) -> int:  # noqa: N802 - the JSON name
        annotated = getattr(workflow, "active_executions", None)
        return annotated if annotated is not None else workflow_active_count(workflow)


class WorkflowPageSerializer(serializers.Serializer):
    """GET /v1/workflows: Plunk's page shape."""

    success = serializers.BooleanField()
    data = WorkflowSerializer(many=True)  # type: ignore[assignment]  # a field named data
    total = serializers.IntegerField(min_value=0)
    page = serializers.IntegerField(min_value=1)
    pageSize = serializers.IntegerField(min_value=1)
    totalPages = serializers.IntegerField(min_value=0)


class WorkflowCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    eventName = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        help_text="Required for an event trigger, absent for a manual one. Fixed once created.",
    )
    triggerType = serializers.ChoiceField(
        choices=["event", "manual"],
        default="event",
        help_text="event: a tracked event starts runs; manual: only the API (POST "
        ".../executions) and the admin do. Fixed once created.",
    )
    description = serializers.CharField(
        max_length=10_000, required=False, allow_blank=True, default=""
    )
    enabled = serializers.BooleanField(default=False)
    allowReentry = serializers.BooleanField(default=False)
    frequencyCap = serializers.CharField(
        max_length=20,
        required=False,
        allow_blank=True,
        default="",
        validators=[validate_frequency_cap_override],
        help_text=FREQUENCY_CAP_HELP,
    )
    graph = GraphField(
        required=False, help_text="The whole graph; it must be complete (every step reachable)."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        event = attrs.get("eventName", "")
        if attrs["triggerType"] == Workflow.EVENT and not event:
            raise serializers.ValidationError(
                {"eventName": "An event trigger needs the event's name."}
            )
        if attrs["triggerType"] == Workflow.MANUAL and event:
            raise serializers.ValidationError(
                {"eventName": "A manual workflow has no trigger event; leave eventName out."}
            )
        return attrs


class WorkflowUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(max_length=10_000, required=False, allow_blank=True)
    enabled = serializers.BooleanField(
        required=False, help_text="Enabling needs a complete, valid graph."
    )
    allowReentry = serializers.BooleanField(required=False)
    frequencyCap = serializers.CharField(
        max_length=20,
        required=False,
        allow_blank=True,
        validators=[validate_frequency_cap_override],
        help_text=FREQUENCY_CAP_HELP,
    )
    eventName = serializers.CharField(
        max_length=255,
        required=False,
        allow_blank=True,
        allow_null=True,
        help_text="Fixed once created: accepted only unchanged (null for a manual trigger).",
    )
    triggerType = serializers.ChoiceField(
        choices=["event", "manual"],
        required=False,
        help_text="Fixed once created: accepted only unchanged.",
    )


# --- steps and transitions, one at a time -----------------------------------------------------


class StepSerializer(serializers.Serializer):
    id = serializers.CharField(help_text="The step's key (the id the other endpoints take).")
    key = serializers.CharField()
    type = serializers.ChoiceField(choices=STEP_TYPE_CHOICES)
    name = serializers.CharField(allow_blank=True)
    config = serializers.DictField()
    position = PositionSerializer()
    templateId = serializers.IntegerField(
        allow_null=True, help_text="The template a Send Email step sends."
    )


class StepWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    position = PositionSerializer(required=False)
    config = serializers.DictField(required=False, help_text="Replaces the step's config.")
    templateId = serializers.IntegerField(
        min_value=1,
        max_value=2**31 - 1,
        required=False,
        help_text="For a Send Email step: the template to send (else config.template, by name).",
    )


class StepCreateSerializer(StepWriteSerializer):
    type = serializers.ChoiceField(choices=STEP_TYPE_CHOICES)
    key = serializers.CharField(
        max_length=64,
        required=False,
        help_text="A slug, unique in the workflow; default: made from the name or the type.",
    )


class StepInsertSerializer(StepCreateSerializer):
    branch = serializers.CharField(
        max_length=64,
        required=False,
        help_text="Which branch of the new step leads on to the transition's old target "
        "(default next, or the type's first branch).",
    )


class TransitionSerializer(serializers.Serializer):
    id = serializers.CharField(help_text='"<fromStepId>:<branch>", e.g. "trigger:next".')
    fromStepId = serializers.CharField()
    toStepId = serializers.CharField()
    branch = serializers.CharField()


class TransitionConditionSerializer(serializers.Serializer):
    branch = serializers.CharField(max_length=64, help_text="yes / no, or a branch id.")


class TransitionCreateSerializer(serializers.Serializer):
    fromStepId = serializers.CharField(max_length=64, help_text='A step key, or "trigger".')
    toStepId = serializers.CharField(max_length=64)
    branch = serializers.CharField(max_length=64, required=False, help_text=BRANCH_HELP)
    condition = TransitionConditionSerializer(
        required=False, help_text="Plunk's way to name a Condition's branch."
    )
    waitOutcome = serializers.ChoiceField(
        choices=["EVENT", "TIMEOUT"],
        required=False,
        help_text="Plunk's way to name a Wait for Event's branch.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = {
            name: value
            for name, value in (
                ("branch", attrs.get("branch")),
                ("condition", (attrs.get("condition") or {}).get("branch")),
                ("waitOutcome", (attrs.get("waitOutcome") or "").lower() or None),
            )
            if value
        }
        if len(set(given.values())) > 1:
            raise serializers.ValidationError(
                {name: "These name different branches; give one." for name in given}
            )
        attrs["resolved_branch"] = next(iter(given.values()), "next")
        return attrs
