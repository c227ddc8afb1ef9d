"""The web copy of a sent issue: what "View in browser" in every email opens; and the archive.

Served from the copy stored when the issue was sent (`newsletter.copies`), never rendered
from today's files, and filled once per content for an anonymous reader, then kept in
memory: a GET costs one primary-key lookup, so web copies cannot slow unsubscribes.
The archive's indexes and feeds (`/archive/...`) are the pages `newsletter archive build`
writes, made by the same functions (`newsletter.site`), so one URL scheme serves both.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from newsletter import copies, db, pages, site
from newsletter.config import Settings
from newsletter.errors import StorageError
from newsletter.issues import ISSUE_NAME

# Filled pages kept in memory, one per (issue, content hash): ~100 KB each for the sample.
CACHED_COPIES = 64


def public_html(copy: copies.StoredCopy, settings: Settings) -> bytes:
    """The stored HTML filled for the anonymous reader: the exact bytes the page serves."""
    return site.public_html(copy.html, copy.tags, settings)


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
        *archive_routes(settings, engine, missing),
    ]


# The archive is public and meant to be found: cached and indexable, but never framed,
# scripted or sent on as a referrer.
ARCHIVE_HEADERS = {
    "Cache-Control": "public, max-age=300",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
}
ATOM = "application/atom+xml; charset=utf-8"


def archive_routes(
    settings: Settings, engine: Engine, missing: Callable[[], Response]
) -> list[Route]:
    """`/archive/`, `/archive/<list>/`, its index and feed per language, and edition pages."""

    received: set[str] = set()  # issues someone has: the ledger is asked once for each

    def built(page: Callable[[site.Catalogue], bytes | None]) -> bytes | None:
        with db.reading(engine) as conn:
            return page(site.catalogue(conn, db.now(), received))

    async def answer(page: Callable[[site.Catalogue], bytes | None], kind: str) -> Response:
        found = await run_in_threadpool(built, page)
        if found is None:
            return missing()
        return Response(found, media_type=kind, headers=ARCHIVE_HEADERS)

    async def home(_request: Request) -> Response:
        return await answer(lambda found: site.home_page(settings, found), "text/html")

    async def one_list(request: Request) -> Response:
        name = str(request.path_params["list"])

        def page(found: site.Catalogue) -> bytes | None:
            if name not in site.archived_lists(found):
                return None
            return site.list_page(settings, found, name)

        return await answer(page, "text/html")

    def shelf(
        request: Request, make: Callable[..., bytes]
    ) -> Callable[[site.Catalogue], bytes | None]:
        name, language = str(request.path_params["list"]), str(request.path_params["lang"])

        def page(found: site.Catalogue) -> bytes | None:
            if not found.shelf(name, language) or name not in found.lists:
                return None
            return make(settings, found, name, language)

        return page

    async def index(request: Request) -> Response:
        return await answer(shelf(request, site.index_page), "text/html")

    async def feed(request: Request) -> Response:
        return await answer(shelf(request, site.feed), ATOM)

    async def edition(request: Request) -> Response:
        name, wanted = str(request.path_params["name"]), str(request.path_params["edition"])

        def page(found: site.Catalogue) -> bytes | None:
            for entry in found.entries:
                if entry.issue == name and entry.edition == wanted and wanted:
                    with db.reading(engine) as conn:
                        return site.issue_page(conn, settings, entry)
            return None

        return await answer(page, "text/html")

    return [
        Route("/archive/", home, methods=["GET"]),
        Route("/archive/{list}/", one_list, methods=["GET"]),
        Route("/archive/{list}/{lang}/", index, methods=["GET"]),
        Route("/archive/{list}/{lang}/feed.atom", feed, methods=["GET"]),
        Route("/issues/{name}/{edition}/", edition, methods=["GET"]),
    ]
