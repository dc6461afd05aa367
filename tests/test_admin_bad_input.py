"""Malformed query parameters in the admin are a 400 with a reason, never a 500: Executions-tab
cursors and searches, and the Execution and Contact list searches (PostgreSQL text cannot hold
NUL, so it must not reach a query)."""

from datetime import timedelta

import pytest
from django.urls import reverse

from tests.canvas_data import workflow_with_waiting_runs

pytestmark = pytest.mark.django_db


@pytest.fixture
def workflow(db):
    return workflow_with_waiting_runs(emails=["ann@example.com"])


def executions_url(workflow):
    return reverse("admin:workflows_app_workflow_executions", args=[workflow.pk])


@pytest.mark.parametrize(
    "query",
    [
        "before=2024-13-01T00:00:00_1",  # month 13: parse_datetime raises
        "after=2024-02-30T00:00:00%2B00:00_1",  # no such day
        "before=yesterday_1",
        "before=2024-01-01T00:00:00%2B00:00_x",
        "before=2024-01-01T00:00:00%2B00:00_%C2%B2",  # a digit to str.isdigit, not to int()
        "after=2024-01-01T00:00:00%2B00:00_99999999999999999999999",  # past bigint
        # Offsets Python takes whose moment, in UTC, leaves datetime's years 1-9999.
        "before=9999-12-31T23:59:59-23:59_1",
        "after=9999-12-31T23:59:59-23:59_1",
        "before=0001-01-01T00:00:00%2B23:59_1",
        "after=2024-01-01T00:00:00%2B24:00_1",  # past any offset datetime takes
    ],
)
def test_the_executions_tab_answers_400_to_a_malformed_parameter(admin_client, workflow, query):
    response = admin_client.get(f"{executions_url(workflow)}?{query}")
    assert response.status_code == 400
    html = response.content.decode()
    assert 'id="wf-bad-request"' in html
    assert executions_url(workflow) in html  # a way back


@pytest.mark.parametrize("param", ["before", "after"])
@pytest.mark.parametrize(
    "offset",
    ["-23:59", "%2B23:59", "%2B16:00", "-16:00", "%2B15:59"],  # PostgreSQL takes up to 15:59
)
def test_a_cursor_with_any_offset_python_takes_is_read_as_its_moment(
    admin_client, workflow, param, offset
):
    url = executions_url(workflow)
    (execution,) = (row["execution"] for row in admin_client.get(url).context["rows"])
    before = param == "before"
    # Midnight with that offset, on the day after (before=) or before (after=) the run's start:
    # the run is on the page either way, whatever the offset.
    day = execution.started_at.date() + (timedelta(days=2) if before else timedelta(days=-2))
    response = admin_client.get(f"{url}?{param}={day.isoformat()}T00:00:00{offset}_1")
    assert response.status_code == 200
    assert [row["execution"] for row in response.context["rows"]] == [execution]


@pytest.mark.parametrize("query", ["before=2024-01-01T00:00:00%00_1", "q=%00", "q=ann%00@x.com"])
def test_the_executions_tab_answers_400_to_nul(admin_client, workflow, query):
    response = admin_client.get(f"{executions_url(workflow)}?{query}")
    assert response.status_code == 400 and "NUL character" in response.content.decode()


def test_the_executions_tab_still_follows_its_own_cursors(admin_client, workflow):
    url = executions_url(workflow)
    first = admin_client.get(url)
    row = first.context["rows"][0]["execution"]
    cursor = f"{row.started_at.isoformat()}_{row.pk}"
    assert admin_client.get(url, {"after": cursor}).status_code == 200
    older = admin_client.get(url, {"before": cursor, "q": "ann"})
    assert older.status_code == 200 and older.context["rows"] == []
    naive = admin_client.get(url, {"before": "2999-01-01T00:00:00_1"})  # no offset: UTC
    assert [r["execution"] for r in naive.context["rows"]] == [row]


@pytest.mark.parametrize(
    "url",
    [
        "/admin/workflows_app/execution/?q=ann%00",
        "/admin/contacts_app/contact/?q=%00",
        "/admin/workflows_app/execution/?status__exact=%00",  # list filters reach SQL as given
        "/admin/contacts_app/contact/?email=%00",
        "/admin/contacts_app/event/?name=%00",
        "/admin/templates_app/message/?status__exact=%00",
        "/admin/django_q/failure/?group=%00",
        "/admin/contacts_app/contact/?%00=x",
    ],
)
def test_admin_lists_answer_400_to_nul_in_any_parameter(admin_client, workflow, url):
    response = admin_client.get(url)
    assert response.status_code == 400
    assert "NUL character" in response.content.decode()


@pytest.mark.parametrize(
    "path", ["/admin/workflows_app/execution/", "/admin/contacts_app/contact/"]
)
def test_list_searches_still_work(admin_client, workflow, path):
    found = admin_client.get(path, {"q": "ANN@"})
    assert found.status_code == 200 and "ann@example.com" in found.content.decode()
    encoded = admin_client.get(path, {"q": "100%00"})  # the text "%00" is no NUL
    assert encoded.status_code == 200


def test_the_api_answers_nul_in_its_json_envelope(client, secret_key):
    response = client.get(
        "/v1/contacts/ann@example.com?x=%00", HTTP_AUTHORIZATION=f"Bearer {secret_key}"
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid_query"
    assert error["fields"] == {"x": "Contains a NUL character."}  # names the parameter
