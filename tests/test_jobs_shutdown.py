"""A worker asked to stop (config/shutdown.py, set by `manage.py qcluster` on SIGTERM or SIGINT)
ends a contact job after the batch in hand and an API send's delivery after the email in hand,
and gives the rest back at once: a task in the queue for the next worker, nothing to wait for
(CONTACT_JOB_STALL_SECONDS, QUEUED_RETRY_SECONDS), nothing done twice. The engine's runs:
tests/test_engine_shutdown.py; real processes and signals: tests/e2e/test_shutdown.py."""

import pytest
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.brokers import get_broker
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from contacts_app import jobs
from contacts_app.models import ApiKey, Contact, ContactJob
from contacts_app.services import apikey_create
from templates_app import sending
from templates_app.models import Message
from workflows_app import shutdown

pytestmark = pytest.mark.django_db

ROWS = 250  # three batches of jobs.BATCH_SIZE


@pytest.fixture(autouse=True)
def _fresh_flag():
    shutdown.reset()
    yield
    shutdown.reset()


def queued_tasks() -> list[tuple[str, list]]:
    """(function, args) of every task waiting in django-q2's queue, oldest first."""
    return [(t.task["func"], list(t.task["args"])) for t in OrmQ.objects.order_by("id")]


def worker_takes_everything() -> None:
    """What a worker does to the tasks it has taken: gone from the queue, acknowledged."""
    OrmQ.objects.all().delete()


def run_queue() -> int:
    """Runs what is in the queue as a worker does (dequeue, run, acknowledge); how many ran."""
    broker = get_broker()
    ran = 0
    while OrmQ.objects.exists():
        for ack_id, pack in broker.dequeue() or []:
            task = SignedPackage.loads(pack)
            import_string(task["func"])(*task["args"], **task["kwargs"])
            broker.acknowledge(ack_id)
            ran += 1
        assert ran < 50, "the queue does not drain"
    return ran


def import_job(rows: int) -> ContactJob:
    content = "email,firstName\n" + "".join(f"c{i}@example.com,N{i}\n" for i in range(rows))
    job = jobs.contact_import_start(content=content.encode(), filename="people.csv", by="test")
    worker_takes_everything()
    return job


# --- Contact jobs ----------------------------------------------------------------------------


def test_a_stop_ends_the_job_after_its_batch_and_the_next_worker_goes_on_at_once(monkeypatch):
    job = import_job(ROWS)
    batch = jobs._import_batch

    def batch_then_stop(job, reader):
        finished = batch(job, reader)
        shutdown.request()  # the signal lands while the first batch is being written
        return finished

    monkeypatch.setattr(jobs, "_import_batch", batch_then_stop)
    assert jobs.contact_job_run(job_id=job.pk) == ContactJob.RUNNING

    job.refresh_from_db()
    assert (job.state, job.done) == (ContactJob.RUNNING, jobs.BATCH_SIZE)  # its batch, committed
    assert Contact.objects.count() == jobs.BATCH_SIZE
    # Its continuation is queued now: no stall (CONTACT_JOB_STALL_SECONDS) to wait for.
    assert queued_tasks() == [(jobs.TASK, [str(job.pk)])]
    assert jobs.contact_jobs_recover(now=timezone.now()) == 0  # and the sweep has nothing to add

    shutdown.reset()  # the next worker
    monkeypatch.setattr(jobs, "_import_batch", batch)
    assert run_queue() == 1
    job.refresh_from_db()
    assert (job.state, job.done) == (ContactJob.COMPLETED, ROWS)
    # Every row once: none lost, none applied twice.
    assert job.result == {"created": ROWS, "updated": 0, "skipped": 0, "failed": 0, "errors": []}
    assert Contact.objects.count() == ROWS
    assert Contact.objects.get(email="c249@example.com").data == {"firstName": "N249"}


def test_a_job_task_taken_but_not_begun_is_queued_again_untouched():
    job = import_job(ROWS)
    shutdown.request()
    assert jobs.contact_job_run(job_id=job.pk) == ContactJob.QUEUED

    job.refresh_from_db()
    assert (job.state, job.done) == (ContactJob.QUEUED, 0)
    assert not Contact.objects.exists()
    assert queued_tasks() == [(jobs.TASK, [str(job.pk)])]

    shutdown.reset()
    run_queue()
    job.refresh_from_db()
    assert (job.state, job.done, Contact.objects.count()) == (ContactJob.COMPLETED, ROWS, ROWS)


def test_a_finished_job_is_not_queued_again_by_a_stopping_worker():
    job = import_job(3)
    assert jobs.contact_job_run(job_id=job.pk) == ContactJob.COMPLETED
    worker_takes_everything()
    shutdown.request()  # a duplicate task of the finished job reaches a stopping worker
    assert jobs.contact_job_run(job_id=job.pk) == ContactJob.COMPLETED
    assert queued_tasks() == []


# --- API sends -------------------------------------------------------------------------------


def queued_send(count: int, django_capture_on_commit_callbacks) -> list[int]:
    _, raw = apikey_create(name="sender", kind=ApiKey.SECRET)
    request = sending.SendRequest(
        recipients=[sending.Recipient(f"r{i}@example.com") for i in range(count)],
        subject="Your receipt",
        body="<p>Thanks</p>",
    )
    key = ApiKey.objects.get(name="sender")
    with django_capture_on_commit_callbacks(execute=True):
        outcomes, _ = sending.send_create(api_key_id=key.pk, request=request)
    worker_takes_everything()
    return [o.message_id for o in outcomes]


def test_a_stop_ends_delivery_after_the_email_in_hand_and_queues_the_rest_at_once(
    monkeypatch, mailoutbox, django_capture_on_commit_callbacks
):
    ids = queued_send(5, django_capture_on_commit_callbacks)
    deliver = sending.message_deliver_queued

    def deliver_then_stop(*, message_id):
        message = deliver(message_id=message_id)
        if message_id == ids[1]:
            shutdown.request()  # the signal lands while the second email is being sent
        return message

    monkeypatch.setattr(sending, "message_deliver_queued", deliver_then_stop)
    assert sending.messages_deliver(ids) == 2

    assert [m.to for m in mailoutbox] == [["r0@example.com"], ["r1@example.com"]]
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["sent"] * 2 + ["queued"] * 3
    assert set(Message.objects.filter(pk__in=ids[2:]).values_list("attempts", flat=True)) == {0}
    # The rest are queued again now, in order: no QUEUED_RETRY_SECONDS to wait for.
    assert queued_tasks() == [("templates_app.tasks.deliver_messages", [ids[2:]])]

    shutdown.reset()  # the next worker; the first task comes back too (redelivered)
    monkeypatch.setattr(sending, "message_deliver_queued", deliver)
    assert run_queue() == 1
    assert sending.messages_deliver(ids) == 0
    assert sorted(m.to[0] for m in mailoutbox) == [f"r{i}@example.com" for i in range(5)]
    assert set(Message.objects.filter(pk__in=ids).values_list("status", flat=True)) == {"sent"}


def test_a_delivery_task_taken_but_not_begun_sends_nothing_and_is_queued_again(
    mailoutbox, django_capture_on_commit_callbacks
):
    ids = queued_send(3, django_capture_on_commit_callbacks)
    Message.objects.filter(pk=ids[0]).update(status=Message.SENT)  # sent by another task
    shutdown.request()
    assert sending.messages_deliver(ids) == 0
    assert mailoutbox == []
    assert queued_tasks() == [("templates_app.tasks.deliver_messages", [ids[1:]])]
    assert set(Message.objects.filter(pk__in=ids[1:]).values_list("attempts", flat=True)) == {0}

    shutdown.reset()
    run_queue()
    assert sorted(m.to[0] for m in mailoutbox) == ["r1@example.com", "r2@example.com"]
