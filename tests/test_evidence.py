"""Unknowns resolved by evidence, against the real `newsletter serve` over HTTP: a signed
`processed` event for a ledger key moves that `unknown` row to `sent`; a forged one, a key of
another issue or of no row, and replays change nothing; a resend mails only the unproven."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from newsletter import db, dispatch, evidence, webhook
from newsletter.config import Secret
from newsletter.dispatch import SendOptions
from newsletter.errors import UsageError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import AudienceSpec, RenderedEmail
from newsletter.schema import (
    lists,
    memberships,
    send_issues,
    send_ledger,
    send_runs,
    subscribers,
    suppressions,
    webhook_events,
)
from tests.conftest import Served, populate, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body
from tests.test_webhook import encode, event, new_key, public_b64, signed_headers

ISSUE = "2025-12-10"
KEY = new_key()  # generated for this test module; the server is told its public half


def served(serve: Callable[..., Served]) -> Served:
    server = serve("evidence", sendgrid_webhook_public_key=public_b64(KEY))
    with db.writing(server.engine) as conn:
        for table in (webhook_events, send_ledger, send_runs, send_issues, suppressions):
            conn.execute(table.delete())
        for table in (memberships, subscribers, lists):
            conn.execute(table.delete())
    return server


def post(server: Served, events: list[dict[str, Any]], key: Any = KEY) -> httpx.Response:
    body = encode(events)
    return httpx.post(
        server.url + webhook.PATH, content=body, headers=signed_headers(key, body), timeout=30
    )


def ledger(server: Served) -> dict[str, tuple[int, str, str, str]]:
    """address -> (ledger key, state, proving event, its id)"""
    rows = send_ledger.c
    with db.reading(server.engine) as conn:
        found = conn.execute(
            select(rows.email, rows.id, rows.state, rows.proof_event, rows.proof_event_id)
        ).all()
    return {r.email: (r.id, r.state, r.proof_event, r.proof_event_id) for r in found}


def mailer_for(server: Served, fake: FakeSendGrid) -> SendGridMailer:
    pointed = dataclasses.replace(
        server.settings,
        sendgrid_api_key=Secret(fake.api_key),
        sendgrid_api_url=fake.url,
        sendgrid_timeout=1.0,
    )
    return SendGridMailer(pointed, retry=RetryPolicy(attempts=1, base=0.01, cap=0.05))


def send(server: Served, email: RenderedEmail, fake: FakeSendGrid, resend: bool = False) -> Any:
    options = SendOptions(batch_size=5, resend_unknown=resend)
    mailer = mailer_for(server, fake)
    return dispatch.send_issue(
        server.engine,
        email,
        AudienceSpec("weekly"),
        mailer,
        link,
        options,
    )


def link(public_id: str) -> str:
    return f"https://news.test/u/{public_id}"


def with_keys(
    kind: str, address: str, n: int, key: int | str, issue: str = ISSUE
) -> dict[str, Any]:
    return event(kind, address, n, newsletter_issue=issue, newsletter_key=str(key))


@pytest.fixture
def unknown_five(
    serve: Callable[..., Served], rendered: RenderedEmail, fake_sendgrid: FakeSendGrid
) -> tuple[Served, list[str]]:
    """10 readers; the second batch of 5 got a 500 that SendGrid nonetheless accepted."""
    server = served(serve)
    readers = populate(server.engine, 10)
    fake_sendgrid.push(Reply(), Reply(500, body=errors_body("boom")))
    report = send(server, rendered, fake_sendgrid)
    assert (report.sent, report.unknown) == (5, 5)
    return server, readers[5:]


def test_a_processed_event_proves_an_unknown_row_sent_and_a_forged_one_does_not(
    unknown_five: tuple[Served, list[str]],
) -> None:
    server, unknown = unknown_five
    rows = ledger(server)
    proven, forged = unknown[0], unknown[1]
    answer = post(server, [with_keys("processed", proven, 1, rows[proven][0])])
    assert answer.status_code == 200
    stranger = new_key()  # right shape, wrong key: a forgery
    refused = post(server, [with_keys("processed", forged, 2, rows[forged][0])], key=stranger)
    assert refused.status_code == 403
    after = ledger(server)
    assert after[proven] == (rows[proven][0], "sent", "processed", "ev-0001-processed")
    assert after[forged][1:] == ("unknown", "", "")
    with db.reading(server.engine) as conn:
        assert evidence.unproven(conn, ISSUE) == 4


@pytest.mark.parametrize("kind", evidence.PROOF_EVENTS)
def test_every_delivery_event_is_proof(unknown_five: tuple[Served, list[str]], kind: str) -> None:
    server, unknown = unknown_five
    key = ledger(server)[unknown[2]][0]
    assert post(server, [with_keys(kind, unknown[2], 3, key, ISSUE)]).status_code == 200
    assert ledger(server)[unknown[2]][1:3] == ("sent", kind)


def test_opens_other_issues_and_missing_rows_change_nothing_but_are_recorded(
    unknown_five: tuple[Served, list[str]],
) -> None:
    server, unknown = unknown_five
    rows = ledger(server)
    before = ledger(server)
    events = [
        with_keys("open", unknown[0], 1, rows[unknown[0]][0]),  # not proof of acceptance
        with_keys("delivered", unknown[1], 2, rows[unknown[1]][0], issue="2025-12-03"),
        with_keys("delivered", unknown[2], 3, 999_999),  # no such row
        with_keys("delivered", unknown[3], 4, "not-a-number"),
        with_keys("made_up_event", unknown[4], 5, rows[unknown[4]][0]),  # stored, ignored
    ]
    answer = post(server, events)
    assert (answer.status_code, answer.text) == (200, "Received 5 event(s), 5 new.")
    assert ledger(server) == before
    with db.reading(server.engine) as conn:
        kept = conn.execute(select(webhook_events.c.event, webhook_events.c.issue)).all()
    assert sorted(kept) == sorted((e["event"], e["newsletter_issue"]) for e in events)


def test_replays_and_composite_duplicates_change_nothing(
    unknown_five: tuple[Served, list[str]],
) -> None:
    server, unknown = unknown_five
    key = ledger(server)[unknown[0]][0]
    first = [with_keys("processed", unknown[0], 1, key), event("open", unknown[1], 2)]
    assert post(server, first).text == "Received 2 event(s), 2 new."
    after_first = ledger(server)
    assert post(server, first).text == "Received 2 event(s), 0 new."  # a replay
    renamed = [dict(e, sg_event_id=e["sg_event_id"] + "-retried") for e in first]
    assert post(server, renamed).text == "Received 2 event(s), 0 new."  # new ids, same events
    other_click = [event("click", unknown[1], 3, url="https://a.test/x")]
    assert post(server, other_click).text == "Received 1 event(s), 1 new."
    assert ledger(server) == after_first
    with db.reading(server.engine) as conn:
        assert len(conn.execute(select(webhook_events.c.id)).all()) == 3


def test_a_resend_waits_for_the_quiet_period_then_mails_only_the_unproven(
    unknown_five: tuple[Served, list[str]],
    rendered: RenderedEmail,
    fake_sendgrid: FakeSendGrid,
) -> None:
    server, unknown = unknown_five
    rows = ledger(server)
    with pytest.raises(UsageError, match="resend_quiet_minutes") as refused:
        evidence.ready_to_resend(server.engine, ISSUE, 30)
    assert "Nothing was sent" in str(refused.value)
    # Events for two rows arrive while no resend is allowed.
    proof = [with_keys("delivered", a, i, rows[a][0]) for i, a in enumerate(unknown[:2])]
    assert post(server, proof).status_code == 200
    # Half an hour later (the rows' clock moved back) a resend is allowed...
    with db.writing(server.engine) as conn:
        earlier = db.now() - dt.timedelta(minutes=31)
        conn.execute(
            update(send_ledger).where(send_ledger.c.state == "unknown").values(updated_at=earlier)
        )
    evidence.ready_to_resend(server.engine, ISSUE, 30)
    fake_sendgrid.delivered.clear()
    report = send(server, rendered, fake_sendgrid, resend=True)
    # ...and mails only the three no event proved.
    assert report.sent == 3
    got = collections.Counter(address for _issue, address in fake_sendgrid.delivered)
    assert got == collections.Counter(unknown[2:])
    assert {ledger(server)[a][1] for a in unknown} == {"sent"}


def test_a_proof_that_came_before_the_row_was_unknown_counts_at_the_resend(
    unknown_five: tuple[Served, list[str]],
    rendered: RenderedEmail,
    fake_sendgrid: FakeSendGrid,
) -> None:
    """A run died after its request left: the events arrived while the row was `claimed`."""
    server, unknown = unknown_five
    key = ledger(server)[unknown[0]][0]
    with db.writing(server.engine) as conn:
        conn.execute(update(send_ledger).where(send_ledger.c.id == key).values(state="claimed"))
    assert post(server, [with_keys("delivered", unknown[0], 1, key)]).status_code == 200
    assert ledger(server)[unknown[0]][1] == "claimed"  # a live run's row is not touched
    with db.writing(server.engine) as conn:
        conn.execute(update(send_ledger).where(send_ledger.c.id == key).values(state="unknown"))
        assert evidence.unproven(conn, ISSUE) == 4
    fake_sendgrid.delivered.clear()
    send(server, rendered, fake_sendgrid, resend=True)
    assert unknown[0] not in {address for _issue, address in fake_sendgrid.delivered}
    assert ledger(server)[unknown[0]][1:3] == ("sent", "delivered")


def test_the_signature_of_a_post_is_its_own(unknown_five: tuple[Served, list[str]]) -> None:
    """A signature copied onto another body (a replay with a changed key) is refused."""
    server, unknown = unknown_five
    body = encode([with_keys("processed", unknown[0], 1, ledger(server)[unknown[0]][0])])
    headers = signed_headers(KEY, encode([]))
    answer = httpx.post(server.url + webhook.PATH, content=body, headers=headers, timeout=30)
    assert answer.status_code == 403
    assert ledger(server)[unknown[0]][1] == "unknown"


def test_proof_on_every_database(
    engine: Any,
    db_settings: Any,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    """The same SQL on SQLite and PostgreSQL: a proof moves its row, another issue's not."""
    fake_sendgrid.push(Reply(500, body=errors_body("boom")))
    options = SendOptions(batch_size=25)
    report = dispatch.send_issue(engine, rendered, AudienceSpec("weekly"), mailer, link, options)
    assert report.unknown == 25
    rows = {r.email: r.id for r in _rows(engine)}
    events = [
        with_keys("processed", weekly_readers[0], 1, rows[weekly_readers[0]]),
        with_keys("processed", weekly_readers[1], 2, rows[weekly_readers[1]], issue="other"),
        with_keys("open", weekly_readers[2], 3, rows[weekly_readers[2]]),
    ]
    new = webhook.ingest(engine, webhook.parse_events(encode(events)), db_settings)
    assert new == 3
    states = {r.email: (r.state, r.proof_event) for r in _rows(engine)}
    assert states[weekly_readers[0]] == ("sent", "processed")
    assert states[weekly_readers[1]] == ("unknown", "")
    assert states[weekly_readers[2]] == ("unknown", "")
    with db.reading(engine) as conn:
        assert evidence.unproven(conn, ISSUE) == 24
        assert evidence.proven(conn, ISSUE) == 1


def _rows(engine: Any) -> list[Any]:
    with db.reading(engine) as conn:
        return list(conn.execute(select(send_ledger)).all())


def test_status_says_how_many_unknowns_remain_unproven(
    unknown_five: tuple[Served, list[str]], tmp_path: Path
) -> None:
    server, unknown = unknown_five
    key = ledger(server)[unknown[0]][0]
    assert post(server, [with_keys("delivered", unknown[0], 1, key)]).status_code == 200
    env = {"PATH": os.environ.get("PATH", ""), "NEWSLETTER_DATABASE_URL": server.settings.database}
    shown = run_newsletter(tmp_path, "status", ISSUE, env=env)
    assert "unknown 4" in shown.stdout
    assert "proof: 4 of the unknown not yet proven sent by SendGrid events" in shown.stdout
