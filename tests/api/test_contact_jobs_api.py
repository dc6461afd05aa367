"""Contact CSV import and bulk subscribe / unsubscribe / delete as background jobs:
POST /v1/contacts/import, /v1/contacts/bulk-*, and their status endpoints."""

import json
from datetime import timedelta

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import OperationalError
from django.test import Client
from django.utils import timezone
from django.utils.module_loading import import_string
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.signing import SignedPackage

from contacts_app import jobs
from contacts_app.models import Contact, ContactJob, Event
from contacts_app.services import contact_upsert
from workflows_app.clock import clock_sweep

pytestmark = pytest.mark.django_db

BOM = b"\xef\xbb\xbf"


def auth(key):
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}


def upload(key, content: bytes, *, name="contacts.csv", field="file"):
    return Client().post(
        "/v1/contacts/import",
        {field: SimpleUploadedFile(name, content, content_type="text/csv")},
        **auth(key),
    )


def bulk(key, action, body, *, raw=None):
    return Client().post(
        f"/v1/contacts/bulk-{action}",
        data=raw if raw is not None else json.dumps(body),
        content_type="application/json",
        **auth(key),
    )


def status(key, job_id, *, path="jobs"):
    return Client().get(f"/v1/contacts/{path}/{job_id}", **auth(key))


def job_id_of(response):
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["success"] is True and body["data"]["message"]
    return body["data"]["jobId"]


def drain_queue():
    """Runs what is in django-q2's queue the way a worker does: dequeue, run, acknowledge."""
    broker = get_broker()
    ran = 0
    while OrmQ.objects.exists():
        for ack_id, pack in broker.dequeue() or []:
            task = SignedPackage.loads(pack)
            import_string(task["func"])(*task["args"], **task["kwargs"])
            broker.acknowledge(ack_id)
            ran += 1
        assert ran < 100, "the queue does not drain"
    return ran


def assert_nothing_recorded():
    assert not ContactJob.objects.exists()
    assert not OrmQ.objects.exists()


# --- Import ----------------------------------------------------------------------------------


def test_it_imports_a_csv_creating_and_updating_contacts(secret_key):
    ann, _ = contact_upsert(email="ann@example.com", data={"plan": "free", "city": "Oslo"})
    csv = (
        BOM
        + b"Email,subscribed,plan,firstName\r\nANN@example.com,no,pro,\r\nbob@example.com,,,Bob\r\n"
    )
    job_id = job_id_of(upload(secret_key, csv))

    queued = status(secret_key, job_id, path="import").json()["data"]
    assert queued["state"] == "queued" and queued["progress"] == 0 and queued["total"] == 2
    assert OrmQ.objects.count() == 1  # queued with the job, for the worker
    assert Contact.objects.count() == 1  # nothing happens in the request

    assert jobs.contact_job_run(job_id=job_id) == "completed"
    ann.refresh_from_db()
    assert ann.subscribed is False
    assert ann.data == {"plan": "pro", "city": "Oslo"}  # merged; the empty cell changed nothing
    bob = Contact.objects.get(email="bob@example.com")
    assert bob.subscribed is True and bob.data == {"firstName": "Bob"}
    assert Event.objects.filter(contact=ann, name="contact.unsubscribed").count() == 1

    data = status(secret_key, job_id, path="import").json()["data"]
    assert data["id"] == job_id and data["kind"] == "import"
    assert data["state"] == "completed" and data["progress"] == 100
    assert data["processed"] == 2 and data["failedReason"] is None and data["finishedAt"]
    assert data["result"] == {"created": 1, "updated": 1, "skipped": 0, "failed": 0, "errors": []}
    # The bulk status URL answers for imports too.
    assert status(secret_key, job_id).json()["data"]["state"] == "completed"


def test_bad_rows_are_reported_by_line_and_the_good_rows_still_import(secret_key):
    csv = (
        b"email;subscribed;note\n"  # semicolons, as some spreadsheets export
        b"ann@example.com;true;ok\n"
        b"not-an-address;;x\n"
        b'cy@example.com;maybe;"two\nlines"\n'
        b"dee@example.com;1;a;extra\n"
        b";;orphan\n"
        b";;\n"
        b"\n"
        b"eve@example.com;0;\n"
    )
    job_id = job_id_of(upload(secret_key, csv))
    jobs.contact_job_run(job_id=job_id)
    result = status(secret_key, job_id, path="import").json()["data"]["result"]
    assert result["created"] == 2 and result["failed"] == 4 and result["skipped"] == 1
    errors = {e["line"]: e for e in result["errors"]}
    assert set(errors) == {3, 4, 6, 7}
    assert "email" in errors[3]["message"].lower()
    assert errors[4]["email"] == "cy@example.com" and "maybe" in errors[4]["message"]
    assert "4 cells" in errors[6]["message"]
    assert "email cell is empty" in errors[7]["message"]
    assert set(Contact.objects.values_list("email", "subscribed")) == {
        ("ann@example.com", True),
        ("eve@example.com", False),
    }


def test_errors_are_listed_up_to_a_cap_and_counted_in_full(secret_key):
    csv = "email\n" + "".join(f"bad{i}\n" for i in range(jobs.ERRORS_KEPT + 30))
    job_id = job_id_of(upload(secret_key, csv.encode()))
    jobs.contact_job_run(job_id=job_id)
    result = ContactJob.objects.get(pk=job_id).result
    assert result["failed"] == jobs.ERRORS_KEPT + 30
    assert len(result["errors"]) == jobs.ERRORS_KEPT
    assert result["errors"][0]["line"] == 2


def test_importing_the_same_file_again_skips_unchanged_rows(secret_key):
    csv = b"email,plan\nann@example.com,pro\nbob@example.com,free\n"
    jobs.contact_job_run(job_id=job_id_of(upload(secret_key, csv)))
    before = dict(Contact.objects.values_list("email", "updated_at"))
    again = job_id_of(upload(secret_key, csv))
    jobs.contact_job_run(job_id=again)
    result = ContactJob.objects.get(pk=again).result
    assert (result["created"], result["updated"], result["skipped"]) == (0, 0, 2)
    assert dict(Contact.objects.values_list("email", "updated_at")) == before


def test_reserved_columns_and_oversized_data_are_handled_per_row(secret_key, settings):
    settings.CONTACT_MAX_DATA_BYTES = 200
    csv = f"email,id,unsubscribeUrl,bio\nann@example.com,x,y,short\nbob@example.com,,,{'b' * 300}\n"
    job_id = job_id_of(upload(secret_key, csv.encode()))
    jobs.contact_job_run(job_id=job_id)
    assert Contact.objects.get(email="ann@example.com").data == {"bio": "short"}
    result = ContactJob.objects.get(pk=job_id).result
    assert result["created"] == 1 and result["failed"] == 1
    assert result["errors"][0]["line"] == 3 and "bytes" in result["errors"][0]["message"]
    assert not Contact.objects.filter(email="bob@example.com").exists()


def many_rows(n):
    return ("email,n\n" + "".join(f"c{i}@example.com,{i}\n" for i in range(n))).encode()


def test_a_job_retried_after_a_crash_continues_after_its_last_committed_batch(
    secret_key, monkeypatch
):
    job_id = job_id_of(upload(secret_key, many_rows(250)))
    real = jobs._import_one
    calls = {"n": 0}

    def crash_in_second_batch(row, known):
        calls["n"] += 1
        if calls["n"] == 150:
            raise RuntimeError("worker died")
        return real(row, known)

    monkeypatch.setattr(jobs, "_import_one", crash_in_second_batch)
    assert jobs.contact_job_run(job_id=job_id) == "running"
    job = ContactJob.objects.get(pk=job_id)
    assert job.done == 100 and job.errors_seen == 1  # the second batch was rolled back whole
    assert Contact.objects.count() == 100
    assert status(secret_key, job_id).json()["data"]["failedReason"] is None  # not failed

    monkeypatch.setattr(jobs, "_import_one", real)
    assert jobs.contact_job_run(job_id=job_id) == "completed"
    job.refresh_from_db()
    assert Contact.objects.count() == 250
    assert job.result["created"] == 250 and job.result["updated"] == 0
    # Running a finished job again (a duplicate task) does nothing.
    assert jobs.contact_job_run(job_id=job_id) == "completed"
    job.refresh_from_db()
    assert job.result["created"] == 250 and job.done == 250


def test_a_batch_rolled_back_by_a_deadlock_is_simply_done_again(secret_key, monkeypatch):
    job_id = job_id_of(upload(secret_key, many_rows(150)))
    real = jobs._import_batch
    calls = {"n": 0}

    class Deadlock(Exception):
        sqlstate = "40P01"

    def deadlocked_once(job, reader):
        calls["n"] += 1
        done = real(job, reader)  # the writes happen, then the database aborts the batch
        if calls["n"] == 2:
            raise OperationalError("deadlock detected") from Deadlock()
        return done

    monkeypatch.setattr(jobs, "_import_batch", deadlocked_once)
    assert jobs.contact_job_run(job_id=job_id) == "completed"
    job = ContactJob.objects.get(pk=job_id)
    assert calls["n"] == 3 and job.errors_seen == 0
    assert job.result["created"] == 150 and Contact.objects.count() == 150


def test_a_job_that_keeps_failing_is_failed_with_its_reason(secret_key, monkeypatch):
    job_id = job_id_of(upload(secret_key, many_rows(3)))

    def broken(row, known):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(jobs, "_import_one", broken)
    states = [jobs.contact_job_run(job_id=job_id) for _ in range(jobs.MAX_RUN_ERRORS)]
    assert states == ["running"] * (jobs.MAX_RUN_ERRORS - 1) + ["failed"]
    data = status(secret_key, job_id, path="import").json()["data"]
    assert data["state"] == "failed" and "disk on fire" in data["failedReason"]
    assert data["progress"] == 0 and data["finishedAt"]
    assert not Contact.objects.exists()


def test_a_long_job_hands_over_to_a_continuation_and_a_drain_finishes_it(secret_key):
    job_id = job_id_of(upload(secret_key, many_rows(250)))
    OrmQ.objects.all().delete()
    assert jobs.contact_job_run(job_id=job_id, budget_seconds=0) == "running"
    job = ContactJob.objects.get(pk=job_id)
    assert job.done == 100 and job.progress == 40
    assert OrmQ.objects.count() == 1  # its continuation
    assert drain_queue() == 1  # the continuation finishes within its time
    assert ContactJob.objects.get(pk=job_id).state == "completed"
    assert Contact.objects.count() == 250


def test_the_queued_task_run_by_a_worker_drain_completes_the_import(secret_key):
    job_id = job_id_of(upload(secret_key, b"email\nann@example.com\n"))
    assert drain_queue() == 1
    data = status(secret_key, job_id, path="import").json()["data"]
    assert data["state"] == "completed" and data["result"]["created"] == 1


def test_in_django_q_sync_mode_the_job_has_run_when_the_request_answers(secret_key, monkeypatch):
    monkeypatch.setattr(Conf, "SYNC", True)
    job_id = job_id_of(upload(secret_key, b"email,plan\nann@example.com,pro\n"))
    assert ContactJob.objects.get(pk=job_id).state == "completed"
    assert Contact.objects.get(email="ann@example.com").data == {"plan": "pro"}


def test_the_sweep_queues_again_a_job_whose_task_was_lost(secret_key):
    job_id = job_id_of(upload(secret_key, b"email\nann@example.com\n"))
    done_id = job_id_of(upload(secret_key, b"email\nbob@example.com\n"))
    jobs.contact_job_run(job_id=done_id)
    OrmQ.objects.all().delete()  # the task was lost with its worker
    now = timezone.now()
    assert jobs.contact_jobs_recover(now=now) == 0  # not stalled yet
    later = now + timedelta(seconds=jobs._stall_seconds() + 1)
    clock_sweep(now=later)  # the clock's sweep calls it
    assert OrmQ.objects.count() == 1  # only the unfinished job
    assert jobs.contact_jobs_recover(now=later) == 0  # touched: left alone for a while
    drain_queue()
    assert ContactJob.objects.get(pk=job_id).state == "completed"


def test_a_running_job_without_progress_is_recovered_too(secret_key, monkeypatch):
    job_id = job_id_of(upload(secret_key, b"email\nann@example.com\n"))
    ContactJob.objects.filter(pk=job_id).update(
        state="running", updated_at=timezone.now() - timedelta(hours=1)
    )
    OrmQ.objects.all().delete()
    assert jobs.contact_jobs_recover() == 1
    drain_queue()
    assert ContactJob.objects.get(pk=job_id).state == "completed"


# --- Import: refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "empty"),
        (BOM + b"  \n\n", "empty"),
        (b"email\n\xff\xfeann@example.com\n", "UTF-8"),
        (b"name,plan\nAnn,pro\n", "no `email` column"),
        (b"ann@example.com,pro\nbob@example.com,free\n", "header"),
        (b"email,plan\n", "no rows"),
        (b"email,Email\nann@example.com,x\n", "more than one `email`"),
        (b"email,plan,plan\nann@example.com,a,b\n", "twice"),
        (b'email\nbob@example.com\n"ann@example.com\x00"\n', "NUL character (line 3)"),
    ],
)
def test_an_unusable_file_is_a_400_naming_file(secret_key, content, says):
    response = upload(secret_key, content)
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["statusCode"] == 400 and says in error["fields"]["file"]
    assert error["errors"][0]["field"] == "file"
    assert_nothing_recorded()


def test_a_file_over_5_mb_is_a_413(secret_key):
    content = b"email,pad\n" + b"ann@example.com," + b"x" * (jobs.IMPORT_MAX_BYTES) + b"\n"
    response = upload(secret_key, content)
    assert response.status_code == 413
    assert "5 MB" in response.json()["error"]["fields"]["file"]
    assert_nothing_recorded()


def test_a_file_of_exactly_5_mb_is_accepted(secret_key):
    head = b"email,pad\nann@example.com,"
    content = head + b"x" * (jobs.IMPORT_MAX_BYTES - len(head) - 1) + b"\n"
    assert len(content) == jobs.IMPORT_MAX_BYTES
    job_id = job_id_of(upload(secret_key, content))
    jobs.contact_job_run(job_id=job_id)
    # Its one cell is too large for a contact's data: that row's error, reported by line.
    result = ContactJob.objects.get(pk=job_id).result
    assert result["failed"] == 1 and result["errors"][0]["line"] == 2


def test_a_body_that_is_not_multipart_is_a_400_naming_file(secret_key):
    response = Client().post(
        "/v1/contacts/import",
        data=json.dumps({"file": "email\nann@example.com\n"}),
        content_type="application/json",
        **auth(secret_key),
    )
    assert response.status_code == 400
    assert "multipart/form-data" in response.json()["error"]["fields"]["file"]
    assert_nothing_recorded()


def test_a_missing_file_part_or_a_text_field_is_a_400(secret_key):
    missing = upload(secret_key, b"email\nann@example.com\n", field="csv")
    assert missing.status_code == 400
    assert "No `file` part" in missing.json()["error"]["fields"]["file"]
    text = Client().post(
        "/v1/contacts/import", {"file": "email\nann@example.com\n"}, **auth(secret_key)
    )
    assert text.status_code == 400
    assert "file part" in text.json()["error"]["fields"]["file"]
    assert_nothing_recorded()


def test_a_broken_multipart_body_is_a_400(secret_key):
    response = Client().post(
        "/v1/contacts/import",
        data=b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.csv"\r\n',
        content_type="multipart/form-data; boundary=",
        **auth(secret_key),
    )
    assert response.status_code == 400
    assert "file" in response.json()["error"]["fields"]
    assert_nothing_recorded()


def test_import_needs_a_secret_key(public_key):
    content = b"email\nann@example.com\n"
    assert upload(None, content).status_code == 401
    assert upload("sk_wrong", content).status_code == 401
    refused = upload(public_key, content)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert_nothing_recorded()
    assert not Contact.objects.exists()


# --- Bulk ------------------------------------------------------------------------------------


def people(*emails, subscribed=True):
    return [contact_upsert(email=e, subscribed=subscribed)[0] for e in emails]


def test_bulk_subscribe_by_id_flips_only_real_changes(secret_key):
    (ann,) = people("ann@example.com", subscribed=False)
    (bob,) = people("bob@example.com")
    gone = "00000000-0000-4000-8000-000000000000"
    body = {"mode": "ids", "contactIds": [str(ann.pk), str(bob.pk), gone, str(ann.pk)]}
    job_id = job_id_of(bulk(secret_key, "subscribe", body))
    assert status(secret_key, job_id).json()["data"]["total"] == 3  # duplicates count once
    assert jobs.contact_job_run(job_id=job_id) == "completed"
    assert Contact.objects.filter(subscribed=True).count() == 2
    assert Event.objects.filter(name="contact.subscribed").count() == 1
    result = status(secret_key, job_id).json()["data"]["result"]
    assert result["operation"] == "subscribe" and result["totalRequested"] == 3
    assert (result["successCount"], result["unchangedCount"], result["failureCount"]) == (1, 1, 1)
    assert result["errors"] == [{"contactId": gone, "error": "No contact with this id."}]
    # A duplicate task for the finished job changes nothing and records no second event.
    jobs.contact_job_run(job_id=job_id)
    assert Event.objects.filter(name="contact.subscribed").count() == 1


def test_bulk_unsubscribe_by_query_uses_the_filter_and_exclusions(secret_key):
    ann, bob, cy = people("ann@acme.com", "bob@acme.com", "cy@acme.com")
    people("dee@other.com")
    body = {
        "mode": "query",
        "filter": {"search": " ACME.com ", "subscribed": True},
        "excludeIds": [str(bob.pk)],
    }
    job_id = job_id_of(bulk(secret_key, "unsubscribe", body))
    jobs.contact_job_run(job_id=job_id)
    assert set(Contact.objects.filter(subscribed=False).values_list("email", flat=True)) == {
        "ann@acme.com",
        "cy@acme.com",
    }
    assert Event.objects.filter(name="contact.unsubscribed").count() == 2
    data = status(secret_key, job_id).json()["data"]
    assert data["kind"] == "unsubscribe" and data["total"] == 2 and data["progress"] == 100


def test_bulk_delete_by_query_erases_every_match_across_batches(secret_key):
    for i in range(jobs.BATCH_SIZE + 20):
        contact_upsert(email=f"p{i}@example.com")
    (keep,) = people("keep@other.com")
    Event.objects.create(contact=Contact.objects.get(email="p0@example.com"), name="x")
    job_id = job_id_of(
        bulk(secret_key, "delete", {"mode": "query", "filter": {"search": "@example"}})
    )
    assert jobs.contact_job_run(job_id=job_id) == "completed"
    assert list(Contact.objects.values_list("email", flat=True)) == ["keep@other.com"]
    assert not Event.objects.filter(name="x").exists()
    result = ContactJob.objects.get(pk=job_id).result
    assert result["successCount"] == jobs.BATCH_SIZE + 20


def test_bulk_delete_by_id_cancels_runs_through_the_privacy_erase(secret_key, make_workflow):
    from workflows_app.models import Execution
    from workflows_app.track import track_internal

    make_workflow(
        [{"key": "wait", "type": "delay", "config": {"amount": 1, "unit": "days"}}],
        [{"from": "trigger", "to": "wait"}],
    )
    (ann,) = people("ann@example.com")
    track_internal(contact_id=ann.pk, name="user.signup", data={}, now=timezone.now())
    from tests.conftest import drain

    drain()
    assert Execution.objects.filter(contact=ann, status="WAITING").exists()
    job_id = job_id_of(bulk(secret_key, "delete", {"mode": "ids", "contactIds": [str(ann.pk)]}))
    jobs.contact_job_run(job_id=job_id)
    assert not Contact.objects.exists() and not Execution.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "mode"),
        ({"mode": "all"}, "mode"),
        ({"mode": "ids"}, "contactIds"),
        ({"mode": "ids", "contactIds": []}, "contactIds"),
        (
            {"mode": "ids", "contactIds": ["00000000-0000-4000-8000-000000000000", "x"]},
            "contactIds.1",
        ),
        ({"mode": "ids", "contactIds": "00000000-0000-4000-8000-000000000000"}, "contactIds"),
        ({"mode": "query", "filter": {"subscribed": "perhaps"}}, "filter.subscribed"),
        ({"mode": "query", "filter": {"search": "a\x00b"}}, "filter.search"),
        ({"mode": "query", "filter": []}, "filter"),
        ({"mode": "query", "excludeIds": ["nope"]}, "excludeIds.0"),
    ],
)
def test_a_bad_bulk_request_is_a_400_naming_the_field(secret_key, body, field):
    people("ann@example.com")
    response = bulk(secret_key, "subscribe", body)
    assert response.status_code == 400, response.content
    fields = response.json()["error"]["fields"]
    assert any(name == field or name.startswith(f"{field}.non_field") for name in fields)
    assert_nothing_recorded()


def test_more_than_10000_ids_is_a_400(secret_key):
    ids = [f"00000000-0000-4000-8000-{i:012d}" for i in range(jobs.BULK_MAX_IDS + 1)]
    response = bulk(secret_key, "delete", {"mode": "ids", "contactIds": ids})
    assert response.status_code == 400
    assert "contactIds" in response.json()["error"]["fields"]
    assert_nothing_recorded()


def test_a_bulk_body_that_is_not_json_is_a_400(secret_key):
    response = bulk(secret_key, "unsubscribe", None, raw="{mode:")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_json"
    assert_nothing_recorded()


def test_an_oversized_bulk_body_is_a_413(secret_key, settings):
    raw = json.dumps(
        {"mode": "query", "filter": {"search": "x" * settings.DATA_UPLOAD_MAX_MEMORY_SIZE}}
    )
    response = bulk(secret_key, "subscribe", None, raw=raw)
    assert response.status_code == 413
    assert_nothing_recorded()


@pytest.mark.parametrize("action", ["subscribe", "unsubscribe", "delete"])
def test_bulk_needs_a_secret_key(public_key, action):
    (ann,) = people("ann@example.com")
    body = {"mode": "ids", "contactIds": [str(ann.pk)]}
    assert bulk(None, action, body).status_code == 401
    assert bulk("sk_wrong", action, body).status_code == 401
    assert bulk(public_key, action, body).status_code == 403
    assert_nothing_recorded()
    assert Contact.objects.filter(subscribed=True).count() == 1


# --- Status ----------------------------------------------------------------------------------


def test_an_unknown_job_is_a_404(secret_key):
    (ann,) = people("ann@example.com")
    bulk_id = job_id_of(bulk(secret_key, "subscribe", {"mode": "ids", "contactIds": [str(ann.pk)]}))
    for path, job_id in [
        ("jobs", "00000000-0000-4000-8000-000000000000"),
        ("jobs", "not-a-uuid"),
        ("jobs", "x" * 100),
        ("import", "00000000-0000-4000-8000-000000000000"),
        ("import", bulk_id),  # a bulk job is not an import
    ]:
        response = status(secret_key, job_id, path=path)
        assert response.status_code == 404, (path, job_id)
        assert response.json()["error"]["code"] == "not_found"
    assert status(secret_key, bulk_id).status_code == 200


def test_status_needs_a_secret_key(secret_key, public_key):
    job_id = job_id_of(upload(secret_key, b"email\nann@example.com\n"))
    for path in ("jobs", "import"):
        assert status(None, job_id, path=path).status_code == 401
        assert status("sk_wrong", job_id, path=path).status_code == 401
        assert status(public_key, job_id, path=path).status_code == 403
