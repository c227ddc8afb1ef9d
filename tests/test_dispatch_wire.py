"""Where a request failed decides its rows: real sockets on 127.0.0.1 that refuse, reset,
close, answer garbage or dribble, each failure mapped to `pending` or `unknown`.

Before the connection, while connecting or while the body was still being written, SendGrid
cannot have accepted anything: the rows go back to `pending` (and the mailer may retry).
Only after the whole body was written is the outcome `unknown` (and never retried).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import db, dispatch, schema
from newsletter.config import Secret, Settings, load_settings
from newsletter.dispatch import SendOptions
from newsletter.errors import (
    AuthError,
    ConfigError,
    InterruptedBeforeSending,
    MailerError,
    PayloadError,
    UnreachableError,
)
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer, build_payload
from newsletter.models import AudienceSpec, DispatchReport, Recipient, RenderedEmail, SendBatch
from tests.conftest import AUDIENCE_SIZE, CANARY_KEY, populate, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid, Reply

TWICE = RetryPolicy(attempts=2, base=0.01, cap=0.01)
BATCH = SendBatch("2025-12-10", "weekly", (Recipient("a@example.org"),), ("1",))
# Far more than the loopback socket buffers hold (4 MB to send, a few KB to receive once the
# server shrinks its buffer), so a server that stops reading makes the write itself fail.
BIG = 8 * 1024 * 1024

Behaviour = Callable[[socket.socket], None]


@dataclass
class RawServer:
    """A TCP server on 127.0.0.1 that treats each connection with one behaviour, in turn."""

    url: str
    connections: int = 0
    stop: threading.Event = field(default_factory=threading.Event)


@contextmanager
def raw_server(
    behave: Behaviour, rcvbuf: int | None = None, tls: ssl.SSLContext | None = None
) -> Iterator[RawServer]:
    listener = socket.socket()
    if rcvbuf:  # set before listen(): the window is negotiated from it
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.05)
    scheme = "https" if tls else "http"
    server = RawServer(f"{scheme}://127.0.0.1:{listener.getsockname()[1]}")

    def serve() -> None:
        while not server.stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            server.connections += 1
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        with conn, suppress(OSError):
            conn.settimeout(30)
            if tls:
                conn = tls.wrap_socket(conn, server_side=True)
            behave(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()
        thread.join()
        listener.close()


def read_head(conn: socket.socket) -> tuple[int, bytes]:
    """The request's Content-Length, and whatever of the body came with the head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return length, rest


def read_request(conn: socket.socket) -> None:
    length, body = read_head(conn)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client went away")
        body += chunk


def reset(conn: socket.socket) -> None:
    """Close with an RST, as a crashed server or a middlebox does."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def close_at_once(conn: socket.socket) -> None:
    conn.close()


def reset_mid_body(conn: socket.socket) -> None:
    read_head(conn)
    conn.recv(65536)
    reset(conn)


def read_slowly(conn: socket.socket) -> None:
    """Takes the body a kilobyte at a time: a write that never ends within the deadline."""
    read_head(conn)
    while conn.recv(1024):
        time.sleep(0.05)


def answer_garbage(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(b"this is not HTTP\r\n\r\n")


def reset_after_body(conn: socket.socket) -> None:
    read_request(conn)
    reset(conn)


def close_after_body(conn: socket.socket) -> None:
    read_request(conn)
    conn.close()


ACCEPTED = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: dribbled\r\nContent-Length: 0\r\n\r\n"


def dribble(conn: socket.socket) -> None:
    """A 202, one byte every 0.2 s: each read is quick, the whole answer takes 14 s."""
    read_request(conn)
    for byte in ACCEPTED:
        conn.sendall(bytes([byte]))
        time.sleep(0.2)


def short_body(conn: socket.socket) -> None:
    """A 202 whose body stops short of its Content-Length (http.client: IncompleteRead)."""
    read_request(conn)
    conn.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\n{}")


def send_dribbled_and_truncated(conn: socket.socket) -> None:
    """Half a status line, then nothing: the answer never completes."""
    read_request(conn)
    conn.sendall(ACCEPTED[:10])
    time.sleep(5)


def pointed(settings: Settings, url: str, timeout: float = 1.0) -> Settings:
    return dataclasses.replace(settings, sendgrid_api_url=url, sendgrid_timeout=timeout)


def big(rendered: RenderedEmail) -> RenderedEmail:
    return dataclasses.replace(rendered, html="<p>" + "x" * BIG + "</p>")


# --- before and while connecting, while writing: pending, retried ---------------------------


def test_a_refused_connection_is_retried_then_unreachable_with_nothing_unknown(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    with socket.socket() as placeholder:  # a port nobody listens on
        placeholder.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{placeholder.getsockname()[1]}"
    mailer = SendGridMailer(pointed(sendgrid_settings, url), retry=TWICE)
    with pytest.raises(UnreachableError, match="nothing was accepted"):
        mailer.send_batch(rendered, BATCH)


def test_a_connection_that_never_completes_is_cut_at_the_deadline_and_retried(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # A listener whose accept queue is full and never drained: the kernel drops the SYN,
    # so connect() waits; only the deadline ends it, and nothing was sent.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        mailer = SendGridMailer(pointed(sendgrid_settings, url, timeout=0.5), retry=TWICE)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(rendered, BATCH)
        assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    "behave", [close_at_once, reset_mid_body, read_slowly], ids=lambda b: b.__name__
)
def test_a_server_that_stops_before_the_whole_body_arrived_leaves_nothing_unknown(
    sendgrid_settings: Settings, rendered: RenderedEmail, behave: Behaviour
) -> None:
    with raw_server(behave, rcvbuf=4096) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(big(rendered), BATCH)
        elapsed = time.monotonic() - started
    assert server.connections == 2  # retried: certainly not accepted
    assert elapsed < 10  # two 1 s deadlines, not a write that waits for ever


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport", "127.0.0.1:8080", "ftp://h"])
def test_a_request_that_cannot_be_built_sends_nothing_and_is_not_unknown(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail, url: str
) -> None:
    # Settings made past load_settings (which refuses these URLs) to show the mailer's own
    # guard: a programmatic caller gets a PayloadError (rows back to pending), no traceback.
    settings = dataclasses.replace(sendgrid_settings, sendgrid_api_url=url)
    with pytest.raises(PayloadError, match="Nothing was sent"):
        SendGridMailer(settings, retry=TWICE).send_batch(rendered, BATCH)
    assert fake_sendgrid.requests == []


@pytest.mark.parametrize("key", ["SG.trailing-newline\n", "SG.non-ascii-\u00e9", "SG.a space"])
def test_a_key_that_cannot_go_into_a_header_is_refused_before_any_request(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, key: str
) -> None:
    settings = dataclasses.replace(sendgrid_settings, sendgrid_api_key=Secret(key))
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY") as caught:
        SendGridMailer(settings)
    assert key.strip() not in str(caught.value)
    assert fake_sendgrid.requests == []


def interrupt_while_reading(conn: socket.socket) -> None:
    """Ctrl-C reaches the sender while it is still writing the body."""
    read_head(conn)
    conn.recv(1024)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(1)


def test_ctrl_c_while_connecting_gives_the_batch_back(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # The connect waits on a full accept queue (as above) when Ctrl-C comes.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        mailer = SendGridMailer(pointed(sendgrid_settings, url, timeout=5), retry=TWICE)
        timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(InterruptedBeforeSending):
            mailer.send_batch(rendered, BATCH)
        timer.join()


def test_ctrl_c_once_writing_began_is_not_given_back(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # A signal lands between statements, so once bytes went out the mailer cannot be sure
    # the last one had not: the safe side, a plain interrupt (the rows become `unknown`).
    with raw_server(interrupt_while_reading, rcvbuf=4096) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url, timeout=5), retry=TWICE)
        with pytest.raises(KeyboardInterrupt) as caught:
            mailer.send_batch(big(rendered), BATCH)
    assert not isinstance(caught.value, InterruptedBeforeSending)


# --- after the whole body was written: unknown, never retried --------------------------------


@pytest.mark.parametrize(
    "behave",
    [
        answer_garbage,
        reset_after_body,
        close_after_body,
        short_body,
        send_dribbled_and_truncated,
        dribble,
    ],
    ids=lambda b: b.__name__,
)
def test_a_failure_after_the_whole_body_was_written_is_unknown_and_not_retried(
    sendgrid_settings: Settings, rendered: RenderedEmail, behave: Behaviour
) -> None:
    with raw_server(behave) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        started = time.monotonic()
        outcome = mailer.send_batch(rendered, BATCH)
        elapsed = time.monotonic() - started
    (result,) = outcome.results
    assert result.state == "unknown"
    assert "no answer after the request was sent" in (result.error or "")
    assert server.connections == 1
    assert elapsed < 4  # the 1 s deadline bounds the whole request, however it trickles


def test_the_deadline_bounds_the_whole_answer_not_each_read(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # Every byte of the dribbled 202 arrives 0.2 s after the last, well inside the 1 s
    # timeout; only a whole-request deadline stops it (it used to be `sent` after 14 s).
    with raw_server(dribble) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        (result,) = mailer.send_batch(rendered, BATCH).results
    assert result.state == "unknown"
    assert "deadline" in (result.error or "")


def test_a_slow_answer_inside_the_deadline_is_still_sent(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(delay=0.5, headers=(("X-Message-Id", "slow"),)))
    mailer = SendGridMailer(pointed(sendgrid_settings, fake_sendgrid.url), retry=TWICE)
    (result,) = mailer.send_batch(rendered, BATCH).results
    assert (result.state, result.message_id) == ("sent", "slow")


# --- over TLS, as production runs: the same stages, the same deadline -------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A key and a self-signed certificate for 127.0.0.1, made by Debian's openssl."""
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.fixture
def tls_server_context(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1 that the client trusts through SSL_CERT_FILE
    (OpenSSL's own variable, read by the default context the mailer's HTTPS uses)."""
    key, cert = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def answer_at_once(conn: socket.socket) -> None:
    read_request(conn)
    conn.sendall(ACCEPTED)


@pytest.mark.parametrize(
    ("behave", "state"),
    [(answer_at_once, "sent"), (dribble, "unknown"), (reset_after_body, "unknown")],
    ids=lambda b: getattr(b, "__name__", b),
)
def test_over_tls_an_answer_is_read_and_a_dribble_is_cut_at_the_deadline(
    sendgrid_settings: Settings,
    rendered: RenderedEmail,
    tls_server_context: ssl.SSLContext,
    behave: Behaviour,
    state: str,
) -> None:
    with raw_server(behave, tls=tls_server_context) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        started = time.monotonic()
        (result,) = mailer.send_batch(rendered, BATCH).results
        elapsed = time.monotonic() - started
    assert result.state == state, result.error
    assert server.connections == 1
    assert elapsed < 4


def test_over_tls_a_server_that_hangs_up_unread_leaves_nothing_unknown(
    sendgrid_settings: Settings, rendered: RenderedEmail, tls_server_context: ssl.SSLContext
) -> None:
    with raw_server(close_at_once, rcvbuf=4096, tls=tls_server_context) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(big(rendered), BATCH)
    assert server.connections == 2


def test_over_tls_an_untrusted_certificate_is_refused_while_connecting(
    sendgrid_settings: Settings, rendered: RenderedEmail, tmp_path: Path
) -> None:
    # No SSL_CERT_FILE: the self-signed certificate is not trusted, nothing is written.
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    key, cert = self_signed(tmp_path)
    context.load_cert_chain(cert, key)
    with raw_server(answer_at_once, tls=context) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(rendered, BATCH)


# --- through send_issue: what the ledger says ------------------------------------------------


def states(engine: Engine) -> set[str]:
    rows = schema.send_ledger
    with db.reading(engine) as conn:
        return set(conn.execute(select(rows.c.state).where(rows.c.issue == "2025-12-10")).scalars())


def send(engine: Engine, rendered: RenderedEmail, settings: Settings) -> DispatchReport:
    mailer = SendGridMailer(settings, retry=TWICE)
    return dispatch.send_issue(
        engine,
        rendered,
        AudienceSpec("weekly"),
        mailer,
        lambda public_id: f"https://news.test/u/{public_id}",
        SendOptions(batch_size=10),
    )


def test_a_server_that_hangs_up_before_a_body_larger_than_the_socket_buffers_leaves_rows_pending(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    sendgrid_settings: Settings,
) -> None:
    # Pending only because 8 MB cannot all be handed to the kernel before the hang-up is
    # seen: the write itself fails. See the next test for a body of ordinary size.
    with raw_server(close_at_once, rcvbuf=4096) as server, pytest.raises(MailerError):
        send(engine, big(rendered), pointed(sendgrid_settings, server.url))
    assert states(engine) == {"pending"}
    assert len(weekly_readers) == AUDIENCE_SIZE


def test_a_server_that_hangs_up_before_an_ordinary_body_leaves_no_row_sent_or_failed(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    sendgrid_settings: Settings,
) -> None:
    # The limit, stated honestly: a ~200 KB body fits in the loopback socket buffers, so
    # the last byte is usually handed to the kernel before the server's close arrives. The
    # client then cannot tell "closed unread" from "read, acted on, closed": `unknown`. It
    # may instead see the close while still writing: `pending`. Never `sent` nor `failed`.
    ordinary = dataclasses.replace(rendered, html="<p>" + "x" * 200_000 + "</p>")
    # Each batch goes one way or the other: some `unknown`, then one given back, and the
    # send stops (MailerError) with the rest `pending`; or every batch `unknown`.
    with raw_server(close_at_once) as server, suppress(MailerError):
        send(engine, ordinary, pointed(sendgrid_settings, server.url))
    assert states(engine) <= {"pending", "unknown"}


def test_garbage_after_the_body_makes_each_batch_unknown_once(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    sendgrid_settings: Settings,
) -> None:
    with raw_server(answer_garbage) as server:
        report = send(engine, rendered, pointed(sendgrid_settings, server.url))
    assert report.unknown == len(weekly_readers)
    assert server.connections == 3  # batches of 10, 10 and 5, none retried
    assert states(engine) == {"unknown"}


@pytest.mark.parametrize("url", ["http://127.0.0.1:notaport", "api.sendgrid.com"])
def test_the_command_refuses_a_bad_url_before_any_row_is_claimed(project: Path, url: str) -> None:
    # Once: every recipient `unknown` and exit status 0 (the port), or a traceback (no scheme).
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{project / 'newsletter.db'}",
        "NEWSLETTER_SECRET_KEY": "37Fa-X-aoYJGRqLkfQCptjBr5j1TuqQB3zyXlSXz0zQ",
    }
    engine = db.connect(load_settings(project, env=env))
    populate(engine, 5)
    env |= {"NEWSLETTER_SENDGRID_API_URL": url, "SENDGRID_API_KEY": CANARY_KEY}
    done = run_newsletter(project, "send", "issues/2025-12-10.yaml", "--yes", env=env)
    assert done.returncode == 1
    assert "NEWSLETTER_SENDGRID_API_URL" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    with db.reading(engine) as conn:
        assert not conn.execute(select(schema.send_ledger)).all()
    engine.dispose()


# --- redirects and wrong paths: a configuration error, nothing accepted, never followed ------


def redirect_to(location: str, status: int) -> Behaviour:
    def behave(conn: socket.socket) -> None:
        read_request(conn)
        conn.sendall(
            f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()
        )

    return behave


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_never_followed_and_gives_every_row_back(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    sendgrid_settings: Settings,
    status: int,
) -> None:
    # urllib's default opener followed 301/302/303 as a GET to the other host, Authorization
    # (the key) included, and took that host's 202 as SendGrid's: every row `sent`.
    with raw_server(answer_at_once) as elsewhere:
        target = elsewhere.url.replace("127.0.0.1", "localhost") + "/v3/mail/send"
        with raw_server(redirect_to(target, status)) as server:
            with pytest.raises(MailerError, match=rf"redirected the request \(HTTP {status}\)"):
                send(engine, rendered, pointed(sendgrid_settings, server.url))
            assert server.connections == 1  # not retried either
        assert elsewhere.connections == 0
    assert states(engine) == {"pending"}


@pytest.mark.parametrize("path", ["/v3", "/v3/mail/send"])
def test_a_404_from_mail_send_is_a_configuration_error_that_gives_every_row_back(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    sendgrid_settings: Settings,
    fake_sendgrid: FakeSendGrid,
    path: str,
) -> None:
    # Past load_settings (which refuses these paths): every batch used to end `failed`.
    settings = pointed(sendgrid_settings, fake_sendgrid.url + path)
    with pytest.raises(MailerError, match=r"no Mail Send endpoint \(HTTP 404\).*base URL"):
        send(engine, rendered, settings)
    assert states(engine) == {"pending"}


# --- an error whose body is cut short: the status still decides -----------------------------


def error_cut_short(*statuses: int) -> Behaviour:
    """Each connection in turn: the status with a body that stops at 28 of 500 bytes; a 202
    once the statuses are used up."""
    left = list(statuses)

    def behave(conn: socket.socket) -> None:
        read_request(conn)
        if not left:
            conn.sendall(ACCEPTED)
            return
        head = f"HTTP/1.1 {left.pop(0)} Error\r\nContent-Length: 500\r\n\r\n"
        conn.sendall(head.encode() + b'{"errors":[{"message":"bad"}')

    return behave


def test_a_401_with_a_cut_body_still_stops_the_send(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    with raw_server(error_cut_short(401)) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        with pytest.raises(AuthError, match="HTTP 401"):
            mailer.send_batch(rendered, BATCH)


def test_a_429_with_a_cut_body_is_still_retried(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    with raw_server(error_cut_short(429)) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        (result,) = mailer.send_batch(rendered, BATCH).results
    assert (result.state, result.message_id) == ("sent", "dribbled")
    assert server.connections == 2


@pytest.mark.parametrize(("status", "state"), [(400, "failed"), (500, "unknown")])
def test_an_error_with_a_cut_body_is_judged_by_its_status(
    sendgrid_settings: Settings, rendered: RenderedEmail, status: int, state: str
) -> None:
    with raw_server(error_cut_short(status)) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url), retry=TWICE)
        (result,) = mailer.send_batch(rendered, BATCH).results
    assert result.state == state
    assert f"HTTP {status}" in (result.error or "")
    assert server.connections == 1


# --- Ctrl-C while the library encodes the body: nothing opened, the batch given back ---------


def test_ctrl_c_while_the_body_is_encoded_gives_the_batch_back(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # A body whose JSON encoding takes about a second (every character escaped), so the
    # real SIGINT lands while the library encodes it, before any connection is opened.
    slow = dataclasses.replace(rendered, html="\u20ac" * 15_000_000)
    with raw_server(answer_at_once) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url, timeout=30), retry=TWICE)
        payload = build_payload(slow, BATCH, mailer.settings)
        timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(InterruptedBeforeSending):
            mailer.post_payload(payload, BATCH.keys)
        timer.join()
    assert server.connections == 0


# --- connecting: resolution, TCP and TLS share one deadline ----------------------------------

ONCE = RetryPolicy(attempts=1, base=0.01, cap=0.01)


def never_speak(conn: socket.socket) -> None:
    """Accepts the TCP connection and never answers the TLS handshake."""
    time.sleep(5)


def test_a_server_that_never_speaks_tls_is_cut_at_the_deadline(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    with raw_server(never_speak) as server:
        url = server.url.replace("http://", "https://")
        mailer = SendGridMailer(pointed(sendgrid_settings, url, timeout=1.0), retry=ONCE)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(rendered, BATCH)
    assert time.monotonic() - started < 1.8


def test_the_tls_handshake_gets_only_what_the_slow_connect_left(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # The accept queue is full when the client's SYN comes, so the kernel drops it and the
    # client sends it again after its first retransmission timeout (1 s on Linux); by then
    # the queue has room. The TCP connect takes ~1 s of the 1.5 s deadline, and the server
    # never speaks TLS: the handshake must be cut at 1.5 s in all. It once got a fresh 1.5 s.
    with socket.socket() as listener, socket.socket() as queued:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        queued.connect(listener.getsockname())
        held: list[socket.socket] = []

        def drain_then_hold() -> None:
            time.sleep(0.3)
            for _ in range(2):  # the queued connection, then the client's
                held.append(listener.accept()[0])

        thread = threading.Thread(target=drain_then_hold, daemon=True)
        thread.start()
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        mailer = SendGridMailer(pointed(sendgrid_settings, url, timeout=1.5), retry=ONCE)
        started = time.monotonic()
        with pytest.raises(UnreachableError, match="nothing was accepted"):
            mailer.send_batch(rendered, BATCH)
        elapsed = time.monotonic() - started
        thread.join(5)
        for conn in held:
            conn.close()
    assert len(held) == 2  # the client's connect did complete, late
    assert 0.9 < elapsed < 2.1


def test_ctrl_c_while_the_batch_is_built_gives_it_back(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    # Scanning 15 M characters for placeholders takes about half a second: SIGINT at 0.15 s.
    slow = dataclasses.replace(rendered, html="\u20ac" * 15_000_000)
    with raw_server(answer_at_once) as server:
        mailer = SendGridMailer(pointed(sendgrid_settings, server.url, timeout=30), retry=TWICE)
        timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        with pytest.raises(InterruptedBeforeSending):
            mailer.send_batch(slow, BATCH)
        timer.join()
    assert server.connections == 0
