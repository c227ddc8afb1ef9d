"""The live preview: pages through httpx, and a real uvicorn whose pages reload on save."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from newsletter.config import Settings, load_settings
from newsletter.errors import PreviewError
from newsletter.models import Recipient
from newsletter.preview import bind, create_app, force_dark

ISSUE = "2025-12-10"


def settings_for(project: Path) -> Settings:
    return load_settings(project, env={})


class Client:
    """httpx straight into the ASGI app; the lifespan (watcher, warm-up) does not run."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def get(
        self, path: str, params: dict[str, str] | None = None, host: str = "127.0.0.1"
    ) -> httpx.Response:
        async def fetch() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as http:
                return await http.get(path, params=params)

        # A thread of its own: Playwright's sync API (test_browser) keeps an event loop
        # running in the main thread for the whole session.
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, fetch()).result()


@pytest.fixture
def client(project: Path) -> Client:
    subscribers = {"dana@example.org": Recipient("dana@example.org", "Dana", "https://x.org/u/1")}
    return Client(create_app(settings_for(project), lookup=subscribers.get))


def test_index_lists_issues_with_their_subjects(client: Client) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert f'href="/issues/{ISSUE}"' in page.text
    assert "Kyrgyz apricots head to China" in page.text


def test_issue_page_shows_inbox_widths_text_and_preflight(client: Client) -> None:
    page = client.get(f"/issues/{ISSUE}")
    assert page.status_code == 200
    text = page.text
    assert 'width="375"' in text
    assert 'width="640"' in text
    assert "Central Asia Weekly</span>" in text  # the From name, as an inbox shows it
    assert "Trade, trafficking figures" in text  # the preheader
    assert "KYRGYZ APRICOTS" not in text
    assert "Hello Aida," in text  # the text part, filled for the sample reader
    assert "UZS/USD = 0.00008 keeps 1 significant digit" in text
    assert "content/rates/2025-12-10.yaml [rates.UZS]" in text
    assert 'new EventSource("/events?since=0")' in text


def test_render_as_fills_placeholders_for_a_made_up_or_existing_reader(
    client: Client,
) -> None:
    made_up = client.get(f"/issues/{ISSUE}/email.html", params={"as": "Bob,bob@example.org"})
    assert "Hello Bob," in made_up.text
    assert "_html-" not in made_up.text
    existing = client.get(f"/issues/{ISSUE}/email.txt", params={"as": "dana@example.org"})
    assert "Hello Dana," in existing.text
    assert "Unsubscribe: https://x.org/u/1" in existing.text
    unknown = client.get(f"/issues/{ISSUE}", params={"as": "nobody@example.org"})
    assert "no subscriber &#39;nobody@example.org&#39; found" in unknown.text
    assert "Hello Aida," in unknown.text


def test_dark_mode_makes_the_emails_dark_rules_apply(client: Client) -> None:
    light = client.get(f"/issues/{ISSUE}/email.html").text
    dark = client.get(f"/issues/{ISSUE}/email.html", params={"dark": "1"}).text
    assert re.search(r"prefers-color-scheme:\s*dark", light)
    assert "prefers-color-scheme" not in dark
    assert "color-scheme: dark;" in dark
    css = "@media (prefers-color-scheme: light) { a {} } @media (prefers-color-scheme:dark) {}"
    assert force_dark(css).startswith("<style>")
    assert "(max-width: 0px)" in force_dark(css)
    assert "(min-width: 0px)" in force_dark(css)


def test_unknown_issue_is_a_readable_404(client: Client) -> None:
    page = client.get("/issues/1999-01-01")
    assert page.status_code == 404
    assert "No issue named &#39;1999-01-01&#39;" in page.text
    assert client.get("/issues/..%2Fpyproject").status_code == 404


def test_invalid_issue_shows_each_problem_with_file_and_line(project: Path) -> None:
    path = project / "issues" / f"{ISSUE}.yaml"
    path.write_text(path.read_text().replace("rates: latest", "rates: someday"))
    page = Client(create_app(settings_for(project))).get(f"/issues/{ISSUE}")
    assert page.status_code == 422
    assert f"issues/{ISSUE}.yaml:" in page.text
    assert "rates" in page.text
    assert "Traceback" not in page.text


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PreviewError, match=rf"127\.0\.0\.1:{port}.*--port {port + 1}"):
            bind("127.0.0.1", port)


# ---- a real server on 127.0.0.1 ------------------------------------------------------------


@dataclass
class Live:
    url: str
    project: Path
    events: queue.Queue[dict[str, Any]]

    def save_until_reload(self, path: Path, content: str, timeout: float = 10) -> dict[str, Any]:
        """Save, and save again until the watcher (which starts with the server) reports it."""
        for _ in range(int(timeout / 0.5)):
            path.write_text(content)
            try:
                return self.events.get(timeout=0.5)
            except queue.Empty:
                continue
        raise AssertionError(f"no reload event within {timeout} s of saving {path}")

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.url + path, timeout=10)


class Listener(threading.Thread):
    """Reads the server-sent events of /events into a queue, in the background."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.http = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self.stopping = False

    def run(self) -> None:
        try:
            with self.http.stream("GET", f"{self.url}/events") as stream:
                for line in stream.iter_lines():
                    if line.startswith("data: "):
                        self.events.put(json.loads(line[len("data: ") :]))
        except (httpx.HTTPError, RuntimeError, OSError):
            if not self.stopping:  # the stream may only end because the test closed it
                raise


@pytest.fixture
def live(project: Path, preview_url: str) -> Iterator[Live]:
    listener = Listener(preview_url)
    listener.start()
    yield Live(preview_url, project, listener.events)
    listener.stopping = True  # the stream ends when preview_url stops the server


def test_saving_an_article_pushes_a_reload_and_the_page_follows(live: Live) -> None:
    article = live.project / "content/articles/kyrgyzstan-dried-apricot-exports-china.md"
    original = article.read_text()
    assert "Apricots Go East" not in live.get(f"/issues/{ISSUE}").text
    event = live.save_until_reload(
        article,
        original.replace(
            "title: Kyrgyzstan Begins Dried Apricot Exports to China", "title: Apricots Go East"
        ),
    )
    assert event["files"] == ["content/articles/kyrgyzstan-dried-apricot-exports-china.md"]
    assert "Apricots Go East" in live.get(f"/issues/{ISSUE}/email.html").text


def test_a_broken_template_shows_file_and_line_then_recovers(live: Live) -> None:
    template = live.project / "templates" / "digest.mjml.j2"
    good = template.read_text()
    live.save_until_reload(template, good.replace("{% endblock %}", "{% endblok %}"))
    page = live.get(f"/issues/{ISSUE}")
    assert page.status_code == 500
    assert "digest.mjml.j2:" in page.text
    assert "Traceback" not in page.text
    assert "EventSource" in page.text  # the error page reloads itself too
    live.save_until_reload(template, good)
    assert live.get(f"/issues/{ISSUE}").status_code == 200


def test_a_broken_then_deleted_issue_keeps_the_server_running(live: Live) -> None:
    issue = live.project / "issues" / f"{ISSUE}.yaml"
    good = issue.read_text()
    live.save_until_reload(issue, good + "sections: [oops\n")
    broken = live.get(f"/issues/{ISSUE}")
    assert broken.status_code == 422
    assert f"issues/{ISSUE}.yaml:" in broken.text
    live.save_until_reload(issue, good)
    assert live.get(f"/issues/{ISSUE}").status_code == 200
    issue.unlink()
    while live.get(f"/issues/{ISSUE}").status_code != 404:
        live.events.get(timeout=10)
    assert live.get("/").status_code == 200


def test_index_names_an_issue_that_does_not_parse(project: Path) -> None:
    (project / "issues" / "2025-12-17.yaml").write_text("title: [unclosed\n")
    page = Client(create_app(settings_for(project))).get("/")
    assert page.status_code == 200
    assert 'href="/issues/2025-12-17"' in page.text
    assert 'class="error">' in page.text
    assert "2025-12-17.yaml" in page.text
    assert "Kyrgyz apricots head to China" in page.text


def test_preview_command_exits_cleanly_when_the_port_is_taken(project: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [str(Path(sys.executable).parent / "newsletter"), "preview", "--port", str(port)]
        done = subprocess.run(command, cwd=project, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_render_as_an_existing_subscriber_reads_the_database(
    engine: Engine, db_settings: Settings
) -> None:
    from newsletter import audience, db, tokens
    from newsletter.errors import TokenError
    from newsletter.preview import database_lookup, resolve_recipient
    from newsletter.urls import PREVIEW_ONLY_PATH

    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        public_id = audience.add_subscriber(
            conn, "Dana@Example.org", "weekly", name="Dana Ospanova", confirmed=True
        )
    lookup = database_lookup(db_settings)
    assert lookup is not None
    found, note = resolve_recipient("dana@example.org", db_settings, lookup)
    assert note == ""
    assert (found.email, found.first_name) == ("dana@example.org", "Dana")
    # Never a working token: a preview page or screenshot must not unsubscribe anyone.
    assert found.unsubscribe_url == f"{db_settings.base_url}{PREVIEW_ONLY_PATH}"
    with pytest.raises(TokenError):
        tokens.verify(db_settings, "unsubscribe", found.unsubscribe_url.rsplit("/", 1)[1])
    assert found.public_id == public_id
    missing, note = resolve_recipient("nobody@example.org", db_settings, lookup)
    assert missing.first_name == "Aida"  # the sample reader, with a note saying why
    assert "no subscriber 'nobody@example.org' found" in note


def test_render_as_never_creates_a_database(tmp_path: Path) -> None:
    from newsletter.preview import database_lookup

    settings = load_settings(tmp_path, env={})
    assert database_lookup(settings) is None
    assert not (tmp_path / "newsletter.db").exists()


def test_only_this_machine_may_ask_the_preview(client: Client) -> None:
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 still sends its own Host.
    rebound = client.get("/issues/2025-12-10/email.txt", {"as": "dana@example.org"}, "evil.test")
    assert rebound.status_code == 400
    assert "Dana" not in rebound.text
    assert client.get("/", host="localhost").status_code == 200
