"""The Executions tab in a real browser: list, filter, history, cancel one / all, permission."""

import re

import pytest

from tests.browser.conftest import login, screenshot
from tests.canvas_data import staff_user, workflow_with_waiting_runs
from workflows_app.models import Execution

pytestmark = pytest.mark.django_db(transaction=True)


def executions_url(workflow):
    return f"/admin/workflows_app/workflow/{workflow.pk}/executions/"


def status_of(page, execution):
    return page.locator(f'tr[data-execution="{execution.pk}"] .wf-status').inner_text()


def test_it_lists_shows_and_cancels_executions(page, superuser):
    workflow = workflow_with_waiting_runs(
        emails=["ann@example.com", "bob@example.com", "cy@example.com"]
    )
    ann, bob, cy = (
        Execution.objects.get(workflow=workflow, contact__email=e)
        for e in ("ann@example.com", "bob@example.com", "cy@example.com")
    )
    login(page, "boss")
    page.goto(f"/admin/workflows_app/workflow/{workflow.pk}/change/")
    page.click(".wf-tabs >> text=Executions")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() == 3
    row = page.locator(f'tr[data-execution="{ann.pk}"]')
    assert "Waiting" in row.inner_text() and "Pause" in row.inner_text()
    assert re.search(r"timer until \d{4}-\d\d-\d\d", row.inner_text())
    screenshot(page, "executions-tab")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "executions-tab-dark")
    page.emulate_media(color_scheme="light")

    page.fill("#wf-search", "bob@")
    page.click("input[value=Search]")
    assert page.locator("#result_list tbody tr").count() == 1
    page.click('.wf-filters a[data-status="WAITING"]')  # filters keep the search
    assert page.locator("#result_list tbody tr").count() == 1
    page.goto(executions_url(workflow))

    # Cancel one from the list: the confirmation states the number.
    page.locator(f'tr[data-execution="{ann.pk}"] .wf-cancel').click()
    assert "cancels 1 active execution" in page.locator("#wf-confirm-text").inner_text()
    page.click("input.wf-danger")
    page.wait_for_selector("#result_list")
    assert status_of(page, ann) == "Cancelled"
    assert status_of(page, bob) == "Waiting"

    # The execution page: history, context, contact; cancel from there.
    page.click(f'tr[data-execution="{bob.pk}"] th a')
    assert "Pause" in page.locator("#wf-history").inner_text()
    assert '"total": 42' in page.locator('pre[aria-label="Context"]').inner_text()
    assert "bob@example.com" in page.inner_text("#content-main")
    page.click("#wf-cancel-one")
    assert "cancels 1 active execution" in page.locator("#wf-confirm-text").inner_text()
    page.click("input.wf-danger")
    assert page.locator("#wf-execution-status").inner_text() == "Cancelled"

    # Cancel all: only cy is left.
    page.goto(executions_url(workflow))
    page.click("#wf-cancel-all")
    assert "cancels 1 active execution" in page.locator("#wf-confirm-text").inner_text()
    page.click("input.wf-danger")
    page.wait_for_selector("#result_list")
    assert status_of(page, cy) == "Cancelled"
    assert page.locator("#wf-cancel-all").count() == 0
    assert set(Execution.objects.values_list("status", flat=True)) == {Execution.CANCELLED}
    screenshot(page, "executions-cancelled")


def test_it_cancels_all_stating_how_many(page, superuser):
    workflow = workflow_with_waiting_runs(emails=[f"u{i}@example.com" for i in range(4)])
    login(page, "boss")
    page.goto(executions_url(workflow))
    assert page.locator("#wf-cancel-all").inner_text() == "Cancel all active (4)"
    page.click("#wf-cancel-all")
    assert "cancels 4 active executions" in page.locator("#wf-confirm-text").inner_text()
    page.click("input.wf-danger")
    page.wait_for_selector("#result_list")
    assert page.locator(".wf-status-CANCELLED").count() == 4
    assert "Cancelled 4 execution(s)" in page.locator(".messagelist").inner_text()


def test_it_hides_cancel_from_users_without_the_permission(page, transactional_db):
    workflow = workflow_with_waiting_runs(emails=["ann@example.com"])
    execution = Execution.objects.get(workflow=workflow)
    staff_user("ops", "workflows_app.view_workflow", "workflows_app.change_workflow")
    login(page, "ops")
    page.goto(executions_url(workflow))
    assert page.locator("#result_list tbody tr").count() == 1
    assert page.locator(".wf-cancel, #wf-cancel-all").count() == 0
    page.click(f'tr[data-execution="{execution.pk}"] th a')
    assert page.locator("#wf-cancel-one").count() == 0

    # The server checks too: a forged POST (with a valid CSRF token) is refused.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    cancel = f"{executions_url(workflow)}{execution.pk}/cancel/"
    response = page.request.post(cancel, headers={"X-CSRFToken": token})
    assert response.status == 403
    response = page.request.post(
        f"{executions_url(workflow)}cancel-all/", headers={"X-CSRFToken": token}
    )
    assert response.status == 403
    execution.refresh_from_db()
    assert execution.status == Execution.WAITING
