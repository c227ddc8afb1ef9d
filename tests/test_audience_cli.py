"""The audience commands, run as a user runs them: the console script in a subprocess."""

from __future__ import annotations

import csv
import io
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from newsletter.config import Settings, load_settings


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """SQLite only: the storage tests cover PostgreSQL; these cover the command line."""
    return load_settings(root=tmp_path, env={})


def run(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "NEWSLETTER_DATABASE_URL": settings.database,
        "NEWSLETTER_SECRET_KEY": "cuUgTi9211ESzX313SzeMFHV8ds3yQzO4GvL_SSejkM",
    }
    return subprocess.run(
        [sys.executable, "-c", "from newsletter.cli import main; main()", *args],
        cwd=settings.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_show_export_and_errors(settings: Settings, tmp_path: Path) -> None:
    assert run(settings, "lists", "create", "weekly", "--title", "Weekly").returncode == 0
    source = tmp_path / "in.csv"
    source.write_text("email,name,city\nA@Example.org,=cmd,Osh\nbroken,,\n", encoding="utf-8")
    imported = run(
        settings, "subscribers", "import", str(source), "--list", "weekly", "--confirmed"
    )
    assert imported.returncode == 0, imported.stderr
    assert "1 added, 0 updated, 0 unchanged, 1 rejected" in imported.stdout
    assert f"{source}:3:" in imported.stdout

    shown = run(settings, "subscribers", "show", "a@example.org")
    assert "confirmed" in shown.stdout
    assert "Osh" in shown.stdout

    exported = run(settings, "subscribers", "export", "--list", "weekly")
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert rows == [["email", "name", "locale", "city"], ["a@example.org", "'=cmd", "", "Osh"]]

    removed = run(settings, "subscribers", "remove", "a@example.org", "--list", "weekly")
    assert "is now unsubscribed" in removed.stdout
    listed = run(settings, "lists", "show", "weekly")
    assert "weekly" in listed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("subscribers", "import", "missing.csv", "--list", "weekly"), "lists create weekly"),
        (("subscribers", "show", "nobody@example.org"), "No subscriber"),
        (("subscribers", "show", "not an address"), "Not a valid email address"),
    ],
)
def test_errors_are_one_message_without_traceback(
    settings: Settings, args: tuple[str, ...], message: str
) -> None:
    result = run(settings, *args)
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_named_without_password(settings: Settings) -> None:
    broken = Settings(
        root=settings.root,
        database_url="postgresql+psycopg://u:s3cret@127.0.0.1:1/x?connect_timeout=2",
    )
    result = run(broken, "db", "upgrade")
    assert result.returncode == 1
    assert "s3cret" not in result.stderr + result.stdout
    assert "127.0.0.1:1/x" in result.stderr


def test_serve_without_a_secret_key_names_the_setting(settings: Settings) -> None:
    env_without_key = {"NEWSLETTER_DATABASE_URL": settings.database, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", "from newsletter.cli import main; main()", "serve"],
        cwd=settings.root,
        env=env_without_key,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "NEWSLETTER_SECRET_KEY" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_answers_on_127_0_0_1(settings: Settings) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {
        "NEWSLETTER_DATABASE_URL": settings.database,
        "NEWSLETTER_SECRET_KEY": "jq2YrgFgo2xFYaHOhC60GmuU1v08EK0rpZM_vGpiIY8",
        "PATH": "/usr/bin:/bin",
    }
    server = subprocess.Popen(
        [sys.executable, "-c", "from newsletter.cli import main; main()", "serve",
         "--port", str(port)],
        cwd=settings.root,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/subscribe", timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.1)
        assert response.status_code == 200
        assert "Subscribe" in response.text
    finally:
        server.terminate()
        server.wait(timeout=10)
