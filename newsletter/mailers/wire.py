"""The HTTP transport under the `sendgrid` client: one deadline for a whole request, and
how far the request got when it failed.

python_http_client opens every request through urllib, whose timeout bounds each socket
operation: a server that dribbles its answer one byte a second never trips a 2 s timeout.
Its `Client._make_request` is the seam its own docstring sets apart for replacing the call,
so `DeadlineClient` overrides it and opens the request through its own
urllib handlers (no redirect handler, no proxy handler) instead of replacing the `sendgrid`
package. Their connections resolve the host, connect to each address, shake hands over
TLS, write and read, each with what is left of the deadline, and record the request's
`Stage` as it advances. A failure is re-raised as `TransportError`
carrying that stage, so the mailer can tell "nothing can have been accepted" (before the
whole body was written) from "it may have been" (after).
"""

from __future__ import annotations

import enum
import http.client
import io
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from email.message import Message
from typing import TYPE_CHECKING, Any

# Absolute import: the real package, not a module of ours.
import python_http_client

from newsletter.errors import InterruptedBeforeSending

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class Stage(enum.IntEnum):
    """How far a request got; only ever advances."""

    PREPARING = 0  # building the request or the connection: nothing left the machine
    CONNECTING = 1  # resolving, TCP and TLS handshakes: no byte of the request sent
    WRITING = 2  # connected, the head and body partly handed to the operating system
    WRITTEN = 3  # the last byte of the body was handed over: the server may act on it


class DeadlineExceeded(TimeoutError):
    """The whole request took longer than its deadline."""


class Attempt:
    """One request's deadline and its stage so far."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.stage = Stage.PREPARING

    def remaining(self) -> float:
        """Seconds left for the next socket operation; raises once none are."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request took longer than its deadline")
        return left

    def reach(self, stage: Stage) -> None:
        self.stage = max(self.stage, stage)


class TransportError(Exception):
    """A request failed without an HTTP answer; `stage` says how far it got. The mailer
    turns it into an outcome or a MailerError: it never leaves `newsletter.mailers`.

    The original exception is `cause`, deliberately not chained: a foreign message may quote
    a header, and the Authorization header is the API key.
    """

    def __init__(self, attempt: Attempt, cause: BaseException) -> None:
        self.stage = attempt.stage
        self.cause = cause
        # A socket timeout set to the last of the deadline reads as a plain timeout.
        late = time.monotonic() >= attempt.deadline
        self.why = "timed out: the whole-request deadline passed" if late else describe(cause)
        super().__init__(f"{self.why} {_WHERE[self.stage]}")

    @property
    def body_written(self) -> bool:
        return self.stage >= Stage.WRITTEN


_WHERE = {
    Stage.PREPARING: "before connecting",
    Stage.CONNECTING: "while connecting",
    Stage.WRITING: "while writing the request",
    Stage.WRITTEN: "after the whole request was written",
}


def describe(exc: BaseException) -> str:
    """A short name for a transport failure that never quotes its message."""
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        exc = exc.reason
    if isinstance(exc, DeadlineExceeded):
        return "timed out: the whole-request deadline passed"
    if isinstance(exc, TimeoutError):
        return "timed out"
    return type(exc).__name__


class _DeadlineReader(io.RawIOBase):
    """The response's socket stream, with the timeout shrunk to the deadline before each read."""

    def __init__(self, raw: io.RawIOBase, sock: Any, attempt: Attempt) -> None:
        super().__init__()
        self._raw = raw
        self._sock = sock
        self._attempt = attempt

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer) -> int | None:
        self._sock.settimeout(self._attempt.remaining())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _DeadlineResponse(http.client.HTTPResponse):
    attempt: Attempt  # set on the per-connection subclass `_response_class` makes

    def __init__(
        self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None
    ) -> None:
        super().__init__(sock, debuglevel, method, url)
        # `begin` reads the status line and headers from `fp`: swap it before that happens.
        # The raw stream keeps the socket open after urllib drops the connection, as before.
        raw = self.fp.detach()
        self.fp = io.BufferedReader(_DeadlineReader(raw, sock, self.attempt))


def _response_class(attempt: Attempt) -> type[http.client.HTTPResponse]:
    # http.client builds the response from the class alone; a subclass carries the attempt.
    return type("DeadlineResponse", (_DeadlineResponse,), {"attempt": attempt})


class _StagedConnection(http.client.HTTPConnection):
    """Bounds connect and every write by the attempt's deadline, and records its stage."""

    attempt: Attempt

    def _bind(self, attempt: Attempt) -> None:
        self.attempt = attempt
        self.response_class = _response_class(attempt)

    def connect(self) -> None:
        # Not http.client's: create_connection gives every address the whole timeout and
        # TLS the time left when connecting started; here each step gets what is left.
        self.attempt.reach(Stage.CONNECTING)
        self.sock = open_socket(self.host, self.port, self.attempt)
        self.sock = self._secure(self.sock)
        self.attempt.reach(Stage.WRITING)

    def _secure(self, sock: socket.socket) -> socket.socket:
        return sock

    def send(self, data: Any) -> None:
        if self.sock is None:
            self.connect()  # http.client's auto-open, here so the deadline covers it
        # sendall's timeout bounds the whole call (Python 3.5+), not each chunk.
        self.sock.settimeout(self.attempt.remaining())
        super().send(data)

    def request(self, *args: Any, **kwargs: Any) -> None:
        super().request(*args, **kwargs)
        self.attempt.reach(Stage.WRITTEN)


class _StagedHTTPConnection(_StagedConnection):
    def __init__(self, host: str, *, attempt: Attempt, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._bind(attempt)


class _StagedHTTPSConnection(_StagedConnection, http.client.HTTPSConnection):
    def __init__(self, host: str, *, attempt: Attempt, **kwargs: Any) -> None:
        super().__init__(host, **kwargs)
        self._bind(attempt)

    def _secure(self, sock: socket.socket) -> socket.socket:
        sock.settimeout(self.attempt.remaining())  # the handshake gets what is left
        context: Any = self._context  # type: ignore[attr-defined]  # http.client's, untyped
        secured: socket.socket = context.wrap_socket(sock, server_hostname=self.host)
        return secured


class _HTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__()
        self._attempt = attempt

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        return _StagedHTTPConnection(host, attempt=self._attempt, **kwargs)


class _HTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, attempt: Attempt) -> None:
        super().__init__()
        self._attempt = attempt

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(self._connection, req)  # http.client's default TLS context

    def _connection(self, host: str, **kwargs: Any) -> http.client.HTTPConnection:
        return _StagedHTTPSConnection(host, attempt=self._attempt, **kwargs)


def open_socket(host: str, port: int, attempt: Attempt) -> socket.socket:
    """A TCP connection to `host`, resolution and every address tried within the deadline."""
    failure: OSError = OSError(f"no address for {host}")
    for family, kind, proto, _, address in resolve(host, port, attempt):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(attempt.remaining())
            sock.connect(address)
        except OSError as exc:
            sock.close()
            failure = exc
            continue
        except BaseException:
            sock.close()
            raise
        # As http.client does: the head and body go out without waiting on Nagle.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
    raise failure


_Address = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def resolve(host: str, port: int, attempt: Attempt) -> Sequence[_Address]:
    """getaddrinfo, bounded by the deadline: it cannot be interrupted, so it runs in a
    daemon thread that is left behind (and finishes on its own) if the deadline passes."""
    answers: queue.SimpleQueue[Sequence[_Address] | OSError] = queue.SimpleQueue()

    def lookup() -> None:
        try:
            answers.put(socket.getaddrinfo(host, port, type=socket.SOCK_STREAM))
        except OSError as exc:
            answers.put(exc)

    threading.Thread(target=lookup, name="newsletter-resolve", daemon=True).start()
    try:
        found = answers.get(timeout=attempt.remaining())
    except queue.Empty:
        raise DeadlineExceeded("resolving the host took longer than the deadline") from None
    if isinstance(found, OSError):
        raise found
    return found


class Answer:
    """A complete HTTP answer, read within the deadline; what python_http_client reads."""

    def __init__(self, status: int, body: bytes, headers: Message) -> None:
        self._status, self._body, self._headers = status, body, headers

    def getcode(self) -> int:
        return self._status

    def read(self) -> bytes:
        return self._body

    def info(self) -> Message:
        return self._headers


def exchange(request: urllib.request.Request, attempt: Attempt) -> Answer:
    """Send `request` and read the whole answer within the attempt's deadline.

    Raises python_http_client's HTTPError for an error status (as its client does),
    TransportError for anything else, with the stage it happened in, and
    InterruptedBeforeSending for a Ctrl-C before any of it was written.
    """
    try:
        return _open(request, attempt)
    except python_http_client.exceptions.HTTPError:
        raise
    except Exception as exc:
        raise TransportError(attempt, exc) from None
    except KeyboardInterrupt as exc:
        if attempt.stage <= Stage.CONNECTING:
            # Ctrl-C before a byte of the request was written: nothing can have been
            # accepted, so the batch may go back to `pending` rather than `unknown`. Not
            # once writing began: a signal lands between statements, so it may come just
            # after the last byte left and before the stage says so.
            raise InterruptedBeforeSending from exc
        raise


class Requests:
    """The requests made through one client and the clients built from it: whether any
    began to be written. The library encodes the JSON body and builds the request before
    our transport sees it; a Ctrl-C there is told apart by `untouched`."""

    def __init__(self) -> None:
        self.attempts: list[Attempt] = []

    def begin(self, seconds: float) -> Attempt:
        attempt = Attempt(seconds)
        self.attempts.append(attempt)
        return attempt

    def forget(self) -> None:
        self.attempts.clear()

    @property
    def untouched(self) -> bool:
        """True when no request since `forget` wrote a byte: nothing can have been accepted."""
        return all(attempt.stage <= Stage.CONNECTING for attempt in self.attempts)


def opener(attempt: Attempt) -> urllib.request.OpenerDirector:
    """Our two connections and the error handlers, and nothing else of urllib's defaults.

    No redirect handler: urllib follows a 301/302/303 by turning the POST into a GET, sends
    the Authorization header (the key) to whatever host `Location` names and takes that
    host's answer as SendGrid's. A 3xx comes back as an HTTP error instead. No proxy
    handler: HTTP(S)_PROXY from the environment would send the request somewhere the
    settings do not name (see the README).
    """
    director = urllib.request.OpenerDirector()
    for handler in (
        _HTTPHandler(attempt),
        _HTTPSHandler(attempt),
        urllib.request.HTTPDefaultErrorHandler(),
        urllib.request.HTTPErrorProcessor(),
    ):
        director.add_handler(handler)
    return director


def _open(request: urllib.request.Request, attempt: Attempt) -> Answer:
    try:
        with opener(attempt).open(request, timeout=attempt.remaining()) as response:
            return Answer(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as err:
        with err:
            body = _error_body(err)
        # The library's class for the status (UnauthorizedError...), built from what was read.
        kind = python_http_client.exceptions.err_dict.get(
            err.code, python_http_client.exceptions.HTTPError
        )
        raise kind(err.code, err.reason, body, err.headers) from None


def _error_body(err: urllib.error.HTTPError) -> bytes:
    """The error's body, or none when it cannot be read whole: the status alone still says
    what SendGrid decided (a 401 stops the send, a 429 is retried)."""
    try:
        return err.read()
    except (OSError, http.client.HTTPException):  # cut short, reset, or past the deadline
        return b""


class DeadlineClient(python_http_client.Client):  # type: ignore[misc]  # untyped library
    """python_http_client's client, each request bounded as a whole by its timeout."""

    def __init__(self, *args: Any, requests: Requests | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Shared down the chain (`client.mail.send` builds two more clients).
        self.requests = requests or Requests()

    def _make_request(
        self, opener: Any, request: urllib.request.Request, timeout: float | None = None
    ) -> Answer:
        return exchange(request, self.requests.begin(timeout or self.timeout))

    def _build_client(self, name: str | None = None) -> DeadlineClient:
        # The library's own builds a plain `Client`; keep the subclass down the chain.
        url_path = [*self._url_path, name] if name else self._url_path
        return DeadlineClient(
            host=self.host,
            version=self._version,
            request_headers=self.request_headers,
            url_path=url_path,
            append_slash=self.append_slash,
            timeout=self.timeout,
            requests=self.requests,
        )
