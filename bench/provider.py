"""A stand-in for Postmark's email API on 127.0.0.1, with a configurable latency per call.

bench/send.py points the product at it through configuration only, as a deployment would:

    EMAIL_PROVIDER=postmark
    ANYMAIL_POSTMARK_API_URL=http://127.0.0.1:PORT/
    ANYMAIL_POSTMARK_SERVER_TOKEN=<the stand-in's token>

It answers what Postmark's API answers (https://postmarkapp.com/developer/api/email-api):
`POST /email` one message -> 200 `{To, SubmittedAt, MessageID, ErrorCode: 0, Message: "OK"}`,
`POST /email/batch` a list of up to 500 -> 200 with a list of those; a missing or wrong
`X-Postmark-Server-Token` -> 401 ErrorCode 10, a body that is not JSON -> 422 ErrorCode 402, a
message without a recipient, sender or body -> 422 ErrorCode 300 (nothing accepted). Each call
is answered `latency` seconds after it arrived (the provider's own time: network, TLS, its
queue), whatever its size.

Every accepted message is recorded with what the product sent along (To, Subject, the
Metadata's idempotency_key and message_token) and when it was accepted, so the bench can count
duplicates and missing messages and time the first and last acceptance. The server is
threaded, one thread per connection, so calls wait for their latency side by side: it serves
hundreds of concurrent calls on any machine. It also counts the calls in flight, and their peak,
which shows how many sends the product really had open at once, and the connections the calls
came on (the product keeps one alive per sending thread).

Run alone for a manual look: `.venv/bin/python bench/provider.py --latency 0.2 --port 8025`.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TOKEN = "bench-postmark-server-token"
BATCH_LIMIT = 500  # Postmark's limit of messages per batch call


@dataclass(frozen=True)
class Accepted:
    to: str
    subject: str
    message_id: str
    idempotency_key: str
    message_token: str
    html_bytes: int
    at: float  # time.monotonic() when accepted (when the answer went out)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # The listen backlog: a burst of new connections (every sending thread opens one at first)
    # must not be refused or delayed by SYN retries while the threads start.
    request_queue_size = 1024
    connections = 0  # accepted so far: a client that reuses its connections makes fewer

    def process_request(self, request, client_address):
        self.connections += 1  # only the serving thread accepts: no lock needed
        super().process_request(request, client_address)


class ProviderStandIn:
    """The server, its settings (`latency` may change between runs) and what it accepted."""

    def __init__(self, *, latency: float = 0.0, token: str = DEFAULT_TOKEN, port: int = 0):
        self.latency = latency
        self.token = token
        self._lock = threading.Lock()
        self._accepted: list[Accepted] = []
        self._in_flight = 0
        self.peak_in_flight = 0
        self.calls = 0
        self.refused = 0
        self._server = _Server(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/"

    def env(self) -> dict[str, str]:
        """The product's configuration for sending here."""
        return {
            "EMAIL_PROVIDER": "postmark",
            "ANYMAIL_POSTMARK_API_URL": self.url,
            "ANYMAIL_POSTMARK_SERVER_TOKEN": self.token,
        }

    def start(self) -> ProviderStandIn:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def connections(self) -> int:
        return self._server.connections

    def accepted(self) -> list[Accepted]:
        with self._lock:
            return list(self._accepted)

    def reset(self, *, latency: float | None = None) -> None:
        """Forgets what was accepted and the counters; sets a new latency if given."""
        with self._lock:
            self._accepted.clear()
            self.peak_in_flight = self._in_flight
            self.calls = self.refused = self._server.connections = 0
            if latency is not None:
                self.latency = latency

    # -- the API ----------------------------------------------------------------------------------
    def _handle(self, path: str, token: str | None, body: bytes) -> tuple[int, Any]:
        if token is None:
            return 401, _error(
                10,
                "No Account or Server API tokens were supplied in the HTTP headers. Please add "
                "a header for either X-Postmark-Server-Token or X-Postmark-Account-Token.",
            )
        if token != self.token:
            return 401, _error(
                10,
                "The Server Token you provided in the X-Postmark-Server-Token request header "
                "was invalid. Please verify that you are using a valid token.",
            )
        try:
            data = json.loads(body)
        except ValueError:
            return 422, _error(402, "Received invalid JSON input.")
        if path == "/email" and isinstance(data, dict):
            messages = [data]
        elif path == "/email/batch" and isinstance(data, list):
            if len(data) > BATCH_LIMIT:
                return 422, _error(300, f"Batch size cannot exceed {BATCH_LIMIT} messages.")
            messages = data
        elif path in ("/email", "/email/batch"):
            return 422, _error(402, "Received invalid JSON input.")
        else:
            return 404, _error(404, "Not found.")
        replies = [_problem(m) for m in messages]
        time.sleep(self.latency)
        now = time.monotonic()
        submitted = datetime.now(UTC).isoformat()
        for i, message in enumerate(messages):
            if replies[i] is not None:
                continue
            message_id = str(uuid.uuid4())
            metadata = message.get("Metadata") or {}
            with self._lock:
                self._accepted.append(
                    Accepted(
                        to=message["To"],
                        subject=message.get("Subject", ""),
                        message_id=message_id,
                        idempotency_key=str(metadata.get("idempotency_key", "")),
                        message_token=str(metadata.get("message_token", "")),
                        html_bytes=len(message.get("HtmlBody", "").encode()),
                        at=now,
                    )
                )
            replies[i] = {
                "To": message["To"],
                "SubmittedAt": submitted,
                "MessageID": message_id,
                "ErrorCode": 0,
                "Message": "OK",
            }
        if path == "/email/batch":
            return 200, replies
        reply = replies[0] or {}
        return (200 if reply.get("ErrorCode") == 0 else 422), reply

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as the real API
            # The headers and the body go out in two writes: without TCP_NODELAY the second
            # waits for the client's delayed ACK (40 ms on Linux), a stall no real API has.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with provider._lock:
                    provider.calls += 1
                    provider._in_flight += 1
                    provider.peak_in_flight = max(provider.peak_in_flight, provider._in_flight)
                try:
                    status, reply = provider._handle(
                        self.path.split("?")[0].rstrip("/") or "/",
                        self.headers.get("X-Postmark-Server-Token"),
                        body,
                    )
                finally:
                    with provider._lock:
                        provider._in_flight -= 1
                if status != 200:
                    with provider._lock:
                        provider.refused += 1
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        return Handler


def _error(code: int, message: str) -> dict[str, Any]:
    return {"ErrorCode": code, "Message": message}


def _problem(message: Any) -> dict[str, Any] | None:
    """Postmark's refusal of one message (ErrorCode 300), or None when it is acceptable."""
    if not isinstance(message, dict):
        return _error(402, "Received invalid JSON input.")
    if not message.get("To"):
        return _error(300, "Zero recipients specified")
    if not message.get("From"):
        return _error(300, "Invalid 'From' address: ''.")
    if not message.get("HtmlBody") and not message.get("TextBody"):
        return _error(300, "Provide either email TextBody or HtmlBody or both.")
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    args = parser.parse_args()
    provider = ProviderStandIn(latency=args.latency, token=args.token, port=args.port).start()
    print(" ".join(f"{k}={v}" for k, v in provider.env().items()), flush=True)
    try:
        while True:
            time.sleep(5)
            print(
                f"{len(provider.accepted())} accepted, {provider.refused} refused, "
                f"{provider.calls} calls on {provider.connections} connections, peak "
                f"{provider.peak_in_flight} calls at once",
                flush=True,
            )
    except KeyboardInterrupt:
        provider.stop()


if __name__ == "__main__":
    main()
