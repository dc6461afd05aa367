"""The send policy for marketing mail (templates_app/policy.py): the frequency cap across all
workflows and quiet hours in the contact's time zone, at their edges, through the real ledger
and the real engine."""

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import connection, connections, transaction
from django.urls import reverse

from contacts_app.models import Contact
from templates_app.models import Message, Template
from templates_app.policy import (
    FrequencyCapped,
    frequency_cap_check,
    frequency_cap_exceeded,
    frequency_cap_for,
    parse_frequency_cap,
    parse_quiet_hours,
    quiet_until,
)
from templates_app.services import message_send
from tests.conftest import chain, drain
from tests.flow import T0, execution_of, history, track_ok
from tests.test_settings import load_settings
from workflows_app import engine
from workflows_app.files import document_export, document_import
from workflows_app.models import Execution, StepRun
from workflows_app.services import workflow_create, workflow_update

LEASE = timedelta(seconds=300)


@pytest.fixture(autouse=True)
def _test_settings(settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    settings.ENGINE_LEASE_SECONDS = int(LEASE.total_seconds())
    settings.MARKETING_FREQUENCY_CAP = ""
    settings.QUIET_HOURS = ""
    settings.DEFAULT_TIMEZONE = "UTC"


def utc(*args):
    return datetime(*args, tzinfo=UTC)


def send(key, template="News"):
    return {"key": key, "type": "send_email", "config": {"template": template}}


def tag(key="tag"):
    return {"key": key, "type": "update_contact", "config": {"set": {key: True}}}


@pytest.fixture
def news(db):
    return Template.objects.create(
        name="News", type=Template.MARKETING, subject="News", html="<p>News</p>"
    )


@pytest.fixture
def receipt(db):
    return Template.objects.create(
        name="Receipt", type=Template.TRANSACTIONAL, subject="Receipt", html="<p>Thanks</p>"
    )


@pytest.fixture
def ann(db):
    return Contact.objects.create(email="ann@example.com")


_sent = 0


def ledger_send(contact, template, cap="3/7d"):
    """One send through the ledger with the cap a workflow would pass."""
    global _sent
    _sent += 1
    return message_send(
        idempotency_key=f"test-{_sent}",
        template=template,
        contact=contact,
        frequency_cap=parse_frequency_cap(cap),
    )


# --- Settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "limit", "window"),
    [
        ("3/7d", 3, timedelta(days=7)),
        (" 1/12h ", 1, timedelta(hours=12)),
        ("5/1w", 5, timedelta(weeks=1)),
        ("2/30m", 2, timedelta(minutes=30)),
        ("1/45s", 1, timedelta(seconds=45)),
    ],
)
def test_it_reads_a_frequency_cap(text, limit, window):
    cap = parse_frequency_cap(text)
    assert cap is not None and (cap.limit, cap.window) == (limit, window)


@pytest.mark.parametrize(
    "text", ["3", "3/7", "3/7y", "0/7d", "3/0d", "-1/7d", "3/400d", "three/7d", "3 / 7d", "3/7D"]
)
def test_it_refuses_a_bad_frequency_cap(text):
    with pytest.raises(ValueError, match="3/7d|at least 1|at most"):
        parse_frequency_cap(text)


@pytest.mark.parametrize("text", ["21:00", "21-08", "24:00-08:00", "21:60-08:00", "9:00-17:00"])
def test_it_refuses_bad_quiet_hours(text):
    with pytest.raises(ValueError, match="HH:MM-HH:MM"):
        parse_quiet_hours(text)


def test_quiet_hours_that_start_where_they_end_are_refused():
    with pytest.raises(ValueError, match="must differ"):
        parse_quiet_hours("08:00-08:00")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("MARKETING_FREQUENCY_CAP", "3/7x", "MARKETING_FREQUENCY_CAP: '3/7x' is not a frequency"),
        ("QUIET_HOURS", "21:00-25:00", "QUIET_HOURS: '21:00-25:00' is not a window"),
        ("DEFAULT_TIMEZONE", "Mars/Olympus", "DEFAULT_TIMEZONE: 'Mars/Olympus' is not an IANA"),
    ],
)
def test_a_bad_setting_stops_the_start_up_naming_it(name, value, message):
    result = load_settings(DEBUG="true", **{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_good_settings_start():
    result = load_settings(
        DEBUG="true",
        MARKETING_FREQUENCY_CAP="3/7d",
        QUIET_HOURS="21:00-08:00",
        DEFAULT_TIMEZONE="Europe/Paris",
    )
    assert result.returncode == 0, result.stderr


# --- Quiet hours ------------------------------------------------------------------------------


def person(timezone=None):
    return Contact(email="p@example.com", data={} if timezone is None else {"timezone": timezone})


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (utc(2030, 1, 7, 20, 59), None),  # a minute before
        (utc(2030, 1, 7, 21, 0), utc(2030, 1, 8, 8, 0)),  # its first minute: to tomorrow
        (utc(2030, 1, 7, 23, 59), utc(2030, 1, 8, 8, 0)),
        (utc(2030, 1, 8, 0, 0), utc(2030, 1, 8, 8, 0)),  # past midnight: to this morning
        (utc(2030, 1, 8, 7, 59), utc(2030, 1, 8, 8, 0)),  # its last minute
        (utc(2030, 1, 8, 8, 0), None),  # open again
        (utc(2030, 1, 8, 12, 0), None),
    ],
)
def test_quiet_hours_across_midnight_at_their_edges(settings, now, until):
    settings.QUIET_HOURS = "21:00-08:00"
    assert quiet_until(person(), now) == until


@pytest.mark.parametrize(
    ("now", "until"),
    [
        (utc(2030, 1, 7, 11, 59), None),
        (utc(2030, 1, 7, 12, 0), utc(2030, 1, 7, 14, 0)),
        (utc(2030, 1, 7, 13, 59), utc(2030, 1, 7, 14, 0)),
        (utc(2030, 1, 7, 14, 0), None),
    ],
)
def test_quiet_hours_within_a_day(settings, now, until):
    settings.QUIET_HOURS = "12:00-14:00"
    assert quiet_until(person(), now) == until


def test_no_quiet_hours_never_hold(settings):
    settings.QUIET_HOURS = ""
    assert quiet_until(person(), utc(2030, 1, 7, 3, 0)) is None


def test_quiet_hours_are_read_in_the_contacts_time_zone(settings):
    settings.QUIET_HOURS = "21:00-08:00"
    # 22:00 UTC is 17:00 in New York (not quiet) and 23:00 in Paris (quiet until 08:00 Paris).
    now = utc(2030, 1, 7, 22, 0)
    assert quiet_until(person("America/New_York"), now) is None
    assert quiet_until(person("Europe/Paris"), now) == utc(2030, 1, 8, 7, 0)
    # 03:00 UTC is 22:00 in New York: quiet until 08:00 there, 13:00 UTC.
    assert quiet_until(person("America/New_York"), utc(2030, 1, 8, 3, 0)) == utc(2030, 1, 8, 13)


def test_without_a_valid_time_zone_the_default_one_applies(settings):
    settings.QUIET_HOURS = "21:00-08:00"
    settings.DEFAULT_TIMEZONE = "Asia/Tokyo"  # UTC+9, no daylight saving
    now = utc(2030, 1, 7, 13, 0)  # 22:00 in Tokyo, 13:00 in UTC
    for zone in (None, "Mars/Olympus", "America", "../../etc/passwd", 42, "", "x" * 300) + (
        "localtime",  # in the tz database, but the server's own zone, not a place's
        "posixrules",
        "right/UTC",
    ):
        assert quiet_until(person(zone), now) == utc(2030, 1, 7, 23, 0), zone
    assert quiet_until(person("UTC"), now) is None


def test_quiet_hours_follow_the_clock_on_daylight_saving_days(settings):
    settings.QUIET_HOURS = "21:00-08:00"
    paris = person("Europe/Paris")
    # Spring (2030-03-31, 02:00 CET -> 03:00 CEST): 08:00 that morning is 06:00 UTC, not 07:00.
    assert quiet_until(paris, utc(2030, 3, 30, 22, 0)) == utc(2030, 3, 31, 6, 0)
    # Autumn (2030-10-27, 03:00 CEST -> 02:00 CET): 08:00 that morning is 07:00 UTC.
    assert quiet_until(paris, utc(2030, 10, 26, 21, 0)) == utc(2030, 10, 27, 7, 0)
    # The window starts at 21:00 on the wall clock on either side of a change.
    assert quiet_until(paris, utc(2030, 3, 31, 18, 59)) is None  # 20:59 CEST
    assert quiet_until(paris, utc(2030, 3, 31, 19, 0)) == utc(2030, 4, 1, 6, 0)  # 21:00 CEST


def test_an_end_the_clocks_skip_opens_at_the_jump(settings):
    # 02:30 does not exist in Paris on 2030-03-31: the clocks go from 02:00 to 03:00 CEST.
    settings.QUIET_HOURS = "00:00-02:30"
    paris = person("Europe/Paris")
    assert quiet_until(paris, utc(2030, 3, 31, 0, 30)) == utc(2030, 3, 31, 1, 0)  # 03:00 CEST
    assert quiet_until(paris, utc(2030, 3, 31, 1, 0)) is None


def test_an_end_the_clocks_pass_twice_opens_the_first_time_or_the_second(settings):
    # 02:30 happens twice in Paris on 2030-10-27: at 00:30 UTC (CEST) and 01:30 UTC (CET).
    settings.QUIET_HOURS = "22:00-02:30"
    paris = person("Europe/Paris")
    assert quiet_until(paris, utc(2030, 10, 26, 23, 0)) == utc(2030, 10, 27, 0, 30)
    assert quiet_until(paris, utc(2030, 10, 27, 0, 30)) is None  # 02:30 CEST: open
    # 02:10 CET, after the clocks went back: quiet again until the second 02:30.
    assert quiet_until(paris, utc(2030, 10, 27, 1, 10)) == utc(2030, 10, 27, 1, 30)


# --- The frequency cap through the ledger -----------------------------------------------------


def test_the_cap_lets_exactly_its_number_through_and_stops_the_next(ann, news):
    for _ in range(3):
        ledger_send(ann, news, "3/7d")
    with pytest.raises(FrequencyCapped, match=r"3 marketing emails .* last 7 days \(cap 3/7d\)"):
        ledger_send(ann, news, "3/7d")
    assert Message.objects.count() == 3  # the capped one left no ledger row
    assert len(mail.outbox) == 3


def test_the_window_rolls(ann, news):
    with time_machine.travel(T0, tick=False) as traveller:
        for day in range(3):
            traveller.move_to(T0 + timedelta(days=day))
            ledger_send(ann, news, "3/7d")
        # One second before the first send is 7 days old, it still counts.
        traveller.move_to(T0 + timedelta(days=7) - timedelta(seconds=1))
        with pytest.raises(FrequencyCapped):
            ledger_send(ann, news, "3/7d")
        # Exactly 7 days after it, it does not: "any rolling 7 days" ends there.
        traveller.move_to(T0 + timedelta(days=7))
        ledger_send(ann, news, "3/7d")
        with pytest.raises(FrequencyCapped):
            ledger_send(ann, news, "3/7d")
    assert Message.objects.count() == 4


def test_transactional_mail_is_never_capped_and_never_counts(ann, news, receipt):
    for _ in range(3):
        ledger_send(ann, receipt, "1/1d")
    ledger_send(ann, news, "1/1d")  # the receipts did not count
    ledger_send(ann, receipt, "1/1d")  # and the cap, now reached, does not stop a receipt
    with pytest.raises(FrequencyCapped):
        ledger_send(ann, news, "1/1d")
    assert Message.objects.filter(template=receipt).count() == 4


def test_a_send_counts_as_what_it_was_sent_as_whatever_becomes_of_its_template(ann, news, receipt):
    ledger_send(ann, news, "1/7d")
    ledger_send(ann, receipt, "1/7d")
    # News becomes transactional and the receipt marketing: what went out stays as it went.
    Template.objects.filter(pk=news.pk).update(type=Template.TRANSACTIONAL)
    Template.objects.filter(pk=receipt.pk).update(type=Template.MARKETING)
    news.refresh_from_db()
    with pytest.raises(FrequencyCapped):  # still one marketing email (News) this week
        ledger_send(ann, receipt.__class__.objects.get(pk=receipt.pk), "1/7d")
    Template.objects.filter(pk=news.pk).delete()  # the ledger keeps the row, without template
    assert frequency_cap_exceeded(
        contact=ann, cap=parse_frequency_cap("1/7d"), now=datetime.now(UTC)
    ), "a deleted template's sends still count"


def test_what_counts_toward_the_cap(ann, news, receipt):
    cap = parse_frequency_cap("1/1d")
    now = datetime.now(UTC)

    def exceeded():
        return frequency_cap_exceeded(contact=ann, cap=cap, now=now)

    # Not counted: a failed send, mail to another address (a CUSTOM recipient), a transactional
    # API send.
    common = {"contact": ann, "from_email": "x@example.com", "subject": "s"}
    Message.objects.create(
        idempotency_key="failed", template=news, to_email=ann.email, status="failed", **common
    )
    Message.objects.create(
        idempotency_key="team", template=news, to_email="team@example.com", status="sent", **common
    )
    Message.objects.create(
        idempotency_key="api-tx",
        source=Message.API,
        email_type=Template.TRANSACTIONAL,
        to_email=ann.email,
        status="sent",
        **common,
    )
    assert exceeded() is None
    # Counted: a marketing API send (POST /v1/send), even while it is still queued.
    Message.objects.create(
        idempotency_key="api-mk",
        source=Message.API,
        email_type=Template.MARKETING,
        to_email=ann.email,
        status="queued",
        **common,
    )
    assert exceeded() == (
        "frequency cap: 1 marketing email to this contact in the last 1 day (cap 1/1d)"
    )


def test_no_cap_means_no_check(ann, news):
    for _ in range(5):
        message_send(idempotency_key=f"free-{_}", template=news, contact=ann)
    assert Message.objects.count() == 5


def test_a_workflow_cap_overrides_the_setting(settings):
    settings.MARKETING_FREQUENCY_CAP = "3/7d"
    assert frequency_cap_for("").text == "3/7d"
    assert frequency_cap_for("1/1d").text == "1/1d"
    assert frequency_cap_for("none") is None
    assert frequency_cap_for(" None ") is None
    settings.MARKETING_FREQUENCY_CAP = ""
    assert frequency_cap_for("") is None


# --- Concurrency: two sends to one contact at the same moment ----------------------------------


def _in_thread(target, results, name):
    def run():
        try:
            results[name] = target()
        except Exception as exc:  # noqa: BLE001 - the test reads what happened
            results[name] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _lock_waits() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0]


@pytest.mark.django_db(transaction=True)
def test_a_send_waits_for_the_one_holding_the_contact_and_then_counts_it(pg_only):
    contact = Contact.objects.create(email="ann@example.com")
    news = Template.objects.create(name="News", subject="News", html="<p>x</p>")
    cap = parse_frequency_cap("1/1d")
    holding, release = threading.Event(), threading.Event()

    def first():
        # What message_send does, stopped between the checked insert and its commit.
        with transaction.atomic():
            frequency_cap_check(contact=contact, cap=cap, now=datetime.now(UTC))
            Message.objects.create(
                idempotency_key="first",
                contact=contact,
                template=news,
                to_email=contact.email,
                from_email="x@example.com",
                subject="News",
                status=Message.SENDING,
            )
            holding.set()
            release.wait(timeout=30)
        return "inserted"

    results: dict = {}
    a = _in_thread(first, results, "first")
    assert holding.wait(timeout=30)
    b = _in_thread(
        lambda: message_send(
            idempotency_key="second", template=news, contact=contact, frequency_cap=cap
        ),
        results,
        "second",
    )
    # Until the second send either ends or waits on a lock in the database (seen by PostgreSQL,
    # not guessed from timing): it must be the latter.
    deadline = time.monotonic() + 30
    while b.is_alive() and not _lock_waits() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert b.is_alive() and _lock_waits(), f"the second send did not wait: {results}"
    release.set()
    a.join(timeout=30)
    b.join(timeout=30)
    assert results["first"] == "inserted"
    assert isinstance(results["second"], FrequencyCapped), results
    assert list(Message.objects.values_list("idempotency_key", flat=True)) == ["first"]
    assert mail.outbox == []


@pytest.mark.django_db(transaction=True)
def test_two_workflows_sending_at_once_never_both_pass_a_cap_of_one(pg_only):
    contact = Contact.objects.create(email="ann@example.com")
    news = Template.objects.create(name="News", subject="News", html="<p>x</p>")
    cap = parse_frequency_cap("1/1d")
    for round_ in range(8):
        Message.objects.all().delete()
        start = threading.Barrier(2)

        def sender(name, round_=round_, start=start):
            def go():
                start.wait(timeout=30)
                return message_send(
                    idempotency_key=f"{name}-{round_}",
                    template=news,
                    contact=contact,
                    frequency_cap=cap,
                )

            return go

        results: dict = {}
        threads = [_in_thread(sender(n), results, n) for n in ("a", "b")]
        for thread in threads:
            thread.join(timeout=30)
        capped = [r for r in results.values() if isinstance(r, FrequencyCapped)]
        assert (Message.objects.count(), len(capped)) == (1, 1), results


# --- In workflows, through the engine ---------------------------------------------------------


def test_a_send_over_the_cap_is_skipped_with_the_reason_and_the_run_goes_on(
    settings, track, news, receipt
):
    settings.MARKETING_FREQUENCY_CAP = "1/7d"
    workflow_create(
        name="Welcome",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": [send("welcome")], "transitions": [{"from": "trigger", "to": "welcome"}]},
    )
    steps, transitions = chain(send("tips"), send("receipt", "Receipt"), tag())
    workflow_create(
        name="Tips",
        trigger_event="user.active",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )
    with time_machine.travel(T0, tick=False):
        track_ok(track, "user.signup")
        drain(now=T0)
        track_ok(track, "user.active")
        drain(now=T0)

    run = execution_of(workflow__name="Tips")
    assert run.status == Execution.COMPLETED
    assert history(run) == [
        ("tips", StepRun.SKIPPED, "next"),
        ("receipt", StepRun.COMPLETED, "next"),
        ("tag", StepRun.COMPLETED, "next"),
    ]
    tips = run.step_runs.get(step_key="tips")
    assert tips.output == {
        "skipped": "frequency cap: 1 marketing email to this contact in the last 7 days (cap 1/7d)",
        "reason": "frequency cap",
    }
    assert tips.message is None
    assert [m.subject for m in mail.outbox] == ["News", "Receipt"]


def test_a_workflows_own_cap_and_no_cap(settings, track, news):
    settings.MARKETING_FREQUENCY_CAP = "1/7d"
    steps, transitions = chain(send("one"), send("two"), send("three"))
    free = workflow_create(
        name="Free",
        trigger_event="user.signup",
        enabled=True,
        frequency_cap="none",
        graph={"steps": steps, "transitions": transitions},
    )
    with time_machine.travel(T0, tick=False):
        track_ok(track, "user.signup")
        drain(now=T0)
    assert [r[1] for r in history(execution_of(workflow=free))] == [StepRun.COMPLETED] * 3

    # Its own cap, counting the three sent by the other workflow: 5 in 7 days lets 2 more go.
    steps, transitions = chain(send("a"), send("b"), send("c"))
    own = workflow_create(
        name="Own",
        trigger_event="user.active",
        enabled=True,
        frequency_cap="5/7d",
        graph={"steps": steps, "transitions": transitions},
    )
    with time_machine.travel(T0 + timedelta(hours=1), tick=False):
        track_ok(track, "user.active")
        drain(now=T0 + timedelta(hours=1))
    assert [r[1] for r in history(execution_of(workflow=own))] == [
        StepRun.COMPLETED,
        StepRun.COMPLETED,
        StepRun.SKIPPED,
    ]
    assert len(mail.outbox) == 5


def test_the_workflow_cap_is_validated_on_every_path(db, admin_client):
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError, match="not a frequency cap"):
        workflow_create(name="Bad", trigger_event="x", frequency_cap="3 a week")
    workflow = workflow_create(name="Good", trigger_event="x", frequency_cap="NONE")
    assert workflow.frequency_cap == "none"
    with pytest.raises(ValidationError):
        workflow_update(workflow=workflow, frequency_cap="0/1d")

    # The admin: a form error on the field, nothing saved.
    url = reverse("admin:workflows_app_workflow_change", args=[workflow.pk])
    page = admin_client.post(
        url,
        {"name": "Good", "description": "", "frequency_cap": "3/7y", "allow_reentry": ""},
    )
    assert page.status_code == 200
    assert "is not a frequency cap" in page.context["adminform"].form.errors["frequency_cap"][0]
    workflow.refresh_from_db()
    assert workflow.frequency_cap == "none"
    page = admin_client.post(url, {"name": "Good", "description": "", "frequency_cap": "2/1d"})
    assert page.status_code == 302
    workflow.refresh_from_db()
    assert workflow.frequency_cap == "2/1d"


def test_the_workflow_cap_in_files_and_the_api(db, secret_key, client):
    document = {
        "templates": [],
        "workflows": [
            {"name": "Capped", "trigger_event": "x", "frequency_cap": "2/1d", "steps": []},
            {"name": "Plain", "trigger_event": "y", "steps": []},
        ],
    }
    document_import(document)
    exported = {w["name"]: w for w in document_export()["workflows"]}
    assert exported["Capped"]["frequency_cap"] == "2/1d"
    assert "frequency_cap" not in exported["Plain"]  # empty: the setting's, as if absent
    bad = {"workflows": [{"name": "Bad", "trigger_event": "z", "frequency_cap": "lots"}]}
    from workflows_app.files import DocumentError

    with pytest.raises(DocumentError, match=r"workflow 'Bad'.frequency_cap: 'lots' is not"):
        document_import(bad)

    auth = {"HTTP_AUTHORIZATION": f"Bearer {secret_key}"}
    reply = client.post(
        "/v1/workflows",
        {"name": "Api", "eventName": "z", "frequencyCap": "1/12h"},
        content_type="application/json",
        **auth,
    )
    assert reply.status_code == 201, reply.content
    assert reply.json()["data"]["frequencyCap"] == "1/12h"
    workflow_id = reply.json()["data"]["id"]
    reply = client.patch(
        f"/v1/workflows/{workflow_id}",
        {"frequencyCap": "12 per hour"},
        content_type="application/json",
        **auth,
    )
    assert reply.status_code == 400
    assert "frequencyCap" in str(reply.json())
    reply = client.patch(
        f"/v1/workflows/{workflow_id}",
        {"frequencyCap": "none"},
        content_type="application/json",
        **auth,
    )
    assert reply.status_code == 200 and reply.json()["data"]["frequencyCap"] == "none"


# --- Quiet hours in the engine ----------------------------------------------------------------

NIGHT = utc(2030, 1, 7, 22, 0)  # inside 21:00-08:00 UTC
MORNING = utc(2030, 1, 8, 8, 0)


@pytest.fixture
def night_workflow(settings, news, receipt):
    settings.QUIET_HOURS = "21:00-08:00"
    steps, transitions = chain(send("receipt", "Receipt"), send("news"), tag())
    return workflow_create(
        name="Night",
        trigger_event="user.signup",
        enabled=True,
        graph={"steps": steps, "transitions": transitions},
    )


def test_a_marketing_send_in_quiet_hours_waits_then_the_same_visit_sends(
    track, night_workflow, admin_client
):
    with time_machine.travel(NIGHT, tick=False) as traveller:
        track_ok(track)
        drain(now=NIGHT)
        run = execution_of()
        # The receipt (transactional) went; the news waits for the morning.
        assert [m.subject for m in mail.outbox] == ["Receipt"]
        assert (run.status, run.current_step.key, run.wake_at) == (
            Execution.WAITING,
            "news",
            MORNING,
        )
        held = run.step_runs.get(step_key="news")
        assert (held.status, held.attempts, held.message) == (StepRun.STARTED, 0, None)
        assert held.output == {"held_for": "quiet hours", "held_until": MORNING.isoformat()}

    # The execution page says why it waits (read in real time: the admin's session is).
    page = admin_client.get(
        reverse("admin:workflows_app_workflow_execution", args=[night_workflow.pk, run.pk])
    )
    assert page.status_code == 200
    text = page.content.decode()
    assert "Waiting for</dt><dd>quiet hours (held) until 2030-01-08 08:00:00" in text
    assert "held_for" in text

    with time_machine.travel(MORNING - timedelta(minutes=1), tick=False) as traveller:
        # A minute before the window opens nothing is due.
        traveller.move_to(MORNING - timedelta(minutes=1))
        assert engine.executions_claim_due(now=MORNING - timedelta(minutes=1), limit=10) == []

        traveller.move_to(MORNING)
        drain(now=MORNING)

    run.refresh_from_db()
    assert run.status == Execution.COMPLETED
    assert [m.subject for m in mail.outbox] == ["Receipt", "News"]
    assert history(run) == [
        ("receipt", StepRun.COMPLETED, "next"),
        ("news", StepRun.COMPLETED, "next"),  # one visit: held, then sent
        ("tag", StepRun.COMPLETED, "next"),
    ]
    sent = run.step_runs.get(step_key="news")
    assert sent.pk == held.pk and sent.attempts == 1  # the hold spent no attempt
    assert sent.message.sent_at == MORNING
    assert sent.output["held_for"] == "quiet hours"
    assert sent.output["message_id"] == sent.message.pk


def test_a_send_held_past_the_cap_is_skipped_when_the_window_opens(
    settings, track, night_workflow, news
):
    settings.MARKETING_FREQUENCY_CAP = "1/1d"
    with time_machine.travel(NIGHT, tick=False) as traveller:
        track_ok(track)
        drain(now=NIGHT)
        # Meanwhile, at 07:00, another marketing email reached Ann.
        traveller.move_to(MORNING - timedelta(hours=1))
        ledger_send(Contact.objects.get(), news, "1/1d")
        traveller.move_to(MORNING)
        drain(now=MORNING)
    run = execution_of()
    assert run.status == Execution.COMPLETED
    skipped = run.step_runs.get(step_key="news")
    assert skipped.status == StepRun.SKIPPED
    assert skipped.output["reason"] == "frequency cap"
    assert skipped.output["held_for"] == "quiet hours"


def test_quiet_hours_do_not_hold_transactional_mail_or_unsubscribed_contacts(track, night_workflow):
    with time_machine.travel(NIGHT, tick=False):
        track_ok(track, subscribed=False)
        drain(now=NIGHT)
    run = execution_of()
    # The receipt went; the news was skipped at once (unsubscribed), not held till morning.
    assert run.status == Execution.COMPLETED
    assert [m.subject for m in mail.outbox] == ["Receipt"]
    assert run.step_runs.get(step_key="news").status == StepRun.SKIPPED


def test_a_held_run_can_be_cancelled_like_any_waiting_run(track, night_workflow):
    with time_machine.travel(NIGHT, tick=False) as traveller:
        track_ok(track)
        drain(now=NIGHT)
        run = execution_of()
        assert engine.execution_cancel(execution=run, by="ops")
        traveller.move_to(MORNING)
        drain(now=MORNING)
    run.refresh_from_db()
    assert run.status == Execution.CANCELLED
    assert run.step_runs.get(step_key="news").status == StepRun.CANCELLED
    assert [m.subject for m in mail.outbox] == ["Receipt"]


def test_the_contacts_time_zone_decides_in_the_engine(track, night_workflow):
    # 22:00 UTC is 17:00 in New York: sent at once.
    with time_machine.travel(NIGHT, tick=False):
        track_ok(track, data={"timezone": "America/New_York"})
        drain(now=NIGHT)
    assert execution_of().status == Execution.COMPLETED
    assert [m.subject for m in mail.outbox] == ["Receipt", "News"]
