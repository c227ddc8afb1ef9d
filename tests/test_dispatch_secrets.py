"""The SendGrid key never shows: a canary key through every send path, then search everything."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from newsletter import cli, db, schema
from newsletter.config import Settings, load_settings
from newsletter.errors import NewsletterError, UnexpectedError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import Recipient, RenderedEmail, SendBatch
from newsletter.redaction import MIN_FRAGMENT, redact
from tests.conftest import CANARY_KEY, populate, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body

BATCH = SendBatch("2025-12-10", "weekly", (Recipient("a@example.org"),), ("1",))
SCRIPT = [
    Reply(),
    Reply(400, body=errors_body("bad", "from")),
    Reply(401, body=errors_body("no")),
    Reply(403),
    Reply(413),
    Reply(429),
    Reply(500),
    Reply(status=0),
    Reply(delay=1.0),
]


def test_no_log_record_or_error_text_carries_the_key(
    sendgrid_settings: Settings,
    fake_sendgrid: FakeSendGrid,
    rendered: RenderedEmail,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)  # an application that logs everything
    settings = dataclasses.replace(sendgrid_settings, sendgrid_timeout=0.3)
    mailer = SendGridMailer(settings, retry=RetryPolicy(attempts=1, base=0.01, cap=0.01))
    shown = [repr(mailer), repr(settings), str(settings)]
    fake_sendgrid.push(*SCRIPT)
    for _ in SCRIPT:
        try:
            shown.append(repr(mailer.send_batch(rendered, BATCH)))
        except NewsletterError as exc:
            shown += [str(exc), repr(exc), repr(exc.__cause__), repr(exc.__context__)]
    mailer.cancel_scheduled(mailer.create_batch_id())
    assert len(fake_sendgrid.requests) == len(SCRIPT) + 2
    # python_http_client logs request headers, Authorization included, at DEBUG.
    assert not logging.getLogger("python_http_client.client").isEnabledFor(logging.DEBUG)
    assert CANARY_KEY not in caplog.text
    assert not [text for text in shown if CANARY_KEY in text]


def test_the_cli_send_paths_leave_no_trace_of_the_key(
    project: Path, fake_sendgrid: FakeSendGrid
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{project / 'newsletter.db'}",
        "NEWSLETTER_SECRET_KEY": "37Fa-X-aoYJGRqLkfQCptjBr5j1TuqQB3zyXlSXz0zQ",
        "NEWSLETTER_SEND_BATCH_SIZE": "5",
        "NEWSLETTER_RESEND_QUIET_MINUTES": "0",  # resend at once: no events will come
        "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
        "NEWSLETTER_SENDGRID_TIMEOUT": "0.5",
        "SENDGRID_API_KEY": CANARY_KEY,
    }
    engine = db.connect(load_settings(project, env=env))
    populate(engine, 20)
    engine.dispose()
    fake_sendgrid.push(Reply(), Reply(500), Reply(400, body=errors_body("bad", "from")), Reply(401))
    runs = [
        ["send", "issues/2025-12-10.yaml", "--yes"],  # 202, 500, 400, then 401 stops it
        ["send", "issues/2025-12-10.yaml", "--test", "editor@newsroom.test"],
        ["send", "issues/2025-12-10.yaml", "--yes", "--resend-unknown"],
        ["status", "2025-12-10", "--details"],
        ["cancel", "2025-12-10"],  # nothing scheduled: an error message
    ]
    output = ""
    for args in runs:
        done = run_newsletter(project, *args, env=env)
        output += done.stdout + done.stderr
    assert "Check SENDGRID_API_KEY" in output  # the 401 path really ran
    assert CANARY_KEY not in output
    for path in project.rglob("*"):
        if path.is_file():
            assert CANARY_KEY.encode() not in path.read_bytes(), path


# Keys as they arrive broken: from a file with its newline, pasted with a space or a
# non-ASCII lookalike. Each must stop the send in words, before any row is claimed.
MALFORMED_KEYS = [
    CANARY_KEY + "\n",
    CANARY_KEY.replace("-", " ", 1),
    CANARY_KEY.replace("a", "\u0430", 1),  # Cyrillic a
    CANARY_KEY.replace("e", "é", 1),
]


@pytest.mark.parametrize("key", MALFORMED_KEYS, ids=repr)
def test_a_malformed_key_stops_the_cli_in_words_and_never_shows(
    project: Path, fake_sendgrid: FakeSendGrid, key: str
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{project / 'newsletter.db'}",
        "NEWSLETTER_SECRET_KEY": "37Fa-X-aoYJGRqLkfQCptjBr5j1TuqQB3zyXlSXz0zQ",
        "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
    }
    engine = db.connect(load_settings(project, env=env))
    populate(engine, 5)
    env["SENDGRID_API_KEY"] = key
    output = ""
    for args in (
        ["send", "issues/2025-12-10.yaml", "--yes"],
        ["send", "issues/2025-12-10.yaml", "--test", "editor@newsroom.test"],
    ):
        done = run_newsletter(project, *args, env=env)
        assert done.returncode == 1
        output += done.stdout + done.stderr
    assert "SENDGRID_API_KEY" in output
    assert "Traceback" not in output
    assert fake_sendgrid.requests == []
    fragments = {
        key,
        key.strip(),
        CANARY_KEY,
        *(p for p in re.split(r"[^!-~]", key) if len(p) >= 8),
    }
    assert not [f for f in fragments if f in output]
    for path in project.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [f for f in fragments if f.encode() in data], path
    with db.reading(engine) as conn:  # nothing claimed, so nothing can turn `unknown`
        assert not conn.execute(select(schema.send_ledger)).all()
    engine.dispose()


def test_an_unexpected_error_at_the_send_boundary_is_one_sentence_without_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The message Python's http.client gives for a key ending in a newline.
    key = CANARY_KEY + "\n"
    monkeypatch.setenv("SENDGRID_API_KEY", key)  # where the CLI finds what to redact

    @cli._reported
    def send() -> None:
        try:
            raise OSError(f"header {('Bearer ' + key)!r}")
        except OSError as exc:
            raise ValueError(f"Invalid header value {('Bearer ' + key).encode()!r}") from exc

    with pytest.raises(UnexpectedError) as caught:
        send()
    assert caught.value.__cause__ is None
    assert caught.value.__suppress_context__
    shown = cli._redacted(str(caught.value))
    assert shown.startswith("newsletter send stopped on an unexpected error: ValueError:")
    assert "[redacted]" in shown
    assert CANARY_KEY not in shown


GOOD_KEY = "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"


@given(
    bad=st.sampled_from([" ", "\n", "\r", "\t", "\x00", "\x7f", "é", "\u0430", "\u202e", "\ufeff"]),
    at=st.integers(min_value=0, max_value=len(GOOD_KEY)),
    spelling=st.sampled_from(["plain", "repr", "bytes", "latin-1", "stripped"]),
)
def test_every_spelling_of_a_broken_key_is_redacted(bad: str, at: int, spelling: str) -> None:
    key = GOOD_KEY[:at] + bad + GOOD_KEY[at:]
    quoted = {
        "plain": key,
        "repr": repr(key),
        "bytes": repr(key.encode()),
        "latin-1": repr(key.encode("latin-1", "replace")),
        "stripped": key.strip(),
    }[spelling]
    shown = redact(f"ValueError: Invalid header value b'Bearer {quoted}' (see above)", [key])
    assert "(see above)" in shown
    for side in (GOOD_KEY[:at], GOOD_KEY[at:]):
        assert len(side) < MIN_FRAGMENT or side not in shown


# Around a quoted fragment: the dangerous alphabet, and text a message really carries.
AROUND = st.lists(st.sampled_from([*" \n\t\x00'\"\\:=/", "a", "Z", "é", "\u202e", "Bearer"])).map(
    "".join
)


@given(
    start=st.integers(min_value=0, max_value=len(GOOD_KEY) - MIN_FRAGMENT),
    length=st.integers(min_value=MIN_FRAGMENT, max_value=len(GOOD_KEY)),
    case=st.sampled_from([str, str.upper, str.lower, str.swapcase]),
    before=AROUND,
    after=AROUND,
)
def test_any_fragment_of_a_key_in_any_case_is_redacted(
    start: int, length: int, case: object, before: str, after: str
) -> None:
    # 40 of 49 characters of a key once survived: only whole runs of a spelling were replaced.
    fragment = case(GOOD_KEY[start : start + length])  # type: ignore[operator]
    shown = redact(f"error {before}{fragment}{after} (see above)", [GOOD_KEY])
    assert "(see above)" in shown
    assert "[redacted]" in shown
    folded = shown.lower()
    key = GOOD_KEY.lower()
    # No window of MIN_FRAGMENT characters of the key is left, in any case.
    assert not any(key[i : i + MIN_FRAGMENT] in folded for i in range(len(key) - MIN_FRAGMENT + 1))


@pytest.mark.parametrize("secret", ["s3cret", "hunter2!"])
def test_a_short_secret_is_still_redacted_whole(secret: str) -> None:
    shown = redact(f"login failed with {secret!r}; again", [secret])
    assert secret not in shown
    assert shown == "login failed with '[redacted]'; again"
