"""Shared fixtures. Golden files change only with `pytest --update-golden`."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from starlette.types import ASGIApp

from newsletter import audience, db
from newsletter.config import Secret, Settings, load_settings
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import RenderedEmail
from tests.fakes.sendgrid_server import FakeSendGrid, running

REPO = Path(__file__).resolve().parent.parent


def run_newsletter(
    cwd: Path, *args: str, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `newsletter` command in a child process, answering "n" should it ask.

    Without `env` it gets this environment minus every NEWSLETTER_ setting, so a developer's
    own settings cannot leak into a test.
    """
    if env is None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    return subprocess.run(
        [sys.executable, "-m", "newsletter", *args],
        cwd=cwd,
        env=dict(env),
        input="n\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current output (review the diff before committing).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of the sample project (content, templates, issues) to break at will."""
    import shutil

    root = tmp_path / "project"
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    return root


@pytest.fixture
def settings(request: pytest.FixtureRequest) -> Settings:
    """The project's settings; in a test on a database, that database's settings.

    Pipeline tests want the sample project; storage tests the test database (through
    `db_settings`, which `engine` uses). One name serves both.
    """
    if "db_settings" in request.fixturenames:
        on_database: Settings = request.getfixturevalue("db_settings")
        return on_database
    return load_settings(request.getfixturevalue("project"), env={})


# --- Databases: every storage test runs on a SQLite file and, when given one, PostgreSQL. ---


POSTGRES_URL = os.environ.get("NEWSLETTER_TEST_POSTGRES_URL", "")
DATABASES = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]
# Strong enough for load_settings (32 random bytes each), newest first.
TEST_KEYS = (
    "HAr_QJguiDBKNsSvO8-RyGDpb5qSIUnSi2hCQ6Rh638,JCL-hHswvvf83KdlM1wYOQlNP04oHXALxWQUnPO-Rcg"
)


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL to an empty database: a fresh SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'newsletter.db'}"
        return
    # Other test runs may share the server: each test gets its own schema, dropped after.
    schema = f"test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(POSTGRES_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def db_settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings on the test database, with two secret keys and the outbox in tmp_path."""
    env = {
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SECRET_KEY": TEST_KEYS,
        "NEWSLETTER_BASE_URL": "https://news.test",
    }
    return load_settings(root=tmp_path, env=env)


@pytest.fixture
def engine(db_settings: Settings) -> Iterator[Engine]:
    """An engine on the migrated test database."""
    engine = db.connect(db_settings)
    yield engine
    engine.dispose()


# --- dispatch: a fake SendGrid, a rendered email, settings pointing at the fake ------------

CANARY_KEY = "SG.canary-7f3d9b1e5a2c4d6f8a0b.never-print-me-9c1e3a5b7d"


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with running(CANARY_KEY) as fake:
        yield fake


@pytest.fixture
def sendgrid_settings(tmp_path: Path, fake_sendgrid: FakeSendGrid) -> Settings:
    return load_settings(
        tmp_path,
        env={
            "SENDGRID_API_KEY": CANARY_KEY,
            "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
            "NEWSLETTER_SENDGRID_TIMEOUT": "1.0",
        },
    )


@pytest.fixture
def mailer(db_settings: Settings, fake_sendgrid: FakeSendGrid) -> SendGridMailer:
    """The SendGrid mailer on the test database, pointed at the fake, retrying quickly."""
    pointed = dataclasses.replace(
        db_settings,
        sendgrid_api_key=Secret(fake_sendgrid.api_key),
        sendgrid_api_url=fake_sendgrid.url,
        sendgrid_timeout=1.0,
    )
    return SendGridMailer(pointed, retry=RetryPolicy(attempts=3, base=0.01, cap=0.05))


@pytest.fixture
def rendered() -> RenderedEmail:
    return RenderedEmail(
        issue_name="2025-12-10",
        subject="Central Asia Weekly: apricots, rates and a trafficking report",
        preheader="This week in Central Asia",
        from_name="Central Asia Weekly",
        from_email="digest@news.example.org",
        html='<p>Hello -first_name_html-</p><a href="-unsubscribe_url-">Unsubscribe</a>',
        text="Hello -first_name-\nUnsubscribe: -unsubscribe_url-\n",
        mjml="<mjml></mjml>",
        content_hash="c0ffee",
    )


AUDIENCE_SIZE = 25


def populate(engine: Engine, count: int, list_name: str = "weekly") -> list[str]:
    """A list with `count` confirmed subscribers; returns their addresses in id order."""
    addresses = [f"reader{i:05d}@example.org" for i in range(count)]
    with db.writing(engine) as conn:
        audience.create_list(conn, list_name)
        for i, address in enumerate(addresses):
            audience.add_subscriber(conn, address, list_name, name=f"Reader {i}", confirmed=True)
    return addresses


@pytest.fixture
def weekly_readers(engine: Engine) -> list[str]:
    return populate(engine, AUDIENCE_SIZE)


@pytest.fixture
def preview_url(project: Path) -> Iterator[str]:
    """A real preview server (uvicorn, file watcher and all) on 127.0.0.1 over `project`."""
    import threading
    import time

    from newsletter.preview import bind, create_app, server

    sock = bind("127.0.0.1", 0)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    uvicorn_server = server(create_app(load_settings(project, env={})))
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield url
    uvicorn_server.should_exit = True
    thread.join(timeout=10)
    assert not thread.is_alive(), "the preview server did not stop"


# --- `newsletter serve` over HTTP, as the attack tests reach it --------------------------


@dataclasses.dataclass
class Served:
    """A running `newsletter serve`: its URL, its settings and database, its output."""

    url: str
    settings: Settings
    engine: Engine
    process: subprocess.Popen[bytes]
    output: Path  # stdout and stderr, the access log among them

    def log(self) -> str:
        return self.output.read_text(encoding="utf-8", errors="replace")


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    """Start the real `newsletter serve` (uvicorn, worker and all) in a child process on a
    free port of 127.0.0.1, on its own SQLite file, with `settings` added to the test
    settings (as NEWSLETTER_<NAME> variables); stopped at the end of the session.

    A server takes seconds to start, so one is started per `name` and shared: a test
    empties what it relies on first (see test_trust_web.fresh). The server reads the
    database on every request, and its confirmation worker runs, so tests wait for the
    outbox rather than drain the queue themselves.
    """
    import time

    import httpx

    started: dict[str, Served] = {}

    def start(name: str, **settings: str) -> Served:
        if name in started:
            return started[name]
        root = tmp_path_factory.mktemp(f"serve-{name}")
        port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PYTHONUNBUFFERED": "1",  # the access log reaches the file as it happens
            "NEWSLETTER_SECRET_KEY": TEST_KEYS,
            "NEWSLETTER_BASE_URL": "https://news.test",
            **{f"NEWSLETTER_{k.upper()}": v for k, v in settings.items()},
        }
        loaded = load_settings(root, env=env)
        engine = db.connect(loaded)  # migrated before the server starts
        output = root / "serve.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
                cwd=root, env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        served = Served(f"http://127.0.0.1:{port}", loaded, engine, process, output)
        started[name] = served
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{served.url}/subscribe", timeout=2)
                return served
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"serve did not start:\n{served.log()}") from None
                time.sleep(0.05)

    yield start
    for served in started.values():
        served.process.terminate()
        served.process.wait(timeout=30)
        served.engine.dispose()


@contextmanager
def uvicorn_port(app: ASGIApp) -> Iterator[int]:
    """`app` under a real uvicorn in a thread on a free port of 127.0.0.1; yields the port."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)
