"""The task queue's admin (django-q2), read-only.

django-q2's own admin lets a user who may add schedules (any superuser) schedule any importable
function with any arguments - `subprocess.getoutput` included - and "resubmit" stored tasks,
which runs whatever function a row names. Our periodic work is code (the clock), not rows, so
here nothing can create a schedule or change what a task runs: schedules, queued, successful
and failed tasks can be looked at, and records deleted (except queued tasks, which are work
still to do), nothing else.
"""

from __future__ import annotations

from django.contrib import admin
from django_q import admin as q_admin
from django_q.models import Failure, OrmQ, Schedule, Success


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


for model, model_admin in (
    (Schedule, ScheduleAdmin),
    (Success, SuccessAdmin),
    (Failure, FailureAdmin),
    (OrmQ, QueueAdmin),
):
    # Importing django_q.admin above registered its own classes (OrmQ only on the database
    # broker); each is replaced, none is added.
    if admin.site.is_registered(model):
        admin.site.unregister(model)
        admin.site.register(model, model_admin)
