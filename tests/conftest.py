"""Shared fixtures. Golden files change only with `pytest --update-golden`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings

REPO = Path(__file__).resolve().parent.parent


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
def settings(project: Path) -> Settings:
    return load_settings(project, env={})


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
