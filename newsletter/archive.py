"""The web copy of a sent issue: what "View in browser" in every email opens."""

from __future__ import annotations

import html
from collections.abc import Callable

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter import db, ledger, placeholders
from newsletter.build import build_issue
from newsletter.config import Settings
from newsletter.issues import ISSUE_NAME
from newsletter.models import Recipient

HELP = (
    "Unsubscribe links are personal, so this public copy cannot unsubscribe you. Use the "
    "Unsubscribe link at the bottom of the email you received."
)


def anonymous_reader(settings: Settings) -> Recipient:
    """The public copy is filled for nobody in particular, and never carries a real token."""
    return Recipient(
        email="",
        first_name="reader",
        unsubscribe_url=f"{settings.base_url.rstrip('/')}/unsubscribe",
    )


def web_copy(settings: Settings, engine: Engine, name: str) -> str | None:
    """The HTML of issue `name` for the web, or None unless it was sent to someone.

    Drafts stay private: an issue appears only once the ledger holds a delivered copy.
    """
    path = settings.path("issues_dir") / f"{name}.yaml"
    if not ISSUE_NAME.match(name) or not path.is_file():
        return None
    with db.reading(engine) as conn:
        if ledger.counts(conn, name).get("sent", 0) == 0:
            return None
    email = build_issue(path, settings)
    return placeholders.fill(email.html, anonymous_reader(settings), part="html", tags=email.tags)


def routes(settings: Settings, engine: Engine, missing: Callable[[], Response]) -> list[Route]:
    """`/issues/<name>/` (the web copy) and `/unsubscribe` (where its footer link points)."""

    async def issue(request: Request) -> Response:
        name = str(request.path_params["name"])
        found = await run_in_threadpool(web_copy, settings, engine, name)
        if found is None:
            return missing()
        # The email's own CSP-free HTML: it has no scripts, and premailer inlined its CSS.
        return HTMLResponse(found, headers={"Cache-Control": "public, max-age=300"})

    async def unsubscribe_help(_request: Request) -> Response:
        return HTMLResponse(
            "<!doctype html><html lang=en><head><meta charset=utf-8><title>Unsubscribe</title>"
            f"</head><body><p>{html.escape(HELP)}</p></body></html>"
        )

    return [
        Route("/issues/{name}/", issue, methods=["GET"]),
        Route("/unsubscribe", unsubscribe_help, methods=["GET"]),
    ]
