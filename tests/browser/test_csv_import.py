"""CSV import in the admin, in a real browser: the Contact list's button, the upload, and the
progress page following the job (run here by draining the worker's queue) to its result."""

import pytest

from contacts_app import jobs
from contacts_app.models import Contact, ContactJob
from contacts_app.services import contact_upsert
from tests.api.test_contact_jobs_api import drain_queue
from tests.browser.conftest import login, screenshot

pytestmark = pytest.mark.django_db(transaction=True)


def progress_is(page, value: int) -> None:
    page.wait_for_function(
        "v => document.getElementById('cj-progress').getAttribute('aria-valuenow') === v",
        arg=str(value),
    )


def test_it_uploads_a_csv_and_follows_the_import_to_its_result(page, superuser, tmp_path):
    contact_upsert(email="ann@example.com", data={"plan": "free"})
    rows = ["ann@example.com,pro", "not-an-address,x"]
    rows += [f"p{i}@example.com,free" for i in range(248)]
    csv = tmp_path / "people.csv"
    csv.write_text("email,plan\n" + "\n".join(rows) + "\n", encoding="utf-8-sig")

    login(page, "boss")
    page.goto("/admin/contacts_app/contact/")
    page.click("#contacts-import-csv")
    page.set_input_files("#id_file", str(csv))
    page.click("#contacts-import-submit")
    page.wait_for_selector("#cj-progress")
    assert page.inner_text("#cj-state") == "Queued"
    assert page.get_attribute("#cj-progress", "aria-valuenow") == "0"
    assert page.locator("#cj-result").is_hidden()

    # A worker's first batch (100 of 250 rows), then the queue: the upload's own task finishes
    # the job and the continuation finds nothing left to do. The page, polling, shows each step.
    job = ContactJob.objects.get()
    assert jobs.contact_job_run(job_id=job.pk, budget_seconds=0) == "running"
    progress_is(page, 40)
    assert page.inner_text("#cj-state") == "Running"
    assert "100 of 250" in page.inner_text("#cj-progress-text")
    screenshot(page, "csv-import-running")

    assert drain_queue() == 2
    progress_is(page, 100)
    assert page.inner_text("#cj-state") == "Completed"
    assert page.locator("#cj-result").is_visible()
    assert page.inner_text("#cj-created") == "248"
    assert page.inner_text("#cj-updated") == "1"
    assert page.inner_text("#cj-failed") == "1"
    error_row = page.locator("#cj-errors tbody tr")
    assert error_row.count() == 1 and error_row.locator("td").first.inner_text() == "3"
    assert Contact.objects.get(email="ann@example.com").data == {"plan": "pro"}
    assert page.locator("#cj-failed-reason").is_hidden()
    page.wait_for_timeout(400)  # the bar's width eases to its new value
    screenshot(page, "csv-import-done")
    page.emulate_media(color_scheme="dark")
    screenshot(page, "csv-import-done-dark")


def test_a_bad_file_is_explained_on_the_form(page, superuser, tmp_path):
    csv = tmp_path / "people.csv"
    csv.write_text("name,plan\nAnn,pro\n")
    login(page, "boss")
    page.goto("/admin/contacts_app/contactjob/import/")
    page.set_input_files("#id_file", str(csv))
    page.click("#contacts-import-submit")
    assert "no `email` column" in page.inner_text(".errorlist")
    assert not ContactJob.objects.exists()
