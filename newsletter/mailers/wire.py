"""The HTTP transport under the `sendgrid` client: one deadline for a whole request, and
how far the request got when it failed.

python_http_client opens every request through urllib, whose timeout bounds each socket
operation: a server that dribbles its answer one byte a second never trips a 2 s timeout.
Its `Client._make_request` is the seam its own docstring sets apart for replacing the call,
so `DeadlineClient` overrides it and opens the request through its own
urllib handlers instead of replacing the `sendgrid` package. Their connections set the
socket timeout to what is left of the deadline before every connect, write and read, and
record the request's `Stage` as it advances. A failure is re-raised as `TransportError`
carrying that stage, so the mailer can tell "nothing can have been accepted" (before the
whole body was written) from "it may have been" (after).
"""

from __future__ import annotations

import enum
import http.client
import io
import time
import urllib.error
import urllib.request
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
        self.attempt.reach(Stage.CONNECTING)
        self.timeout = self.attempt.remaining()
        super().connect()
        self.attempt.reach(Stage.WRITING)

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


def exchange(request: urllib.request.Request, seconds: float) -> Answer:
    """Send `request` and read the whole answer within `seconds`.

    Raises python_http_client's HTTPError for an error status (as its client does),
    TransportError for anything else, with the stage it happened in, and
    InterruptedBeforeSending for a Ctrl-C before any of it was written.
    """
    attempt = Attempt(seconds)
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


def _open(request: urllib.request.Request, attempt: Attempt) -> Answer:
    opener = urllib.request.build_opener(_HTTPHandler(attempt), _HTTPSHandler(attempt))
    try:
        with opener.open(request, timeout=attempt.remaining()) as response:
            return Answer(response.status, response.read(), response.headers)
    except urllib.error.HTTPError as err:
        with err:
            error = python_http_client.exceptions.handle_error(err)  # reads the body
        error.__cause__ = None
        raise error from None


class DeadlineClient(python_http_client.Client):  # type: ignore[misc]  # untyped library
    """python_http_client's client, each request bounded as a whole by its timeout."""

    def _make_request(
        self, opener: Any, request: urllib.request.Request, timeout: float | None = None
    ) -> Answer:
        return exchange(request, timeout or self.timeout)

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
        )
