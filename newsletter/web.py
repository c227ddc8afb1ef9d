"""The public web endpoints: RFC 8058 one-click unsubscribe, resubscribe, double opt-in.

SendGrid's signed event webhook is mounted here too; it lives in ``newsletter.webhook``.

GETs show a page with a button and change nothing (link scanners and prefetchers follow
GETs); POSTs act. Every bad, foreign or unknown token gets the same 404, and the
subscribe form answers the same whatever the address's state, so no endpoint reveals
whether an address is subscribed.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter import archive, audience, confirmations, db, pages, tokens, webhook
from newsletter.config import Settings
from newsletter.errors import AudienceError, NewsletterError, StorageError, TokenError
from newsletter.mailers import Mailer, get_mailer
from newsletter.message import confirmation
from newsletter.schema import lists

log = logging.getLogger(__name__)

HEADERS = pages.PUBLIC_HEADERS
NOT_FOUND = "This link is not valid. If you copied it from an email, check it is complete."
# A public form has a handful of short fields and never a file (RFC 8058's one-click POST
# may be multipart, but carries one field). The body's size is `form_max_bytes`.
MAX_FIELDS = 8
MAX_FILES = 0
WORKER_POLL = 5.0  # seconds between looks at a queue other processes may also fill


def page(
    template: str, *, status: int = 200, headers: Mapping[str, str] | None = None, **context: Any
) -> Response:
    """The public page `template` (in newsletter/pages/) with the security headers."""
    merged = {**HEADERS, **(headers or {})}
    return pages.response(template, status=status, headers=merged, **context)


def not_found() -> Response:
    return page("not_found.html", status=404, message=NOT_FOUND)


class _App:
    """Handlers bound to one settings object and one engine."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.queued = asyncio.Event()  # wakes the confirmation worker

    async def run(self, write: bool, work: Callable[[Connection], Any]) -> Any:
        def call() -> Any:
            opener = db.writing if write else db.reading
            with opener(self.engine) as conn:
                return work(conn)

        return await run_in_threadpool(call)

    async def claims(self, request: Request, purpose: tokens.Purpose) -> tuple[int, str] | None:
        """(subscriber id, list) named by the token in the path, or None for any bad token."""
        try:
            claims = tokens.verify(self.settings, purpose, request.path_params["token"])
        except TokenError:
            return None

        def lookup(conn: Connection) -> tuple[int, str] | None:
            sid = audience.subscriber_id_for(conn, claims.public_id)
            known = conn.execute(select(lists.c.id).where(lists.c.name == claims.list_name))
            if sid is None or known.first() is None:
                return None
            return sid, claims.list_name

        found: tuple[int, str] | None = await self.run(False, lookup)
        return found

    # --- unsubscribe --------------------------------------------------------------------

    async def unsubscribe_page(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        return page("unsubscribe.html", list_name=found[1], action=request.url.path)

    async def unsubscribe(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        submitted = await read_form(request)
        if submitted.get("List-Unsubscribe") != "One-Click":
            message = "The request must carry List-Unsubscribe=One-Click (RFC 8058)."
            return page("bad_request.html", status=400, message=message)
        sid, list_name = found
        await self.run(
            True,
            lambda conn: audience.unsubscribe(
                conn, sid, list_name, detail="one-click unsubscribe", source="web"
            ),
        )
        again = request.url_for("resubscribe", token=request.path_params["token"]).path
        return page("unsubscribed.html", list_name=list_name, again=again)

    async def resubscribe_page(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        return page("resubscribe.html", list_name=found[1], action=request.url.path)

    async def resubscribe(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        sid, list_name = found
        await read_form(request)  # capped like every public form, though nothing is read
        done = await self.run(True, lambda conn: audience.resubscribe(conn, sid, list_name))
        if not done:
            return page("not_resubscribed.html", status=409, list_name=list_name)
        return page("resubscribed.html", list_name=list_name)

    # --- double opt-in ------------------------------------------------------------------

    async def subscribe_page(self, request: Request) -> Response:
        list_name = request.query_params.get("list", "weekly")
        return page("subscribe.html", list_name=list_name, action=request.url.path)

    async def subscribe(self, request: Request) -> Response:
        submitted = await read_form(request)
        email, name, list_name = (
            str(submitted.get(key, default)) for key, default in (
                ("email", ""), ("name", ""), ("list", "weekly")
            )
        )  # fmt: skip
        try:
            address = audience.normalize_email(email)
            audience.check_header_text("name", name.strip(), audience.MAX_NAME)
            if not (webhook.storable(email) and webhook.storable(name)):
                raise AudienceError("The form holds a NUL or an unpaired surrogate; retype it.")
        except AudienceError as exc:
            return page("check_form.html", status=400, message=str(exc))
        peer = request.client.host if request.client else ""
        client = confirmations.client_key(self.settings, peer, request.headers.items())
        refused = await self.run(
            True,
            lambda conn: confirmations.request(
                conn, self.settings, client, address, name.strip(), list_name
            ),
        )
        if refused is not None:
            minutes = -(-refused.retry_after // 60)
            headers = {"Retry-After": str(refused.retry_after)}
            return page("please_wait.html", status=429, headers=headers, minutes=minutes)
        self.queued.set()
        # The same answer whatever the address's state and whether the list exists or is
        # public: the confirmation, if any, is mailed by the worker after this response.
        return page("check_inbox.html")

    async def send_confirmations(self, stop: asyncio.Event, mailer: Mailer) -> None:
        """The confirmation worker: send a batch of the queue; unless the batch was full,
        wait for a new post or WORKER_POLL (so a failed send is retried seconds later).

        Nothing may end it but `stop`: a form that says "on its way" needs a live worker.
        """
        while not stop.is_set():
            self.queued.clear()
            try:
                handled = await run_in_threadpool(
                    confirmations.send_due, self.settings, self.engine, mailer, confirmation
                )
            except NewsletterError as exc:  # the database is down: try again later
                log.warning("The confirmation queue could not be sent: %s", exc)
                handled = 0
            except Exception:  # a bug: log it and keep the queue moving
                log.exception("The confirmation worker failed a pass; it carries on")
                handled = 0
            if handled >= confirmations.BATCH:
                continue
            waits = [asyncio.ensure_future(e.wait()) for e in (stop, self.queued)]
            await asyncio.wait(waits, timeout=WORKER_POLL, return_when=asyncio.FIRST_COMPLETED)
            for waiting in waits:
                waiting.cancel()

    async def confirm_page(self, request: Request) -> Response:
        found = await self.claims(request, "confirm")
        if found is None:
            return not_found()
        return page("confirm.html", list_name=found[1], action=request.url.path)

    async def confirm(self, request: Request) -> Response:
        found = await self.claims(request, "confirm")
        if found is None:
            return not_found()
        await read_form(request)  # capped like every public form, though nothing is read
        sid, list_name = found
        confirmed = await self.run(True, lambda conn: confirmations.confirm(conn, sid, list_name))
        if not confirmed:  # confirmed already, or unsubscribed since: the link is spent
            return not_found()
        return page("subscribed.html", list_name=list_name)


def _report_dead_worker(worker: asyncio.Task[None]) -> None:
    """Log a confirmation worker that ended with an error (it should end only on stop)."""
    if not worker.cancelled() and worker.exception() is not None:
        log.error(
            "The confirmation worker stopped; no confirmation is sent until serve restarts",
            exc_info=worker.exception(),
        )


def drain_confirmations(settings: Settings, engine: Engine) -> int:
    """Send every queued confirmation now (the worker's pass; tests call it directly)."""
    return confirmations.drain(settings, engine, get_mailer(settings), confirmation)


async def read_form(request: Request) -> FormData:
    """The posted form, within MAX_FIELDS fields and no files (the body cap is BodyCap's)."""
    return await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS)


class _TooLarge(Exception):
    pass


class BodyCap:
    """Refuse a request body over its route's cap with 413, announced or streamed.

    The webhook has its own cap (SendGrid's batches are large); every other public route
    takes at most `form_max_bytes`. Applied to every route, so one added later is capped too.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = webhook.MAX_BODY if scope["path"] == webhook.PATH else self.limit
        announced = dict(scope["headers"]).get(b"content-length", b"")
        if announced.isdigit() and int(announced) > limit:
            await _too_large(limit)(scope, receive, send)
            return
        seen = 0
        started = False

        async def capped_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, capped_receive, watched_send)
        except _TooLarge:
            if started:
                raise
            await _too_large(limit)(scope, receive, send)


def _too_large(limit: int) -> Response:
    return page("too_large.html", status=413, limit=limit)


# Tokens are bearer credentials: they stay out of the access log (and whatever ships it).
_TOKEN_PATH = re.compile(r"^(/u/|/confirm/)[^/?\s]+")


class RedactTokens(logging.Filter):
    """Rewrites uvicorn's access-log path `/u/<token>...` to `/u/[token]...`."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            path = _TOKEN_PATH.sub(r"\1[token]", args[2])
            record.args = (*args[:2], path, *args[3:])
        return True


def log_config() -> dict[str, object]:
    """uvicorn's own logging configuration, with RedactTokens on the access log."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    config["handlers"]["access"]["filters"] = ["redact_tokens"]
    return config


def create_app(settings: Settings, *, send_confirmations: bool = True) -> Starlette:
    """The app for `newsletter serve`; the database is migrated when it starts.

    Its lifespan runs the confirmation worker (`send_confirmations=False` leaves the queue
    to `drain_confirmations`, for tests that want to say when mail goes out).
    """
    tokens.sign(settings, "unsubscribe", "-", "-")  # fail at start-up when no key is set
    # Built now, so a bad mailer setting stops `serve` before it listens, rather than
    # the worker dying silently while the form says a confirmation is on its way.
    mailer = get_mailer(settings)
    engine = db.connect(settings)
    handlers = _App(settings, engine)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        handlers.queued = asyncio.Event()  # bound to this server's event loop
        worker = None
        if send_confirmations:
            worker = asyncio.create_task(handlers.send_confirmations(stop, mailer))
            worker.add_done_callback(_report_dead_worker)
        try:
            yield
        finally:
            stop.set()  # the worker finishes the message in hand, then stops
            if worker is not None:
                await worker
            engine.dispose()

    async def missing(request: Request, _exc: Exception) -> Response:
        return slash_redirect(settings, app, request) or not_found()

    async def bad_request(_request: Request, exc: Exception) -> Response:
        detail = exc.detail if isinstance(exc, HTTPException) else "The request is malformed."
        return page("bad_request.html", status=400, message=str(detail))

    async def unavailable(_request: Request, exc: Exception) -> Response:
        log.warning("Storage error while serving a request: %s", exc)
        return page("unavailable.html", status=503)

    routes = [
        Route("/u/{token}", handlers.unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", handlers.unsubscribe, methods=["POST"]),
        Route("/u/{token}/resubscribe", handlers.resubscribe_page, methods=["GET"]),
        Route("/u/{token}/resubscribe", handlers.resubscribe, methods=["POST"], name="resubscribe"),
        Route("/subscribe", handlers.subscribe_page, methods=["GET"]),
        Route("/subscribe", handlers.subscribe, methods=["POST"]),
        Route("/confirm/{token}", handlers.confirm_page, methods=["GET"]),
        Route("/confirm/{token}", handlers.confirm, methods=["POST"]),
        *archive.routes(settings, engine, not_found),
        *webhook.routes(settings, engine),
    ]
    handlers_for: dict[Any, Any] = {404: missing, 400: bad_request, StorageError: unavailable}
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers_for)
    # Starlette's own slash redirect echoes the request's Host; `missing` builds it from
    # base_url instead.
    app.router.redirect_slashes = False
    app.add_middleware(BodyCap, limit=settings.form_max_bytes)
    return app


def slash_redirect(settings: Settings, app: Starlette, request: Request) -> Response | None:
    """A redirect to the same path with its trailing slash added or removed, when that path
    exists; always on base_url, never on the Host the request named."""
    path = request.url.path
    if path == "/":
        return None
    other = path.rstrip("/") if path.endswith("/") else path + "/"
    scope = {**request.scope, "path": other}
    if not any(route.matches(scope)[0] is not Match.NONE for route in app.routes):
        return None
    query = f"?{request.url.query}" if request.url.query else ""
    return RedirectResponse(f"{settings.base_url.rstrip('/')}{other}{query}")
