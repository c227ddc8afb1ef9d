"""The exception tree: its docstring drawing is the class hierarchy, and the errors a user
causes with a bad argument or a bad file reach them as one message naming what to fix."""

from __future__ import annotations

import csv
import datetime as dt
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from newsletter import audience, db, errors, ledger
from newsletter.audience_csv import MODES, import_csv
from newsletter.cli import subscribers_import
from newsletter.config import load_settings
from newsletter.errors import (
    AudienceError,
    ImportFileError,
    NewsletterError,
    StorageError,
    UsageError,
)
from tests.conftest import CANARY_KEY, populate, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid

# A line of the drawing that names a class: the root at the margin, or a branch. A
# description's continuation line has no branch, whatever word it starts with.
NODE = re.compile(r"^(?P<indent>(?:[ │]*(?:├── |└── ))?)(?P<name>[A-Z]\w+)\b")


def documented_tree() -> dict[str, str | None]:
    """Each class in errors.py's docstring drawing -> the class drawn as its parent."""
    doc = errors.__doc__ or ""
    drawing = doc.split("::", 1)[1].split("\n\n")[1]
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []  # (column of the name, name) of the open ancestors
    for line in drawing.splitlines():
        found = NODE.match(line.strip("\n")[4:])  # the drawing is indented four spaces
        if found is None:
            continue  # a description's continuation line
        column = len(found["indent"])
        while stack and stack[-1][0] >= column:
            stack.pop()
        parents[found["name"]] = stack[-1][1] if stack else None
        stack.append((column, found["name"]))
    return parents


def class_tree() -> dict[str, str | None]:
    """Each NewsletterError class -> its base, walked through __subclasses__."""
    parents: dict[str, str | None] = {"NewsletterError": None}
    waiting: list[type[NewsletterError]] = [NewsletterError]
    while waiting:
        cls = waiting.pop()
        for sub in cls.__subclasses__():
            parents[sub.__name__] = cls.__name__
            waiting.append(sub)
    return parents


def test_the_documented_tree_is_the_class_hierarchy() -> None:
    drawn = documented_tree()
    assert len(drawn) > 20  # the parser read the drawing, not an empty string
    assert drawn == class_tree()


def test_every_exception_class_of_errors_py_is_in_the_tree_or_named_outside_it() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, BaseException)
    }
    # KeyboardInterrupts, described under the drawing
    outside = {"InterruptedBeforeSending", "SendInterrupted"}
    assert defined - outside == set(documented_tree())
    assert all(f"``{name}``" in (errors.__doc__ or "") for name in outside)


def test_a_bad_import_file_is_an_audience_error_not_a_storage_error() -> None:
    """The web layer answers 503 ("try again") for a StorageError: a bad file is no outage."""
    assert issubclass(ImportFileError, AudienceError)
    assert not issubclass(ImportFileError, StorageError)


# --- A bad CSV file: the file, the line, what to do; nothing imported ------------------------


def cli_env(database: str, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": database,
        "NEWSLETTER_SECRET_KEY": "cuUgTi9211ESzX313SzeMFHV8ds3yQzO4GvL_SSejkM",
        **extra,
    }


# A column name as a spreadsheet may hold it; not blank, no NUL (its own error), not email.
column_names = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1
).filter(lambda name: name.strip() and name.strip().lower() != "email")


@pytest.fixture(scope="module")
def weekly_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Engine, Path]]:
    """One database for every example: a refused import writes nothing, which is checked."""
    root = tmp_path_factory.mktemp("weekly")
    engine = db.connect(load_settings(root, env={}))
    populate(engine, 1)
    yield engine, root
    engine.dispose()


@settings(max_examples=40, deadline=None)
@given(name=column_names)
def test_a_repeated_column_names_the_file_line_and_column(
    weekly_db: tuple[Engine, Path], name: str
) -> None:
    engine, root = weekly_db
    path = root / "people.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([["email", name, name], ["a@example.org", "", ""]])
    with pytest.raises(ImportFileError) as info:
        import_csv(engine, path, "weekly")
    with db.reading(engine) as conn, pytest.raises(AudienceError, match="No subscriber"):
        audience.subscriber(conn, "a@example.org")
    assert (info.value.path, info.value.line) == (path, 1)
    assert str(info.value).startswith(f"{path}:1: the column ")
    assert "appears twice" in str(info.value)
    assert str(info.value).endswith("Nothing was imported.")


def test_the_cli_reports_a_bad_csv_as_one_message(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'audience.db'}"
    engine = db.connect(load_settings(tmp_path, env={"NEWSLETTER_DATABASE_URL": database}))
    populate(engine, 1)
    engine.dispose()
    path = tmp_path / "broken.csv"
    path.write_bytes(b'email\na@example.org\n"unterminated\n')
    done = run_newsletter(
        tmp_path, "subscribers", "import", str(path), "--list", "weekly", env=cli_env(database)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    message = " ".join(done.stderr.split())  # Rich wraps long lines
    assert f"error: {path}:3: the file is not valid CSV" in message
    assert "Nothing was imported." in message
    assert "Traceback" not in done.stderr


# --- --mode --------------------------------------------------------------------------------


@given(mode=st.text().filter(lambda mode: mode not in MODES))
def test_an_unknown_mode_is_a_usage_error_naming_the_option(mode: str) -> None:
    with pytest.raises(UsageError) as info:
        subscribers_import(Path("people.csv"), "weekly", mode=mode)
    assert not isinstance(info.value, AudienceError)
    assert str(info.value) == f"--mode must be one of {', '.join(MODES)}, not {mode!r}."


def test_the_cli_reports_an_unknown_mode_with_exit_status_1(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'audience.db'}"
    done = run_newsletter(
        tmp_path, "subscribers", "import", "people.csv", "--mode", "sideways",
        env=cli_env(database),
    )  # fmt: skip
    assert done.returncode == 1
    assert "error: --mode must be one of subscribe, unsubscribe, suppress, not 'sideways'." in (
        " ".join(done.stderr.split())
    )
    assert "Traceback" not in done.stderr


# --- --at ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "message"),
    [
        ("next tuesday", "write an ISO time with its zone"),
        ("2025-12-10T07:00", "has no time zone; add one"),
        ("2001-01-01T07:00+00:00", "is in the past; give a future time"),
        ("+73h", "is more than 72 hours ahead; the sendgrid mailer schedules at most 72 hours"),
    ],
)
def test_a_bad_at_is_a_usage_error_and_nothing_is_written_or_sent(
    project: Path, fake_sendgrid: FakeSendGrid, at: str, message: str
) -> None:
    if at == "+73h":
        at = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=73)).isoformat(timespec="minutes")
    database = f"sqlite:///{project / 'audience.db'}"
    env = cli_env(
        database,
        SENDGRID_API_KEY=CANARY_KEY,
        NEWSLETTER_SENDGRID_API_URL=fake_sendgrid.url,
        NEWSLETTER_MAILER="sendgrid",
    )
    engine = db.connect(load_settings(project, env=env))
    populate(engine, 3)
    done = run_newsletter(project, "send", "issues/2025-12-10.yaml", "--at", at, "--yes", env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert message in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert fake_sendgrid.requests == []
    with db.reading(engine) as conn:
        assert ledger.send_record(conn, "2025-12-10") is None  # refused before any write
    engine.dispose()
