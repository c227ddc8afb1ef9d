"""The public web endpoints: RFC 8058 one-click unsubscribe, resubscribe, double opt-in.

SendGrid's signed event webhook is mounted here too; it lives in ``newsletter.webhook``.

GETs show a page with a button and change nothing (link scanners and prefetchers follow
GETs); POSTs act. Every bad, foreign or unknown token gets the same 404, and the
subscribe form answers the same whatever the address's state, so no endpoint reveals
whether an address is subscribed.
"""

from __future__ import annotations

import html
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import Connection, Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter import archive, audience, db, tokens, webhook
from newsletter.config import Settings
from newsletter.errors import AudienceError, MailerError, StorageError, TokenError
from newsletter.mailer import get_mailer
from newsletter.message import confirmation
from newsletter.schema import lists

log = logging.getLogger(__name__)

HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the token is in the URL
    "X-Robots-Tag": "noindex",
    "X-Frame-Options": "DENY",  # nobody may frame the unsubscribe button
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'",
}
NOT_FOUND = "This link is not valid. If you copied it from an email, check it is complete."


def page(title: str, body: str, status: int = 200, task: BackgroundTask | None = None) -> Response:
    """A small HTML page; `body` is HTML the caller has already escaped."""
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:16px/1.5 system-ui,sans-serif;max-width:32em;margin:3em auto;"
        "padding:0 1em}button{font-size:1em;padding:.5em 1.2em}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=HEADERS, background=task)


def form(action: str, label: str, fields: dict[str, str] | None = None) -> str:
    hidden = "".join(
        f'<input type=hidden name="{html.escape(k)}" value="{html.escape(v)}">'
        for k, v in (fields or {}).items()
    )
    return (
        f'<form method=post action="{html.escape(action)}">{hidden}'
        f"<button type=submit>{html.escape(label)}</button></form>"
    )


def not_found() -> Response:
    return page("Link not valid", f"<p>{html.escape(NOT_FOUND)}</p>", status=404)


class _App:
    """Handlers bound to one settings object and one engine."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

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
            sid = audience.subscriber_id_for(conn, claims.subscriber_id)
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
        body = f"<p>Stop receiving <b>{html.escape(found[1])}</b>?</p>" + form(
            request.url.path, "Unsubscribe", {"List-Unsubscribe": "One-Click"}
        )
        return page("Unsubscribe", body)

    async def unsubscribe(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        submitted = await request.form()
        if submitted.get("List-Unsubscribe") != "One-Click":
            body = "<p>The request must carry List-Unsubscribe=One-Click (RFC 8058).</p>"
            return page("Bad request", body, status=400)
        sid, list_name = found
        await self.run(
            True,
            lambda conn: audience.unsubscribe(
                conn, sid, list_name, detail="one-click unsubscribe", source="web"
            ),
        )
        again = request.url_for("resubscribe", token=request.path_params["token"]).path
        body = (
            f"<p>You will no longer receive <b>{html.escape(list_name)}</b>.</p>"
            "<p>Clicked by mistake?</p>" + form(again, "Resubscribe")
        )
        return page("Unsubscribed", body)

    async def resubscribe_page(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        body = f"<p>Receive <b>{html.escape(found[1])}</b> again?</p>"
        return page("Resubscribe", body + form(request.url.path, "Resubscribe"))

    async def resubscribe(self, request: Request) -> Response:
        found = await self.claims(request, "unsubscribe")
        if found is None:
            return not_found()
        sid, list_name = found
        await self.run(True, lambda conn: audience.resubscribe(conn, sid, list_name))
        return page("Resubscribed", f"<p>Welcome back to <b>{html.escape(list_name)}</b>.</p>")

    # --- double opt-in ------------------------------------------------------------------

    async def subscribe_page(self, request: Request) -> Response:
        list_name = request.query_params.get("list", "weekly")
        body = (
            f'<form method=post action="{html.escape(request.url.path)}">'
            f'<input type=hidden name=list value="{html.escape(list_name)}">'
            "<p><label>Email <input type=email name=email required></label></p>"
            "<p><label>Name <input name=name></label></p>"
            "<button type=submit>Subscribe</button></form>"
        )
        return page("Subscribe", body)

    async def subscribe(self, request: Request) -> Response:
        submitted = await request.form()
        email, name, list_name = (
            str(submitted.get(key, default)) for key, default in (
                ("email", ""), ("name", ""), ("list", "weekly")
            )
        )  # fmt: skip
        try:
            address = audience.normalize_email(email)
            audience.check_header_text("name", name.strip(), audience.MAX_NAME)
        except AudienceError as exc:
            return page("Please check the form", f"<p>{html.escape(str(exc))}</p>", status=400)
        try:
            pending = await self.run(
                True,
                lambda conn: audience.request_subscription(conn, address, name.strip(), list_name),
            )
        except AudienceError:
            return page("Unknown list", "<p>There is no such newsletter.</p>", status=400)
        task = BackgroundTask(self.send_confirmation, pending) if pending else None
        # The same answer whether the address is new, pending, subscribed or suppressed.
        body = "<p>If the address can subscribe, a confirmation link is on its way to it.</p>"
        return page("Check your inbox", body, task=task)

    def send_confirmation(self, pending: tuple[str, str, str, str]) -> None:
        try:
            get_mailer(self.settings).send_message(confirmation(self.settings, *pending))
        except MailerError as exc:
            # After the response, so the answer cannot reveal anything; the form can be resent.
            log.warning("The confirmation message could not be sent: %s", exc)

    async def confirm_page(self, request: Request) -> Response:
        found = await self.claims(request, "confirm")
        if found is None:
            return not_found()
        body = f"<p>Confirm your subscription to <b>{html.escape(found[1])}</b>.</p>"
        return page("Confirm", body + form(request.url.path, "Confirm"))

    async def confirm(self, request: Request) -> Response:
        found = await self.claims(request, "confirm")
        if found is None:
            return not_found()
        sid, list_name = found
        confirmed = await self.run(
            True, lambda conn: audience.confirm_subscription(conn, sid, list_name)
        )
        if not confirmed:  # confirmed already, or unsubscribed since: the link is spent
            return not_found()
        return page("Subscribed", f"<p>You are subscribed to <b>{html.escape(list_name)}</b>.</p>")


def create_app(settings: Settings) -> Starlette:
    """The app for `newsletter serve`; the database is migrated when it starts."""
    tokens.sign(settings, "unsubscribe", "-", "-")  # fail at start-up when no key is set
    engine = db.connect(settings)
    handlers = _App(settings, engine)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        engine.dispose()

    async def missing(_request: Request, _exc: Exception) -> Response:
        return not_found()

    async def unavailable(_request: Request, exc: Exception) -> Response:
        log.warning("Storage error while serving a request: %s", exc)
        body = "<p>Please try again in a minute; nothing was changed.</p>"
        return page("Temporarily unavailable", body, status=503)

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
    handlers_for: dict[Any, Any] = {404: missing, StorageError: unavailable}
    return Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers_for)
