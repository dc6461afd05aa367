"""config/wsgi.py gives a chunked body (no Content-Length, `wsgi.input_terminated`) its length
before Django sees it, so every view reads it; tests/e2e/test_api_chunked.py does the same
through real gunicorn."""

import io
import json

import pytest
from django.urls import reverse

from config.wsgi import application, chunked_bodies
from contacts_app.models import Contact


def call(app, *, path, body: bytes, headers=None, terminated=True, method="POST"):
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "CONTENT_TYPE": "application/json",
        **(headers or {}),
    }
    if terminated:
        environ["wsgi.input_terminated"] = True
    status = []
    chunks = app(environ, lambda s, h, exc_info=None: status.append(s))
    return int(status[0].split()[0]), b"".join(chunks)


def echo(environ, start_response):
    start_response("200 OK", [])
    return [environ.get("CONTENT_LENGTH", "").encode(), b"|", environ["wsgi.input"].read()]


def test_it_gives_a_terminated_body_its_length():
    status, body = call(chunked_bodies(echo, limit=100), path="/", body=b"hello")
    assert (status, body) == (200, b"5|hello")


def test_a_body_past_the_limit_keeps_a_length_past_it():
    _, body = call(chunked_bodies(echo, limit=4), path="/", body=b"hello world")
    assert body == b"5|hello"  # one byte past the limit: the view's own check refuses it


def test_it_leaves_bodies_with_a_length_alone():
    app = chunked_bodies(echo, limit=100)
    _, body = call(app, path="/", body=b"hello", headers={"CONTENT_LENGTH": "2"})
    assert body == b"2|hello"  # read as given; Django itself stops at CONTENT_LENGTH
    _, body = call(app, path="/", body=b"hello", terminated=False)
    assert body == b"|hello"


@pytest.mark.django_db(transaction=True)
def test_the_real_application_records_a_chunked_track_call(secret_key):
    raw = json.dumps({"event": "user.signup", "email": "ann@example.com", "data": {"n": 1}})
    status, body = call(
        application,
        path=reverse("track"),
        body=raw.encode(),
        headers={"HTTP_AUTHORIZATION": f"Bearer {secret_key}"},
    )
    assert status == 200, body
    assert Contact.objects.get().data == {"n": 1}
