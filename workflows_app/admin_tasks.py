"""The task queue's admin (django-q2), read-only.

django-q2's own admin lets a user who may add schedules (any superuser) schedule any importable
function with any arguments - `subprocess.getoutput` included - and "resubmit" stored tasks,
which runs whatever function a row names. Our periodic work is code (the clock), not rows, so
here nothing can create a schedule or change what a task runs: schedules, queued, successful
and failed tasks can be looked at, and records deleted (except queued tasks, which are work
still to do), nothing else.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success

from config.broker import broker_is_database, queue_depth


class ReadOnlyMixin:
    actions: list = []  # django-q2's "resubmit" re-runs the function a row names

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


class ScheduleAdmin(ReadOnlyMixin, q_admin.ScheduleAdmin):
    """Deleting a schedule only stops it; nothing here can start one."""


class SuccessAdmin(ReadOnlyMixin, q_admin.TaskAdmin):
    pass


class FailureAdmin(ReadOnlyMixin, q_admin.FailAdmin):
    pass


class QueueAdmin(ReadOnlyMixin, q_admin.QueueAdmin):
    def has_delete_permission(self, request, obj=None) -> bool:
        return False  # a queued task is an execution's next step

    def get_queryset(self, request):
        if broker_is_database():
            return super().get_queryset(request)
        return OrmQ.objects.none()  # rows left from before the switch are no one's queue

    def changelist_view(self, request, extra_context=None):
        # On Redis (Q_BROKER_URL) the queue is not in this table: an empty list would say
        # "nothing queued" whatever the truth, so the page says where the queue is and its depth.
        if not broker_is_database():
            try:
                depth = f"{queue_depth()} task(s) waiting for a worker"
            except Exception as exc:  # noqa: BLE001 - the page still loads, saying why
                depth = f"its depth is unknown: Redis did not answer ({exc.__class__.__name__})"
            messages.info(
                request,
                f"Tasks are queued in Redis (Q_BROKER_URL), not in the database, so they are not "
                f"listed here: {depth}.",
            )
        return super().changelist_view(request, extra_context)


for model, model_admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),
):
    # Importing django_q.admin above registered its own classes (OrmQ only on the database
    # broker); each is replaced. The queue's page is there on Redis too, saying where it is.
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
