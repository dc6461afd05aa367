"""CSV import in the admin: the button on the Contact list, the upload form, the progress page
and the JSON it polls, behind the permission to add contacts; the read-only job list."""

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django_q.models import OrmQ

from contacts_app import jobs
from contacts_app.models import Contact, ContactJob
from contacts_app.services import contact_upsert
from tests.canvas_data import staff_user

pytestmark = pytest.mark.django_db

ADD_CONTACT = "contacts_app.add_contact"
CHANGE_CONTACT = "contacts_app.change_contact"
VIEW_CONTACT = "contacts_app.view_contact"
IMPORT_URL = "/admin/contacts_app/contactjob/import/"


def client_for(*perms: str) -> Client:
    client = Client()
    client.force_login(staff_user("staff", *perms))
    return client


def csv_file(content: bytes, name="people.csv"):
    return SimpleUploadedFile(name, content, content_type="text/csv")


def test_the_contact_list_offers_import_only_to_who_may_add_and_change_contacts():
    assert reverse("admin:contacts_app_contactjob_import") == IMPORT_URL
    adder = Client()
    adder.force_login(staff_user("adder", VIEW_CONTACT, ADD_CONTACT))
    add_only = adder.get("/admin/contacts_app/contact/")
    assert add_only.status_code == 200 and IMPORT_URL not in add_only.text
    page = client_for(VIEW_CONTACT, ADD_CONTACT, CHANGE_CONTACT).get("/admin/contacts_app/contact/")
    assert page.status_code == 200 and IMPORT_URL in page.text
    assert "Import CSV" in page.text
    viewer = Client()
    viewer.force_login(staff_user("viewer", VIEW_CONTACT))
    page = viewer.get("/admin/contacts_app/contact/")
    assert page.status_code == 200 and IMPORT_URL not in page.text


@pytest.mark.parametrize("perm", [CHANGE_CONTACT, ADD_CONTACT])
def test_a_staff_user_without_add_and_change_contact_gets_403_everywhere(perm):
    # An import adds contacts and changes existing ones (even resubscribes them): adding
    # alone is not enough.
    contact_upsert(email="gone@example.com", subscribed=False)
    job = ContactJob.objects.create(kind=ContactJob.IMPORT, total=1)
    client = client_for(VIEW_CONTACT, perm)
    assert client.get(IMPORT_URL).status_code == 403
    resubscribe = client.post(
        IMPORT_URL, {"file": csv_file(b"email,subscribed\ngone@example.com,true\n")}
    )
    assert resubscribe.status_code == 403
    refused = client.post(IMPORT_URL, {"file": csv_file(b"email\nann@example.com\n")})
    assert refused.status_code == 403
    assert client.get(f"/admin/contacts_app/contactjob/{job.pk}/progress/").status_code == 403
    assert client.get(f"/admin/contacts_app/contactjob/{job.pk}/progress.json").status_code == 403
    assert ContactJob.objects.count() == 1 and not OrmQ.objects.exists()
    assert Contact.objects.get(email="gone@example.com").subscribed is False


def test_anonymous_users_are_sent_to_log_in():
    response = Client().get(IMPORT_URL)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Client().post(IMPORT_URL, {"file": csv_file(b"email\na@b.co\n")}).status_code == 302
    assert not ContactJob.objects.exists()


def test_with_add_contact_the_import_runs_and_its_progress_page_follows_it():
    contact_upsert(email="ann@example.com", data={"plan": "free"})
    client = client_for(ADD_CONTACT, CHANGE_CONTACT)
    form = client.get(IMPORT_URL)
    assert form.status_code == 200 and 'enctype="multipart/form-data"' in form.text

    content = b"email,plan\nann@example.com,pro\nbob@example.com,free\nnope,x\n"
    response = client.post(IMPORT_URL, {"file": csv_file(content)})
    job = ContactJob.objects.get()
    progress_url = f"/admin/contacts_app/contactjob/{job.pk}/progress/"
    assert response.status_code == 302 and response["Location"] == progress_url
    assert job.kind == "import" and job.filename == "people.csv"
    assert job.created_by == "admin: staff" and OrmQ.objects.count() == 1

    page = client.get(progress_url)
    assert page.status_code == 200
    assert 'role="progressbar"' in page.text and 'aria-valuenow="0"' in page.text
    polled = client.get(f"/admin/contacts_app/contactjob/{job.pk}/progress.json").json()
    assert polled["state"] == "queued" and polled["progress"] == 0 and polled["total"] == 3

    jobs.contact_job_run(job_id=job.pk)
    polled = client.get(f"/admin/contacts_app/contactjob/{job.pk}/progress.json").json()
    assert polled["state"] == "completed" and polled["progress"] == 100
    result = polled["result"]
    assert (result["created"], result["updated"], result["failed"]) == (1, 1, 1)
    assert result["errors"][0]["line"] == 4
    assert Contact.objects.get(email="ann@example.com").data == {"plan": "pro"}
    done = client.get(progress_url)
    assert 'aria-valuenow="100"' in done.text and 'id="cj-created">1<' in done.text


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"name\nAnn\n", "no `email` column"),
        (b"email\n\xff\n", "not UTF-8"),
        (b"email\n", "no rows"),
    ],
)
def test_an_unusable_file_is_shown_on_the_form_and_records_nothing(content, says):
    response = client_for(ADD_CONTACT, CHANGE_CONTACT).post(IMPORT_URL, {"file": csv_file(content)})
    assert response.status_code == 200
    assert says in response.text and "errorlist" in response.text
    assert not ContactJob.objects.exists() and not OrmQ.objects.exists()


def test_an_empty_or_missing_file_is_a_form_error():
    client = client_for(ADD_CONTACT, CHANGE_CONTACT)
    assert "errorlist" in client.post(IMPORT_URL, {}).text
    assert "empty" in client.post(IMPORT_URL, {"file": csv_file(b"")}).text
    assert not ContactJob.objects.exists()


def test_a_file_over_5_mb_is_refused_on_the_form():
    content = b"email,pad\nann@example.com," + b"x" * jobs.IMPORT_MAX_BYTES + b"\n"
    response = client_for(ADD_CONTACT, CHANGE_CONTACT).post(IMPORT_URL, {"file": csv_file(content)})
    assert response.status_code == 200 and "5 MB" in response.text
    assert not ContactJob.objects.exists()


def test_an_unknown_job_is_a_404():
    client = client_for(ADD_CONTACT, CHANGE_CONTACT)
    missing = "00000000-0000-4000-8000-000000000000"
    assert client.get(f"/admin/contacts_app/contactjob/{missing}/progress/").status_code == 404
    assert client.get(f"/admin/contacts_app/contactjob/{missing}/progress.json").status_code == 404


def test_the_job_list_is_read_only():
    job = ContactJob.objects.create(kind=ContactJob.IMPORT, total=2, done=1, csv_text="email\n")
    client = Client()
    client.force_login(
        staff_user(
            "ops", "contacts_app.view_contactjob", "contacts_app.delete_contactjob", VIEW_CONTACT
        )
    )
    listing = client.get("/admin/contacts_app/contactjob/")
    assert listing.status_code == 200 and "50% (1 of 2)" in listing.text
    assert "/admin/contacts_app/contactjob/add/" not in listing.text
    detail = client.get(f"/admin/contacts_app/contactjob/{job.pk}/change/")
    assert detail.status_code == 200 and 'name="kind"' not in detail.text
    assert client.get("/admin/contacts_app/contactjob/add/").status_code == 403
    assert client.post(f"/admin/contacts_app/contactjob/{job.pk}/delete/").status_code == 403
    assert ContactJob.objects.filter(pk=job.pk).exists()


def test_the_job_list_shows_contact_data_only_to_who_may_view_contacts():
    job = ContactJob.objects.create(
        kind=ContactJob.IMPORT,
        total=1,
        result={"errors": [{"line": 2, "email": "secret@example.com", "message": "x"}]},
    )
    jobs_only = Client()
    jobs_only.force_login(staff_user("jobs", "contacts_app.view_contactjob"))
    assert jobs_only.get("/admin/contacts_app/contactjob/").status_code == 403
    assert jobs_only.get(f"/admin/contacts_app/contactjob/{job.pk}/change/").status_code == 403
    both = Client()
    both.force_login(staff_user("both", "contacts_app.view_contactjob", VIEW_CONTACT))
    page = both.get(f"/admin/contacts_app/contactjob/{job.pk}/change/")
    assert page.status_code == 200 and "secret@example.com" in page.text
