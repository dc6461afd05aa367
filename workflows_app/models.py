import secrets
import sys
from datetime import datetime

from django.db import models
from django.db.models import Q
from django.utils import timezone

from contacts_app.models import Contact, Event
from templates_app.models import Message, Template
from templates_app.policy import validate_frequency_cap_override

MAX_FLOAT = sys.float_info.max


def step_type_choices() -> list[tuple[str, str]]:
    # Imported when asked, not at import time: step modules import these models.
    from workflows_app.steps import STEP_TYPES

    return [(name, kind.label) for name, kind in STEP_TYPES.items()]


def new_signing_secret() -> str:
    # Standard Webhooks secrets are "whsec_" + base64 of 24-64 random bytes.
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Workflow(models.Model):
    EVENT = "event"
    MANUAL = "manual"
    TRIGGER_TYPE_CHOICES = [
        (EVENT, "Event (a tracked event starts it)"),
        (MANUAL, "Manual (started for chosen contacts, by the API or the admin)"),
    ]

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    trigger_type = models.CharField(
        max_length=10,
        choices=TRIGGER_TYPE_CHOICES,
        default=EVENT,
        help_text="Fixed once created.",
    )
    trigger_event = models.CharField(
        max_length=255,
        blank=True,
        help_text="The tracked event that starts this workflow (empty for a manual trigger). "
        "Fixed once created.",
    )
    allow_reentry = models.BooleanField(
        default=False,
        help_text="Off: a contact enters at most once, ever. "
        "On: again after the previous run ended.",
    )
    # The send policy's frequency cap for this workflow's marketing mail (templates_app.policy).
    frequency_cap = models.CharField(
        max_length=20,
        blank=True,
        validators=[validate_frequency_cap_override],
        help_text="At most this many marketing emails per contact in any rolling period, "
        "counting every workflow's, e.g. 3/7d (units s, m, h, d, w). Empty: the "
        "MARKETING_FREQUENCY_CAP setting; none: no cap for this workflow's sends.",
    )
    enabled = models.BooleanField(default=False, help_text="Disabling stops new executions only.")
    # Bumped by the database (triggers) on every change of a step or transition, however it is
    # made, so a worker's in-memory copy of the graph and an editor's open copy know they are
    # stale.
    graph_version = models.PositiveIntegerField(default=0, editable=False)
    # Who saved the graph last, and when: what a person whose save lost a race is told.
    graph_saved_by = models.CharField(max_length=150, blank=True, editable=False)
    graph_saved_at = models.DateTimeField(null=True, blank=True, editable=False)
    signing_secret = models.CharField(max_length=100, default=new_signing_secret, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(
                fields=["trigger_event"], condition=Q(enabled=True), name="workflow_enabled_trigger"
            )
        ]
        constraints = [
            # An event trigger names its event; a manual one has none.
            models.CheckConstraint(
                condition=(Q(trigger_type="event") & ~Q(trigger_event=""))
                | Q(trigger_type="manual", trigger_event=""),
                name="workflow_trigger_matches_type",
            )
        ]
        permissions = [("cancel_execution", "Can cancel executions")]

    def __str__(self) -> str:
        return self.name


class Step(models.Model):
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="steps")
    key = models.SlugField(max_length=64, help_text="Stable id of the step within its workflow.")
    type = models.CharField(max_length=32, choices=step_type_choices)
    name = models.CharField(max_length=200, blank=True)
    # The stored config; a template reference is not in it but in `template` (by key), so
    # renaming a template is safe. Documents (files, canvas) name the template instead.
    config = models.JSONField(default=dict, blank=True)
    template = models.ForeignKey(
        Template, null=True, blank=True, on_delete=models.PROTECT, related_name="steps"
    )
    position_x = models.FloatField(default=0)
    position_y = models.FloatField(default=0)

    class Meta:
        ordering = ["workflow", "id"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "key"], name="step_key_unique"),
            # Finite positions only: JSON has no Infinity or NaN, so one stored would break
            # the canvas. Bounded by the largest float, as NaN and infinities are not within
            # it (PostgreSQL orders NaN above every number; SQLite stores NaN as NULL).
            models.CheckConstraint(
                condition=Q(
                    position_x__gte=-MAX_FLOAT,
                    position_x__lte=MAX_FLOAT,
                    position_y__gte=-MAX_FLOAT,
                    position_y__lte=MAX_FLOAT,
                ),
                name="step_position_finite",
            ),
        ]

    def __str__(self) -> str:
        # Names its workflow: this is what "the template is used by ..." lists.
        return f"{self.workflow.name}: {self.name or self.key}"


class Transition(models.Model):
    """An edge; `from_step` empty means the edge leaves the trigger (the entry step)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="transitions")
    from_step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.CASCADE, related_name="outgoing"
    )
    to_step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="incoming")
    # Up to 64 characters: a multi-branch Condition names its branches (Plunk ids).
    branch = models.CharField(max_length=64, default="next")

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["from_step", "branch"],
                condition=Q(from_step__isnull=False),
                name="transition_one_per_branch",
            ),
            models.UniqueConstraint(
                fields=["workflow"],
                condition=Q(from_step__isnull=True),
                name="transition_one_entry",
            ),
        ]

    def __str__(self) -> str:
        source = self.from_step.key if self.from_step else "trigger"
        return f"{source} -[{self.branch}]-> {self.to_step.key}"


class Execution(models.Model):
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    EXITED = "EXITED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    STATUS_CHOICES = [
        (s, s.capitalize()) for s in (RUNNING, WAITING, COMPLETED, EXITED, FAILED, CANCELLED)
    ]
    ACTIVE = (RUNNING, WAITING)

    id = models.BigAutoField(primary_key=True)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="executions")
    trigger = models.ForeignKey(
        Event,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The tracked event that started this run.",
    )
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=RUNNING)
    # The step being run, or where the run waits; empty while the run is still at the trigger.
    current_step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # The branch out of current_step that is decided but not yet followed (e.g. "timeout").
    pending_branch = models.CharField(max_length=64, blank=True)
    context = models.JSONField(default=dict, blank=True)
    # When the clock should hand this run to a worker: now for fresh or resumed runs, the timer
    # for a Delay or a Wait for Event timeout. Empty while a worker holds it or nothing is due.
    wake_at = models.DateTimeField(null=True, blank=True)
    waiting_for = models.CharField(max_length=255, blank=True)
    wait_started_at = models.DateTimeField(null=True, blank=True)
    # Until when the worker that claimed it may hold it; past that, the sweep re-queues it.
    lease_until = models.DateTimeField(null=True, blank=True)
    exit_reason = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Set on runs of workflows without re-entry: the database then refuses a second entry.
    once = models.BooleanField(default=False)
    version = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "contact"],
                condition=Q(status__in=["RUNNING", "WAITING"]),
                name="execution_one_active_per_contact",
            ),
            models.UniqueConstraint(
                fields=["workflow", "contact"], condition=Q(once=True), name="execution_enter_once"
            ),
        ]
        indexes = [
            models.Index(
                fields=["wake_at"], condition=Q(wake_at__isnull=False), name="execution_due"
            ),
            models.Index(
                fields=["contact", "waiting_for"],
                condition=Q(status="WAITING"),
                name="execution_waiting_for",
            ),
            models.Index(
                fields=["lease_until"],
                condition=Q(status="RUNNING"),
                name="execution_running_lease",
            ),
            models.Index(
                fields=["workflow", "status", "-started_at"], name="execution_by_workflow"
            ),
            models.Index(fields=["contact", "-started_at"], name="execution_by_contact"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.workflow_id}/{self.contact_id} {self.status}"

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE


class StepRun(models.Model):
    """One visit of a step by an execution: the history ops read."""

    STARTED = "started"
    COMPLETED = "completed"
    WAITING = "waiting"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"
    STATUS_CHOICES = [
        (s, s.capitalize()) for s in (STARTED, COMPLETED, WAITING, SKIPPED, FAILED, CANCELLED)
    ]

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="step_runs")
    step = models.ForeignKey(
        Step, null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )
    # Copies, so the history still reads right after the graph is edited.
    step_key = models.CharField(max_length=64)
    step_type = models.CharField(max_length=32)
    status = models.CharField(max_length=10, choices=STATUS_CHOICES, default=STARTED)
    branch = models.CharField(max_length=64, blank=True)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveIntegerField(default=0)
    message = models.ForeignKey(
        Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["execution", "id"]
        indexes = [models.Index(fields=["step", "status"], name="steprun_by_step")]

    def __str__(self) -> str:
        return f"{self.step_key}: {self.status}"


class ProcessHeartbeat(models.Model):
    """A worker (`manage.py qcluster`) or clock process that says it is alive: it writes its row
    every HEARTBEAT_SECONDS and deletes it on a clean stop, so a row that stops moving is a
    process that died (workflows_app/heartbeats.py says when it counts as late or dead)."""

    WORKER = "worker"
    CLOCK = "clock"
    KIND_CHOICES = [(WORKER, "Worker"), (CLOCK, "Clock")]

    # One per process start (host and pid alone repeat: every container's first process is 1).
    key = models.CharField(max_length=32, unique=True)
    kind = models.CharField(max_length=10, choices=KIND_CHOICES)
    host = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    name = models.CharField(max_length=100, blank=True, help_text="The cluster's name.")
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)
    # The process's own HEARTBEAT_SECONDS: its lateness is judged by the pace it promised.
    interval_seconds = models.PositiveIntegerField()

    # Late after this many intervals without a heartbeat (one missed, or a slow iteration),
    # presumed dead after this many (three missed).
    LATE_AFTER_INTERVALS = 2
    DEAD_AFTER_INTERVALS = 4

    class Meta:
        ordering = ["kind", "host", "pid"]
        verbose_name_plural = "system"  # the admin's System page lists these rows
        # Only the System page's own permission: rows are written by the processes themselves.
        default_permissions = ()
        permissions = [("view_system", "Can view the System page (processes and backlog)")]

    def __str__(self) -> str:
        return f"{self.kind} {self.host}:{self.pid}"

    def health(self, now: datetime) -> str:
        """Whether the process is "ok", "late" or "dead", by the time since its last heartbeat."""
        silent = (now - self.last_seen).total_seconds()
        if silent > self.DEAD_AFTER_INTERVALS * self.interval_seconds:
            return "dead"
        if silent > self.LATE_AFTER_INTERVALS * self.interval_seconds:
            return "late"
        return "ok"
