"""The web copy of a sent issue: what "View in browser" in every email opens.

Served from the copy stored when the issue was sent (`newsletter.copies`), never rendered
from today's files, and filled once per content for an anonymous reader, then kept in
memory: a GET costs one primary-key lookup, so web copies cannot slow unsubscribes.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter import copies, db, pages, placeholders
from newsletter.config import Settings
from newsletter.errors import StorageError
from newsletter.issues import ISSUE_NAME
from newsletter.readers import anonymous_reader

# Filled pages kept in memory, one per (issue, content hash): ~100 KB each for the sample.
CACHED_COPIES = 64


def public_html(copy: copies.StoredCopy, settings: Settings) -> bytes:
    """The stored HTML filled for the anonymous reader: the exact bytes the page serves."""
    reader = anonymous_reader(settings)
    return placeholders.fill(copy.html, reader, part="html", tags=copy.tags).encode("utf-8")


class _Replaced(Exception):
    """The copy changed between reading its hash and reading it (a rerun just stored one)."""


class WebCopies:
    """The public pages of sent issues for one server, filled once per content."""

    def __init__(self, settings: Settings, engine: Engine, cached: int = CACHED_COPIES) -> None:
        self._settings = settings
        self._engine = engine
        # Once someone has an issue, nobody can take it back: no need to ask the ledger again.
        self._delivered: set[str] = set()
        self._filled = lru_cache(maxsize=cached)(self._fill)

    def page(self, name: str) -> bytes | None:
        """The web copy of issue `name`, or None: unknown, not yet received, or not a name."""
        if not ISSUE_NAME.fullmatch(name):
            return None
        for _attempt in range(3):
            content_hash = self._public_hash(name)
            if content_hash is None:
                return None
            try:
                return self._filled(name, content_hash)
            except _Replaced:
                continue  # a rerun stored another copy between the two reads: read again
        raise StorageError(f"The stored copy of {name} kept changing while read; try again.")

    def _public_hash(self, name: str) -> str | None:
        """The content hash of the issue's copy if somebody has received it, else None."""
        with db.reading(self._engine) as conn:
            content_hash = copies.current_hash(conn, name)
            if content_hash is None:
                return None
            if name not in self._delivered:
                if not copies.delivered(conn, name, db.now()):
                    return None
                self._delivered.add(name)
        return content_hash

    def _fill(self, name: str, content_hash: str) -> bytes:
        # An exception is not cached by lru_cache: a replaced copy is read afresh next time.
        with db.reading(self._engine) as conn:
            copy = copies.load(conn, name)
        if copy is None or copy.content_hash != content_hash:
            raise _Replaced(name)
        return public_html(copy, self._settings)


def routes(settings: Settings, engine: Engine, missing: Callable[[], Response]) -> list[Route]:
    """`/issues/<name>/` (the web copy) and `/unsubscribe` (where its footer link points)."""
    web_copies = WebCopies(settings, engine)

    async def issue(request: Request) -> Response:
        name = str(request.path_params["name"])
        found = await run_in_threadpool(web_copies.page, name)
        if found is None:
            return missing()
        # The email's own CSP-free HTML: it has no scripts, and premailer inlined its CSS.
        return HTMLResponse(found, headers={"Cache-Control": "public, max-age=300"})

    async def unsubscribe_help(_request: Request) -> Response:
        # The public pages' layout and security headers: this page has no token to guard,
        # but nothing else should frame, index or script it either.
        return pages.response("unsubscribe_help.html", headers=pages.PUBLIC_HEADERS)

    return [
        Route("/issues/{name}/", issue, methods=["GET"]),
        Route("/unsubscribe", unsubscribe_help, methods=["GET"]),
    ]
