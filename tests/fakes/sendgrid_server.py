"""A fake SendGrid v3 server on 127.0.0.1: real HTTP, the documented limits, scriptable answers."""

from __future__ import annotations

import collections
import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_PERSONALIZATIONS = 1000


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a Mail Send request.

    `status` 0 means "no HTTP answer": with `hang` the server holds the connection open
    until released (or `hang` seconds pass) and then drops it; without, it drops at once.
    `accept` says whether the body counts as delivered (SendGrid took it) despite the answer.
    """

    status: int = 202
    headers: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    delay: float = 0.0
    hang: float = 0.0
    accept: bool = True


def errors_body(message: str, field: str | None = None) -> dict[str, Any]:
    return {"errors": [{"message": message, "field": field, "help": None}]}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes
    status: int


@dataclass
class FakeSendGrid:
    """State shared with the handler threads: the script, and everything received."""

    api_key: str
    script: collections.deque[Reply] = field(default_factory=collections.deque)
    requests: list[Received] = field(default_factory=list)
    delivered: list[tuple[str, str]] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    # Accepted bodies as (batch_id, send_at, deliveries), and when each batch was cancelled:
    # what recipients end up receiving once scheduled sends are cancelled (see `inboxes`).
    accepted: list[tuple[str | None, int | None, list[tuple[str, str]]]] = field(
        default_factory=list
    )
    cancelled_at: dict[str, float] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    keep_bodies: bool = True  # False for benchmarks: count deliveries, keep no bodies

    def push(self, *replies: Reply) -> None:
        with self.lock:
            self.script.extend(replies)

    def next_reply(self) -> Reply:
        with self.lock:
            return self.script.popleft() if self.script else Reply()

    def record(self, received: Received, accepted: bool) -> None:
        with self.lock:
            if self.keep_bodies:
                self.requests.append(received)
            if accepted:
                self.delivered.extend(deliveries(received.body))
                if self.keep_bodies:
                    body = received.body
                    self.accepted.append(
                        (body.get("batch_id"), body.get("send_at"), deliveries(body))
                    )

    def cancel(self, batch_id: str) -> None:
        with self.lock:
            self.cancelled.append(batch_id)
            self.cancelled_at.setdefault(batch_id, time.time())

    def inboxes(self) -> collections.Counter[tuple[str, str]]:
        """(issue, address) for what recipients get in the end: as SendGrid does, a cancelled
        batch_id holds back every message of that batch whose send_at had not come yet."""
        with self.lock:
            return collections.Counter(
                delivery
                for batch_id, send_at, people in self.accepted
                if not _held_back(batch_id, send_at, self.cancelled_at)
                for delivery in people
            )

    def stats(self) -> dict[str, int]:
        with self.lock:
            return {"delivered": len(self.delivered), "distinct": len(set(self.delivered))}

    def mail_sends(self) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == "/v3/mail/send"]

    def delivered_counts(self) -> collections.Counter[tuple[str, str]]:
        with self.lock:
            return collections.Counter(self.delivered)


def _held_back(batch_id: str | None, send_at: int | None, cancelled_at: dict[str, float]) -> bool:
    if batch_id is None or send_at is None or batch_id not in cancelled_at:
        return False
    return cancelled_at[batch_id] < send_at


def deliveries(body: Any) -> list[tuple[str, str]]:
    """(issue, address) for every personalization of an accepted body."""
    return [
        (p.get("custom_args", {}).get("newsletter_issue", ""), p["to"][0]["email"])
        for p in body.get("personalizations", [])
    ]


def validate(body: Any) -> str | None:
    """The limits SendGrid enforces on the whole request; None when the body passes."""
    if not isinstance(body, dict) or not body.get("personalizations"):
        return "The personalizations field is required."
    people = body["personalizations"]
    if len(people) > MAX_PERSONALIZATIONS:
        return "The personalizations field must have 1000 or fewer items."
    addresses = [t["email"].lower() for p in people for t in p.get("to", [])]
    if len(addresses) != len(set(addresses)):
        return "Each email address in the personalization block should be unique."
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is the assertions."""

    def do_GET(self) -> None:
        if self.path == "/_stats":  # for a benchmark that runs the fake in another process
            self._send(200, self.server.fake.stats(), {})
        else:
            self._send(404, errors_body("Not found."), {})

    def do_POST(self) -> None:
        fake = self.server.fake
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            self._answer(401, errors_body("The provided authorization grant is invalid."), raw)
            return
        if self.path == "/v3/mail/batch":
            self._answer(201, {"batch_id": uuid.uuid4().hex}, raw)
        elif self.path == "/v3/user/scheduled_sends":
            fake.cancel(json.loads(raw)["batch_id"])
            self._answer(201, json.loads(raw), raw)
        elif self.path == "/v3/mail/send":
            self._mail_send(raw)
        else:
            self._answer(404, errors_body("Not found."), raw)

    def _mail_send(self, raw: bytes) -> None:
        fake = self.server.fake
        body = json.loads(raw)
        problem = validate(body)
        if problem:
            self._answer(400, errors_body(problem, "personalizations"), raw)
            return
        reply = fake.next_reply()
        sandbox = body.get("mail_settings", {}).get("sandbox_mode", {}).get("enable", False)
        status = 200 if sandbox and reply.status == 202 else reply.status
        accepted = reply.accept and status in (0, 202)
        fake.record(
            Received(self.path, dict(self.headers), body, raw, status), accepted and not sandbox
        )
        fake.arrived.set()
        if status == 0:
            if reply.hang:
                fake.release.wait(reply.hang)
            self.close_connection = True
            return
        time.sleep(reply.delay)
        headers = dict(reply.headers)
        if status == 202:
            headers.setdefault("X-Message-Id", uuid.uuid4().hex[:22])
        self._send(status, reply.body, headers)

    def _answer(self, status: int, body: Any, raw: bytes) -> None:
        self.server.fake.record(Received(self.path, dict(self.headers), None, raw, status), False)
        self._send(status, body, {})

    def _send(self, status: int, body: Any, headers: dict[str, str]) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        try:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (timeout): exactly what some tests provoke


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeSendGrid


@contextmanager
def running(api_key: str, keep_bodies: bool = True) -> Iterator[FakeSendGrid]:
    """Serve a fresh fake on an ephemeral loopback port for the duration of the block."""
    server = _Server(("127.0.0.1", 0), _Handler)
    url = f"http://127.0.0.1:{server.server_port}"
    server.fake = FakeSendGrid(api_key=api_key, url=url, keep_bodies=keep_bodies)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.fake
    finally:
        server.fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


def serve_forever(api_key: str) -> None:
    """Run a counting fake until killed, printing its URL first (benchmarks use this)."""
    with running(api_key, keep_bodies=False) as fake:
        print(fake.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    import sys

    serve_forever(sys.argv[1])
