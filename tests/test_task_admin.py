"""The task queue's admin (django-q2) cannot run code: no schedule can be added or changed, no
stored task resubmitted, queued tasks not touched; records can still be read (and failed ones
deleted). Driven as a superuser, the most a person can be."""

import pytest
from django.test import Client
from django.utils import timezone
from django_q.models import Failure, OrmQ, Schedule, Success, Task

pytestmark = pytest.mark.django_db

SHELL = "subprocess.getoutput"


@pytest.fixture
def boss(django_user_model) -> Client:
    user = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    client = Client()
    client.force_login(user)
    return client


def stored_task(*, success: bool) -> Task:
    now = timezone.now()
    return Task.objects.create(
        id=("a" if success else "f") * 32,
        name="ada-lovelace-one" if success else "bob-failed-one",
        func=SHELL,
        args=("touch /tmp/pwned",),
        kwargs={},
        started=now,
        stopped=now,
        success=success,
    )


def test_it_refuses_to_add_a_schedule(boss):
    assert boss.get("/admin/django_q/schedule/add/").status_code == 403
    response = boss.post(
        "/admin/django_q/schedule/add/",
        {"name": "x", "func": SHELL, "args": "'id'", "schedule_type": "O", "repeats": "-1"},
    )
    assert response.status_code == 403
    assert not Schedule.objects.exists()


def test_it_refuses_to_change_a_schedule(boss):
    schedule = Schedule.objects.create(name="nightly", func="math.floor", args="1")
    page = boss.get(f"/admin/django_q/schedule/{schedule.pk}/change/")
    assert page.status_code == 200  # it can be looked at...
    assert 'name="_save"' not in page.content.decode()  # ...with nothing to save
    response = boss.post(
        f"/admin/django_q/schedule/{schedule.pk}/change/",
        {"name": "nightly", "func": SHELL, "args": "'id'", "schedule_type": "O", "repeats": "-1"},
    )
    assert response.status_code == 403
    schedule.refresh_from_db()
    assert schedule.func == "math.floor"


def test_the_task_lists_still_load(boss):
    stored_task(success=True)
    stored_task(success=False)
    OrmQ.objects.create(key="lifecycle", payload="opaque", lock=timezone.now())
    Schedule.objects.create(name="nightly", func="math.floor")
    for model in ("schedule", "success", "failure", "ormq"):
        page = boss.get(f"/admin/django_q/{model}/")
        assert page.status_code == 200, model
        assert "Resubmit" not in page.content.decode()
    assert boss.get("/admin/django_q/success/add/").status_code == 403
    assert boss.get("/admin/django_q/failure/add/").status_code == 403
    assert boss.get("/admin/django_q/ormq/add/").status_code == 403


def test_it_does_not_resubmit_a_stored_task(boss):
    failed = stored_task(success=False)
    done = stored_task(success=True)
    for model, task in (("failure", failed), ("success", done)):
        boss.post(
            f"/admin/django_q/{model}/",
            {"action": "resubmit_task", "_selected_action": [task.pk]},
        )
    assert not OrmQ.objects.exists()  # nothing was queued to run
    assert Failure.objects.filter(pk=failed.pk).exists()
    assert Success.objects.filter(pk=done.pk).exists()


def test_a_failed_task_record_can_be_deleted_but_a_queued_task_cannot(boss):
    failed = stored_task(success=False)
    boss.post(f"/admin/django_q/failure/{failed.pk}/delete/", {"post": "yes"})
    assert not Failure.objects.filter(pk=failed.pk).exists()
    queued = OrmQ.objects.create(key="lifecycle", payload="opaque", lock=timezone.now())
    assert boss.get(f"/admin/django_q/ormq/{queued.pk}/delete/").status_code == 403
    response = boss.post(f"/admin/django_q/ormq/{queued.pk}/change/", {"key": "x"})
    assert response.status_code == 403
    assert OrmQ.objects.get(pk=queued.pk).key == "lifecycle"
