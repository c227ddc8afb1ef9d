"""The editor's live preview: a Starlette app that renders issues and reloads them on save."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from newsletter import pages, placeholders
from newsletter.build import Checked, Gates, check_file, check_gates
from newsletter.config import Settings
from newsletter.errors import IssueError, NewsletterError, PreviewError, Problem
from newsletter.issues import ISSUE_NAME
from newsletter.models import Recipient
from newsletter.readers import made_up_reader, previewed_subscriber, sample_reader

log = logging.getLogger("newsletter.preview")

PHONE_WIDTH = 375
DESKTOP_WIDTH = 640
WATCHED_SUFFIXES = {".yaml", ".yml", ".md", ".j2"}
KEEPALIVE_SECONDS = 15.0

Lookup = Callable[[str], Recipient | None]


@dataclass(frozen=True)
class Failure:
    """Why an issue did not build: one line per problem, each naming file and line."""

    title: str
    lines: tuple[str, ...]
    status: int


class Desk:
    """Builds issues on demand and keeps each result until a watched file changes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.generation = 0
        self._cache: dict[str, tuple[int, Checked | Failure]] = {}
        self._lock = threading.Lock()  # one render at a time; concurrent requests share it
        # The gates start Chromium (seconds): computed when the page asks for them, after
        # it has shown, and kept per generation like the renders; a lock of their own so a
        # save's re-render never waits for a browser.
        self._gates: dict[str, tuple[int, Gates | Failure]] = {}
        self._gates_lock = threading.Lock()
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()

    def issue_path(self, name: str) -> Path | None:
        path = self.settings.path("issues_dir") / f"{name}.yaml"
        return path if ISSUE_NAME.fullmatch(name) and path.is_file() else None

    def issue_names(self) -> list[str]:
        return sorted(p.stem for p in self.settings.path("issues_dir").glob("*.yaml"))

    def index_rows(self) -> list[tuple[str, str, bool]]:
        """(name, subject or first problem, parses) per issue file: parsed, not rendered."""
        from newsletter.build import read_spec

        rows = []
        for name in self.issue_names():
            spec, problems = read_spec(self.settings.path("issues_dir") / f"{name}.yaml")
            errors = [p for p in problems if p.severity == "error"]
            if spec is None or errors:
                rows.append((name, str(errors[0]) if errors else "cannot be read", False))
            else:
                rows.append((name, spec.subject, True))
        return rows

    def result(self, name: str) -> Checked | Failure:
        with self._lock:
            generation = self.generation
            cached = self._cache.get(name)
            if cached and cached[0] == generation:
                return cached[1]
            outcome = self._build(name)
            self._cache[name] = (generation, outcome)
            return outcome

    def gates(self, name: str) -> Gates | Failure:
        """The accessibility and client-support reports of the issue as last built."""
        with self._gates_lock:
            generation = self.generation
            cached = self._gates.get(name)
            if cached and cached[0] == generation:
                return cached[1]
            outcome = self.result(name)
            gates = outcome if isinstance(outcome, Failure) else self._run_gates(outcome)
            self._gates[name] = (generation, gates)
            return gates

    def _run_gates(self, checked: Checked) -> Gates | Failure:
        try:
            return check_gates(checked, self.settings)
        except NewsletterError as exc:
            return Failure("The gates did not run", tuple(str(exc).splitlines()), 500)

    def _build(self, name: str) -> Checked | Failure:
        path = self.issue_path(name)
        if path is None:
            return Failure(
                f"No issue named '{name}'",
                (
                    f"There is no {self.settings.issues_dir}/{name}.yaml (deleted or renamed?). "
                    "The index lists the issues there.",
                ),
                404,
            )
        try:
            return check_file(path, self.settings)
        except IssueError as exc:
            return Failure("The issue definition has problems", _problem_lines(exc.problems), 422)
        except NewsletterError as exc:
            return Failure("The issue does not build", tuple(str(exc).splitlines()), 500)
        except Exception as exc:  # the preview must survive anything a half-saved file causes
            log.exception("unexpected error while building %s", name)
            return Failure(
                "Unexpected error while building the issue", (f"{type(exc).__name__}: {exc}",), 500
            )

    def changed(self, files: Iterable[str]) -> None:
        """Called by the watcher: tell every open page to reload.

        No lock: the cached results carry the generation they were built at, so bumping it
        makes them stale without waiting here (on the event loop) for a render to finish.
        """
        self.generation += 1
        event = {"generation": self.generation, "files": sorted(files)}
        for queue in list(self._listeners):
            queue.put_nowait(event)

    def close(self) -> None:
        """End every open event stream (the server is stopping; pages reconnect later)."""
        for queue in list(self._listeners):
            queue.put_nowait({})

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any]]) -> None:
        self._listeners.discard(queue)


def _problem_lines(problems: Iterable[Problem]) -> tuple[str, ...]:
    return tuple(str(p) for p in problems)


# ---- the watcher --------------------------------------------------------------------------


def watched_dirs(settings: Settings) -> list[Path]:
    names = ("templates_dir", "issues_dir", "content_dir")
    return [settings.path(n) for n in names if settings.path(n).is_dir()]


def _relevant(_change: object, path: str) -> bool:
    # Editors write swap and backup files next to the real one; those are not saves.
    name = Path(path).name
    return Path(path).suffix in WATCHED_SUFFIXES and not name.startswith((".", "#"))


async def watch(desk: Desk, stop: asyncio.Event) -> None:
    """Bump the desk's generation on every save under the watched folders until `stop`."""
    from watchfiles import awatch

    dirs = watched_dirs(desk.settings)
    if not dirs:
        log.warning("nothing to watch: none of templates/, issues/, content/ exists")
        return
    # step: how long a burst of events may stay quiet before it is reported (default 50 ms);
    # an editor's save is one burst, and 30 ms keeps the reload well under the budget.
    try:
        async for changes in awatch(
            *dirs, watch_filter=_relevant, stop_event=stop, step=30, rust_timeout=1000
        ):
            desk.changed(_relative(Path(path), desk.settings.root) for _, path in changes)
    except Exception:  # e.g. a watched folder removed: pages still render, without reloads
        log.exception("the file watcher stopped; restart the preview to get live reload back")


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


# ---- the app ------------------------------------------------------------------------------


def create_app(
    settings: Settings,
    *,
    lookup: Lookup | None = None,
    watch_files: bool = True,
    warm: str | None = None,
) -> Starlette:
    """The preview app. `lookup` finds a subscriber by address for "render as"; `warm` is
    the issue rendered at start (default: the last one), so the first save is quick."""
    desk = Desk(settings)
    pages = _Pages(desk, lookup)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[Any]] = []
        if watch_files:
            tasks.append(asyncio.create_task(watch(desk, stop)))
        # The first render imports and compiles everything (~0.4 s): do it before anyone waits.
        names = desk.issue_names()
        first = warm or (names[-1] if names else None)
        if first:
            tasks.append(asyncio.create_task(run_in_threadpool(desk.result, first)))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    routes = [
        Route("/", pages.index),
        Route("/events", pages.events),
        Route("/issues/{name}", pages.issue),
        Route("/issues/{name}/email.html", pages.email_html),
        Route("/issues/{name}/email.txt", pages.email_text),
        Route("/issues/{name}/report.json", pages.report),
        Route("/issues/{name}/gates", pages.gates),
        Route("/issues/{name}/gates.json", pages.gates_json),
    ]
    # The preview shows subscribers' data ("render as"): only this machine may ask, and a
    # page elsewhere cannot reach it through DNS rebinding (it would send its own Host).
    hosts = sorted({"127.0.0.1", "localhost", "[::1]", settings.preview_host})
    middleware = [Middleware(TrustedHostMiddleware, allowed_hosts=hosts)]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.desk = desk
    return app


class _Pages:
    """The endpoints; each builds (or reuses) the issue in a worker thread."""

    def __init__(self, desk: Desk, lookup: Lookup | None) -> None:
        self.desk = desk
        self.lookup = lookup

    async def index(self, request: Request) -> Response:
        rows = await run_in_threadpool(self.desk.index_rows)
        return _page(
            "preview/index.html",
            rows=rows,
            generation=self.desk.generation,
            issues_dir=self.desk.settings.issues_dir,
        )

    async def issue(self, request: Request) -> Response:
        name = request.path_params["name"]
        outcome = await run_in_threadpool(self.desk.result, name)
        if isinstance(outcome, Failure):
            return _failure(name, outcome, self.desk.generation)
        recipient, notice = self.recipient(request)
        options = _options(request)
        return _page(
            "preview/issue.html",
            name=name,
            email=outcome.email,
            report=outcome.report,
            findings=[
                (p.severity, _where(p, self.desk.settings.root), p.message)
                for p in outcome.report.problems
            ],
            text=placeholders.fill(
                outcome.email.text, recipient, part="text", tags=outcome.email.tags
            ),
            query=_query(options),
            options=options,
            notice=notice,
            generation=self.desk.generation,
            phone=PHONE_WIDTH,
            desktop=DESKTOP_WIDTH,
        )

    async def email_html(self, request: Request) -> Response:
        outcome = await run_in_threadpool(self.desk.result, request.path_params["name"])
        if isinstance(outcome, Failure):
            return _failure(request.path_params["name"], outcome, self.desk.generation)
        recipient, _ = self.recipient(request)
        html = placeholders.fill(
            outcome.email.html, recipient, part="html", tags=outcome.email.tags
        )
        if request.query_params.get("dark"):
            html = force_dark(html)
        return HTMLResponse(html)

    async def email_text(self, request: Request) -> Response:
        outcome = await run_in_threadpool(self.desk.result, request.path_params["name"])
        if isinstance(outcome, Failure):
            return PlainTextResponse("\n".join(outcome.lines), status_code=outcome.status)
        recipient, _ = self.recipient(request)
        text = placeholders.fill(
            outcome.email.text, recipient, part="text", tags=outcome.email.tags
        )
        return PlainTextResponse(text)

    async def report(self, request: Request) -> Response:
        outcome = await run_in_threadpool(self.desk.result, request.path_params["name"])
        if isinstance(outcome, Failure):
            body = {"error": outcome.title, "problems": list(outcome.lines)}
            return Response(json.dumps(body), outcome.status, media_type="application/json")
        return Response(json.dumps(outcome.report.as_dict()), media_type="application/json")

    async def gates(self, request: Request) -> Response:
        """The gates' findings as a fragment of the issue page, which loads it after it
        shows; each finding carries the selector of its element for the frames to outline."""
        outcome = await run_in_threadpool(self.desk.gates, request.path_params["name"])
        if isinstance(outcome, Failure):
            return _page("preview/gates.html", status=outcome.status, failure=outcome)
        root = self.desk.settings.root
        return _page(
            "preview/gates.html",
            failure=None,
            accessibility=outcome.accessibility,
            findings=[(f, _short_path(f.source, root)) for f in outcome.accessibility.findings],
            clients=[
                (family, outcome.clients.for_client(family.key))
                for family in outcome.clients.families
            ],
            dataset=outcome.clients.dataset,
        )

    async def gates_json(self, request: Request) -> Response:
        outcome = await run_in_threadpool(self.desk.gates, request.path_params["name"])
        if isinstance(outcome, Failure):
            body = {"error": outcome.title, "problems": list(outcome.lines)}
            return Response(json.dumps(body), outcome.status, media_type="application/json")
        return Response(json.dumps(outcome.as_dict()), media_type="application/json")

    async def events(self, request: Request) -> Response:
        since = request.query_params.get("since", "")
        # sse-starlette frames the events, sends the keep-alive comments between them and
        # ends the stream when uvicorn shuts down.
        return EventSourceResponse(
            self._stream(int(since) if since.isdigit() else None), ping=KEEPALIVE_SECONDS
        )

    async def _stream(self, since: int | None) -> AsyncIterator[ServerSentEvent]:
        queue = self.desk.subscribe()
        try:
            # A save between the page's render and this connection must not be missed.
            if since is not None and since != self.desk.generation:
                yield _sse({"generation": self.desk.generation, "files": []})
            yield ServerSentEvent(comment="connected")  # the headers go out now
            while event := await queue.get():  # {} is Desk.close(): the server is stopping
                yield _sse(event)
        finally:
            self.desk.unsubscribe(queue)

    def recipient(self, request: Request) -> tuple[Recipient, str]:
        """Who the placeholders are filled for, and a notice when the choice was not found."""
        peer = request.client.host if request.client else ""
        return resolve_recipient(
            request.query_params.get("as", ""),
            self.desk.settings,
            self.lookup if is_loopback(peer) else None,
            local=is_loopback(peer),
        )


def is_loopback(host: str) -> bool:
    """True for this machine's own addresses (127.0.0.0/8, ::1, IPv4-mapped loopback)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def _where(problem: Problem, root: Path) -> str:
    path = problem.file
    if path is not None and path.is_absolute() and path.is_relative_to(root):
        path = path.relative_to(root)
    where = f"{path or ''}" + (f":{problem.line}" if problem.line else "")
    return f"{where} [{problem.field}]" if problem.field else where


def _short_path(path: Path | None, root: Path) -> str:
    if path is None:
        return ""
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _sse(event: dict[str, Any]) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(event), event="reload", id=str(event["generation"]))


def _options(request: Request) -> dict[str, str]:
    return {k: request.query_params.get(k, "") for k in ("as", "dark")}


def _query(options: dict[str, str]) -> str:
    from urllib.parse import urlencode

    return urlencode({k: v for k, v in options.items() if v})


# Every unsubscribe link the preview shows, whoever it renders for, is
# `urls.PREVIEW_ONLY_PATH`: a working signed token would unsubscribe that subscriber for
# whoever can reach the preview's port.
NOT_HERE = (
    "rendering as a subscriber works only from the machine running the preview; showing "
    "the sample reader. Write NAME,EMAIL to preview a made-up one."
)


def resolve_recipient(
    choice: str,
    settings: Settings,
    lookup: Lookup | None,
    *,
    local: bool = True,
) -> tuple[Recipient, str]:
    """'' is the sample reader; 'NAME,EMAIL' a made-up one; 'EMAIL' an existing subscriber.

    A client that is not `local` is never told whether an address is a subscriber: it
    gets the sample reader and the same notice whatever it asked for.
    """
    choice = choice.strip()
    if not choice or choice == "sample":
        return sample_reader(settings), ""
    if "," in choice:
        try:
            return made_up_reader(choice, settings), ""
        except NewsletterError as exc:
            return sample_reader(settings), str(exc)
    if not local:
        return sample_reader(settings), NOT_HERE
    found = lookup(choice) if lookup else None
    if found is None:
        return sample_reader(settings), (
            f"no subscriber {choice!r} found; showing the sample reader. "
            "Write NAME,EMAIL to preview a made-up one."
        )
    return found, ""


_DARK = re.compile(r"\(\s*prefers-color-scheme\s*:\s*dark\s*\)", re.IGNORECASE)
_LIGHT = re.compile(r"\(\s*prefers-color-scheme\s*:\s*light\s*\)", re.IGNORECASE)


def force_dark(html: str) -> str:
    """The email as a dark-mode client shows it, whatever the preview browser prefers.

    An iframe cannot be told to prefer dark, so the email's dark media queries are made
    always-true (and light ones never-true), and the page's color-scheme is dark.
    """
    html = _DARK.sub("(min-width: 0px)", html)
    html = _LIGHT.sub("(max-width: 0px)", html)
    style = "<style>:root { color-scheme: dark; }</style>"
    return html.replace("</head>", f"{style}</head>", 1) if "</head>" in html else style + html


# ---- pages --------------------------------------------------------------------------------


def _failure(name: str, failure: Failure, generation: int) -> Response:
    return _page(
        "preview/error.html",
        status=failure.status,
        name=name,
        failure=failure,
        generation=generation,
    )


def _page(template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
    """A preview page from newsletter/pages/preview/ (no CSP: it runs its own scripts)."""
    return pages.response(template, status=status, **context)


# ---- serving ------------------------------------------------------------------------------


def beyond_loopback(host: str) -> bool:
    """True when listening on `host` lets other machines connect (0.0.0.0, a LAN address, a
    name other than localhost)."""
    return host != "localhost" and not is_loopback(host.strip("[]"))


EXPOSED = (
    "warning: the preview listens on {host}, beyond this machine. It shows unpublished "
    "issues to anyone who can reach the port and is not for a public network; use the "
    "default 127.0.0.1 (an SSH tunnel reaches it from elsewhere)."
)


def bind(host: str, port: int) -> socket.socket:
    """Listen on host:port now, so a taken port is a clear error before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PreviewError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}. Another program (another "
            f"preview?) may be using it; pass --port {port + 1} or stop that program."
        ) from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


class _PreviewServer(uvicorn.Server):
    """Ends the never-ending event streams first, so Ctrl-C stops the preview at once."""

    def __init__(self, config: uvicorn.Config, desk: Desk) -> None:
        super().__init__(config)
        self.desk = desk

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.desk.close()
        await super().shutdown(sockets)


def server(app: Starlette, *, log_level: str = "warning") -> uvicorn.Server:
    """A uvicorn server for `app`; run it with `.run(sockets=[bind(...)])`."""
    # An event stream that outlives Desk.close() (a stuck client) gets a second at shutdown.
    config = uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=1, lifespan="on")
    return _PreviewServer(config, app.state.desk)


def database_lookup(settings: Settings) -> Lookup | None:
    """ "Render as" an existing subscriber, read from the audience database.

    None when there is no database yet: a preview must not create one as a side effect.
    The unsubscribe link is always the preview-only URL, never a signed token: a page or a
    screenshot of the preview must not be able to unsubscribe anyone.
    """
    from sqlalchemy.engine import make_url

    url = make_url(settings.database)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        return None

    from newsletter import db

    engine = db.engine_for(settings.database, int(settings.database_busy_timeout * 1000))

    def lookup(address: str) -> Recipient | None:
        from newsletter import audience

        try:  # read-only: no migration, no write lock, one engine for the server's life
            with db.reading(engine) as conn:
                found = audience.subscriber(conn, address)
        except NewsletterError:
            return None
        return previewed_subscriber(found.email, found.name, found.public_id, settings)

    return lookup
