"""/v1/track reads a chunked body (Transfer-Encoding: chunked, no Content-Length) under real
gunicorn, where Django alone would see an empty body, and the body limit still holds for it."""

from __future__ import annotations

import http.client
import json
from urllib.parse import urlsplit

import requests

from contacts_app.models import Contact, Event

BODY = {"event": "user.signup", "email": "ann@example.com", "data": {"plan": "pro", "n": 1}}


def chunks(raw: bytes, size: int):
    for start in range(0, len(raw), size):
        yield raw[start : start + size]


def post_chunked(url: str, key: str, raw: bytes, size: int) -> requests.Response:
    # A generator body: requests sends it chunked, with no Content-Length.
    return requests.post(
        f"{url}/v1/track",
        data=chunks(raw, size),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=30,
    )


def test_it_reads_a_chunked_body_under_gunicorn(make_stack, api_key):
    stack = make_stack()
    stack.start_web()
    raw = json.dumps(BODY).encode()

    response = post_chunked(stack.web_url, api_key, raw, 7)
    assert response.request.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert Contact.objects.get().data == {"plan": "pro", "n": 1}

    # The same through http.client, chunk framing written by hand (and a chunk extension).
    host = urlsplit(stack.web_url)
    conn = http.client.HTTPConnection(host.hostname, host.port, timeout=30)
    body = {**BODY, "email": "bob@example.com"}
    framed = b"".join(
        b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks(json.dumps(body).encode(), 5)
    )
    conn.request(
        "POST",
        "/v1/track",
        body=framed + b"0\r\n\r\n",
        headers={
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
        },
    )
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    conn.close()
    assert Event.objects.count() == 2
    assert Contact.objects.filter(email="bob@example.com").exists()

    # What JSON cannot hold is refused the same way as with a Content-Length.
    nan = b'{"event": "a", "email": "ann@example.com", "data": {"x": NaN}}'
    response = post_chunked(stack.web_url, api_key, nan, 9)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["fields"] == {"data": response.json()["error"]["message"]}
    assert Event.objects.count() == 2


def test_the_body_limit_holds_for_chunked_bodies(make_stack, api_key):
    stack = make_stack(TRACK_MAX_BODY_BYTES="1000")
    stack.start_web()
    big = json.dumps({**BODY, "data": {"blob": "x" * 5000}}).encode()

    response = post_chunked(stack.web_url, api_key, big, 512)
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"

    small = json.dumps({**BODY, "data": {"blob": "x" * 500}}).encode()
    assert post_chunked(stack.web_url, api_key, small, 100).status_code == 200
    assert Event.objects.count() == 1
    assert Contact.objects.get().data == {"blob": "x" * 500}
