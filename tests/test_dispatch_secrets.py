"""The SendGrid key never shows: a canary key through every send path, then search everything."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import pytest

from newsletter import db
from newsletter.config import Settings, load_settings
from newsletter.errors import NewsletterError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import Recipient, RenderedEmail, SendBatch
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
