"""Hypothesis: whatever SendGrid answers, batch after batch and run after run, nobody gets
the issue twice, and everyone ends sent, failed or unknown (nobody is forgotten)."""

from __future__ import annotations

import collections
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import db, dispatch, schema
from newsletter.config import load_settings
from newsletter.errors import MailerError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import AudienceSpec, RenderedEmail
from tests.conftest import populate
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body

READERS = 12
ANSWERS = {
    "202": Reply(),
    "400": Reply(400, body=errors_body("bad", "from"), accept=False),
    "401": Reply(401, accept=False),
    "413": Reply(413, accept=False),
    "429": Reply(429, accept=False),
    "500 taken": Reply(500),  # SendGrid may have taken it before failing
    "500 not taken": Reply(500, accept=False),
    "drop after taking": Reply(status=0),
}


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(answers=st.lists(st.sampled_from(sorted(ANSWERS)), max_size=12), size=st.integers(1, 5))
def test_any_sequence_of_answers_keeps_the_promise(
    answers: list[str], size: int, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.delivered.clear()
    fake_sendgrid.script.clear()
    fake_sendgrid.push(*(ANSWERS[a] for a in answers))
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{Path(folder) / 'replay.db'}"
        base = load_settings(Path(folder), env={"NEWSLETTER_DATABASE_URL": url})
        engine = db.connect(base)
        readers = populate(engine, READERS)
        mailer = SendGridMailer(
            load_settings(
                Path(folder),
                env={
                    "SENDGRID_API_KEY": fake_sendgrid.api_key,
                    "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
                },
            ),
            retry=RetryPolicy(attempts=2, base=0.0, cap=0.0),
            sleep=lambda _: None,
        )
        send_until_nothing_is_pending(engine, rendered, mailer, size)
        rows = schema.send_ledger
        with db.reading(engine) as conn:
            state = dict(conn.execute(select(rows.c.email, rows.c.state)).all())
        engine.dispose()
    got = collections.Counter(address for _issue, address in fake_sendgrid.delivered)
    assert max(got.values(), default=0) <= 1  # nobody twice
    assert sorted(state) == readers  # nobody forgotten
    for reader in readers:
        expected = {"sent": {1}, "failed": {0}, "unknown": {0, 1}}[state[reader]]
        assert got[reader] in expected, (reader, state[reader])


def send_until_nothing_is_pending(
    engine: Engine, email: RenderedEmail, mailer: SendGridMailer, size: int
) -> None:
    for _attempt in range(30):  # every run that ends early has made progress
        try:
            dispatch.send_issue(
                engine,
                email,
                AudienceSpec("weekly"),
                mailer,
                lambda public_id: f"https://n.test/u/{public_id}",
                dispatch.SendOptions(batch_size=size),
            )
            return
        except MailerError:
            continue  # refused key or no answer: the editor runs the same command again
    raise AssertionError("the sends never finished")
