"""Attacks on the preview server over HTTP: "render as" from another machine, working
tokens in a preview, and a preview bound beyond loopback without a word."""

from __future__ import annotations

import html
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter import audience, db, tokens
from newsletter.config import Settings, load_settings
from newsletter.errors import TokenError
from newsletter.preview import (
    NOT_HERE,
    bind,
    create_app,
    database_lookup,
    server,
)
from newsletter.urls import PREVIEW_ONLY_PATH
from tests.conftest import TEST_KEYS, free_port

ISSUE = "2025-12-10"
SUBSCRIBERS = {"dana@example.org": "Danagul Zhaksylykova", "timur@example.org": "Timurbek Q"}
PAGES = (f"/issues/{ISSUE}", f"/issues/{ISSUE}/email.html", f"/issues/{ISSUE}/email.txt")


def own_address() -> str | None:
    """A non-loopback address of this machine, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.123", 9))
        except OSError:
            return None
        address = str(probe.getsockname()[0])
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Settings]]:
    """A real preview server (uvicorn, as `newsletter preview` runs it) on 0.0.0.0, reading
    a subscriber database, over a copy of the sample project."""
    import shutil

    from tests.conftest import REPO

    root = tmp_path_factory.mktemp("desk")
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    settings = load_settings(root, env={"NEWSLETTER_SECRET_KEY": TEST_KEYS})
    engine = db.connect(settings)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        for address, name in SUBSCRIBERS.items():
            audience.add_subscriber(conn, address, "weekly", name=name, confirmed=True)
    engine.dispose()
    sock = bind("0.0.0.0", 0)
    port = sock.getsockname()[1]
    app = create_app(settings, lookup=database_lookup(settings), watch_files=False)
    uvicorn_server = server(app)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}", settings
    uvicorn_server.should_exit = True
    thread.join(timeout=10)


# Two ways a client is not this machine: through a local reverse proxy (uvicorn believes
# X-Forwarded-For from 127.0.0.1), and, where the machine has one, its own LAN address.
REMOTES = ["behind-a-local-proxy"] + (["lan-address"] if own_address() else [])


def fetch(desk: tuple[str, Settings], path: str, choice: str, remote: str) -> httpx.Response:
    url, _settings = desk
    headers = {"Host": "localhost"}  # the preview refuses other Hosts (DNS rebinding)
    if remote == "behind-a-local-proxy":
        headers["X-Forwarded-For"] = "203.0.113.9"
    elif remote == "lan-address":
        url = url.replace("127.0.0.1", str(own_address()))
    return httpx.get(f"{url}{path}", params={"as": choice}, headers=headers, timeout=60)


@pytest.mark.parametrize("remote", REMOTES)
@given(
    unknown=st.one_of(st.emails(), st.text(max_size=40)).filter(
        lambda s: "," not in s and s.strip().lower() not in SUBSCRIBERS and s.strip()
    ),
    known=st.sampled_from(sorted(SUBSCRIBERS)),
)
@hsettings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_remote_client_cannot_tell_whether_an_address_subscribes(
    desk: tuple[str, Settings], remote: str, unknown: str, known: str
) -> None:
    for path in PAGES:
        answers = [fetch(desk, path, choice, remote) for choice in (known, unknown)]
        assert [a.status_code for a in answers] == [200, 200]
        if path == PAGES[0]:  # the page echoes the choice in its form: compare what it says
            said = [_said(answer.text) for answer in answers]
            assert said[0] == said[1]
            assert said[0][0] == html.escape(NOT_HERE, quote=True)
        else:
            assert answers[0].content == answers[1].content, path
        for name in SUBSCRIBERS.values():
            assert name.split()[0] not in answers[0].text


def _said(page: str) -> tuple[str, str]:
    """The notice and the plain-text part an issue page shows."""
    notice = re.search(r'<p class="notice">(.*?)</p>', page, re.S)
    text = re.search(r'<pre class="text">(.*?)</pre>', page, re.S)
    return (notice.group(1) if notice else "", text.group(1) if text else "")


def test_a_local_editor_sees_the_subscriber_with_a_preview_only_link(
    desk: tuple[str, Settings],
) -> None:
    url, settings = desk
    text = httpx.get(f"{url}{PAGES[2]}", params={"as": "dana@example.org"}, timeout=60).text
    assert "Danagul" in text  # "render as" still works for the editor
    links = set(re.findall(r"https?://\S*/u/\S+", text))
    assert links == {f"{settings.base_url.rstrip('/')}{PREVIEW_ONLY_PATH}"}
    page = httpx.get(f"{url}{PAGES[1]}", params={"as": "dana@example.org"}, timeout=60).text
    for link in re.findall(r'href="([^"]*/u/[^"]*)"', page):
        with pytest.raises(TokenError):
            tokens.verify(settings, "unsubscribe", link.rsplit("/", 1)[1])


def _preview(root: Path, host: str) -> tuple[str, str]:
    """`newsletter preview --host HOST` until it says where it listens; (stdout, stderr)."""
    from tests.conftest import REPO

    process = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "preview", "--host", host, "--port", str(free_port())],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": str(root)},
    )  # fmt: skip
    assert process.stdout is not None
    try:
        first = process.stdout.readline()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=30)
    return first + out, err


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_preview_says_when_it_listens_beyond_this_machine(
    tmp_path: Path, host: str, warned: bool
) -> None:
    out, err = _preview(tmp_path, host)
    assert "Preview on" in out
    assert ("not for a public network" in err) is warned
    assert "Traceback" not in err
