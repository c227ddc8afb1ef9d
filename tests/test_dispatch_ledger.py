"""send_issue through the fake SendGrid: what the server received, and what the ledger says."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import gc
import threading

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import audience, db, dispatch, ledger, schema
from newsletter.config import Settings
from newsletter.dispatch import SendOptions
from newsletter.errors import (
    AuthError,
    DispatchError,
    PayloadError,
    SendInterrupted,
    UsageError,
)
from newsletter.mailers.sendgrid import SendGridMailer
from newsletter.models import AudienceSpec, DispatchReport, LedgerState, RenderedEmail
from newsletter.readers import proof_reader
from tests.conftest import AUDIENCE_SIZE
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body

ISSUE = "2025-12-10"
WEEKLY = AudienceSpec("weekly")
SMALL = SendOptions(batch_size=10)  # 25 readers: batches of 10, 10 and 5


def link(public_id: str) -> str:
    return f"https://news.test/u/{public_id}"


def send(
    engine: Engine, email: RenderedEmail, mailer: SendGridMailer, options: SendOptions = SMALL
) -> DispatchReport:
    return dispatch.send_issue(engine, email, WEEKLY, mailer, link, options)


def received(fake: FakeSendGrid) -> collections.Counter[str]:
    return collections.Counter(address for _issue, address in fake.delivered)


def states(engine: Engine) -> dict[str, str]:
    rows = schema.send_ledger
    with db.reading(engine) as conn:
        return dict(
            conn.execute(select(rows.c.email, rows.c.state).where(rows.c.issue == ISSUE)).all()
        )


def test_everyone_gets_it_once_and_the_ledger_says_sent(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    report = send(engine, rendered, mailer)
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)
    assert [len(r.body["personalizations"]) for r in fake_sendgrid.mail_sends()] == [10, 10, 5]
    assert (report.sent, report.batches) == (AUDIENCE_SIZE, 3)
    assert set(states(engine).values()) == {"sent"}


def test_a_rerun_sends_nothing_again(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    send(engine, rendered, mailer)
    report = send(engine, rendered, mailer)
    assert report.sent == 0
    assert max(received(fake_sendgrid).values()) == 1


def test_a_5xx_batch_is_unknown_never_retried_until_resend_unknown(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(Reply(), Reply(500, body=errors_body("boom"), accept=False))
    report = send(engine, rendered, mailer)
    assert (report.sent, report.unknown) == (15, 10)
    unknown = {e for e, s in states(engine).items() if s == "unknown"}
    assert unknown == set(weekly_readers[10:20])
    assert send(engine, rendered, mailer).sent == 0  # at most once: not retried by itself
    again = send(engine, rendered, mailer, dataclasses.replace(SMALL, resend_unknown=True))
    assert again.sent == 10
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)


def test_a_refused_key_stops_the_send_and_gives_the_batch_back(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(Reply(), Reply(401, body=errors_body("bad key"), accept=False))
    with pytest.raises(AuthError):
        send(engine, rendered, mailer)
    assert len(fake_sendgrid.mail_sends()) == 2
    # The refused batch is given back; the last five were never claimed, so have no row yet.
    assert collections.Counter(states(engine).values()) == {"sent": 10, "pending": 10}
    send(engine, rendered, mailer)
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)


def test_413_splits_the_batch_until_it_fits(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(Reply(413, accept=False))
    send(engine, rendered, mailer)
    sizes = [len(r.body["personalizations"]) for r in fake_sendgrid.mail_sends()]
    assert sizes == [10, 5, 5, 10, 5]
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)


def test_400_marks_the_batch_failed_with_sendgrids_reason(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(
        Reply(400, body=errors_body("Invalid from address.", "from.email"), accept=False)
    )
    report = send(engine, rendered, mailer)
    assert (report.failed, report.sent) == (10, 15)
    found = dispatch.undelivered(engine, ISSUE)
    assert {p.error for p in found} == {"from.email: Invalid from address."}


def test_an_unsubscribe_that_lands_mid_send_is_honoured_by_later_batches(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    leaving = weekly_readers[-1]

    def unsubscribe_after_first_batch(report: DispatchReport) -> None:
        if report.batches == 1:
            with db.writing(engine) as conn:
                audience.suppress(conn, leaving, "unsubscribed", scope="weekly")

    report = dispatch.send_issue(
        engine, rendered, WEEKLY, mailer, link, SMALL, progress=unsubscribe_after_first_batch
    )
    assert leaving not in received(fake_sendgrid)
    assert (report.sent, report.skipped) == (AUDIENCE_SIZE - 1, 1)
    assert states(engine)[leaving] == "skipped"


def test_ctrl_c_before_a_batch_left_gives_its_claims_back_not_stuck(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    calls = 0

    def interrupted_in_batch_two(public_id: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 11:  # the first recipient of the second batch, claimed already
            raise KeyboardInterrupt
        return link(public_id)

    with pytest.raises(SendInterrupted) as stopped:
        dispatch.send_issue(engine, rendered, WEEKLY, mailer, interrupted_in_batch_two, SMALL)
    # The second batch's request was still being built: nothing of it left, so it is
    # pending again (a rerun sends it), and the interrupt says so.
    assert collections.Counter(states(engine).values()) == {"sent": 10, "pending": 10}
    assert (stopped.value.sent, stopped.value.unknown, stopped.value.released) == (10, 0, 10)
    assert len(fake_sendgrid.mail_sends()) == 1


def test_changed_content_is_refused_unless_allowed(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(Reply(), Reply(500, accept=False))
    send(engine, rendered, mailer)
    changed = dataclasses.replace(rendered, content_hash="d00dad")
    with pytest.raises(DispatchError, match="--allow-changed"):
        send(engine, changed, mailer, dataclasses.replace(SMALL, resend_unknown=True))
    send(
        engine, changed, mailer, dataclasses.replace(SMALL, resend_unknown=True, allow_changed=True)
    )
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)


def test_changed_content_before_anyone_got_it_needs_no_flag(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(Reply(401, accept=False))
    with pytest.raises(AuthError):
        send(engine, rendered, mailer)
    fixed = dataclasses.replace(rendered, content_hash="f1xed")
    assert send(engine, fixed, mailer).sent == AUDIENCE_SIZE


def test_two_senders_at_once_never_both_claim_a_recipient(
    engine: Engine,
    db_settings: Settings,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    fake_sendgrid.push(*[Reply(delay=0.05)] * 20)  # slow answers, so the two runs overlap
    other = db.connect(db_settings)
    errors: list[BaseException] = []

    def run(on: Engine) -> None:
        try:
            send(on, rendered, mailer, SendOptions(batch_size=3))
        except BaseException as exc:  # surfaced below, with the thread's result
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(e,)) for e in (engine, other)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    other.dispose()
    assert errors == []
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)
    assert set(states(engine).values()) == {"sent"}
    rows = schema.send_ledger
    with db.reading(engine) as conn:
        runs = set(conn.execute(select(rows.c.run_id).distinct()).scalars())
    assert len(runs) == 2  # both runs really claimed a share


def test_the_plan_counts_without_writing(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    with db.writing(engine) as conn:
        audience.suppress(conn, weekly_readers[0], "bounced")
    plan = dispatch.plan_send(engine, rendered, WEEKLY, mailer, SMALL)
    assert (plan.recipients, plan.to_send, plan.batches) == (
        AUDIENCE_SIZE - 1,
        AUDIENCE_SIZE - 1,
        3,
    )
    assert states(engine) == {}
    assert fake_sendgrid.requests == []


def test_the_plan_of_a_rerun_is_what_the_rerun_then_does(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    """Sent, unknown, newly subscribed and newly suppressed readers, counted without writing."""
    fake_sendgrid.push(Reply(), Reply(500, body=errors_body("boom"), accept=False))
    send(engine, rendered, mailer)  # 15 sent, 10 unknown
    with db.writing(engine) as conn:
        for i in range(3):
            audience.add_subscriber(conn, f"late{i}@example.org", "weekly", confirmed=True)
        audience.add_subscriber(conn, "late-and-gone@example.org", "weekly", confirmed=True)
        audience.suppress(conn, "late-and-gone@example.org", "bounced")
    before = states(engine)
    again = dataclasses.replace(SMALL, resend_unknown=True)
    plan = dispatch.plan_send(engine, rendered, WEEKLY, mailer, again)
    assert states(engine) == before  # planning wrote nothing
    assert (plan.recipients, plan.already_sent, plan.to_send, plan.unknown) == (28, 15, 13, 0)
    assert plan.batches == 2
    report = send(engine, rendered, mailer, again)
    assert (report.sent, report.batches) == (plan.to_send, plan.batches)
    assert set(received(fake_sendgrid)) == {
        *weekly_readers,
        "late0@example.org",
        "late1@example.org",
        "late2@example.org",
    }


def test_test_copies_go_anywhere_and_stay_out_of_the_ledger(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    addresses = ["editor@newsroom.test", "boss@elsewhere.test"]
    readers = [proof_reader(address, mailer.settings) for address in addresses]
    dispatch.send_tests(rendered, readers, mailer, "weekly")
    bodies = [r.body for r in fake_sendgrid.mail_sends()]
    assert [b["subject"].startswith("[TEST] ") for b in bodies] == [True, True]
    assert [b["personalizations"][0]["to"][0]["email"] for b in bodies] == [
        "editor@newsroom.test",
        "boss@elsewhere.test",
    ]
    assert states(engine) == {}


def test_sandbox_validates_and_a_real_run_then_sends(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    sandbox = SendGridMailer(dataclasses.replace(mailer.settings, sendgrid_sandbox=True))
    report = send(engine, rendered, sandbox)
    assert (report.validated, report.sent) == (AUDIENCE_SIZE, 0)
    assert fake_sendgrid.delivered == []
    # The plans say what each run then does: a sandbox rerun validates nobody again.
    assert dispatch.plan_send(engine, rendered, WEEKLY, sandbox, SMALL).to_send == 0
    assert send(engine, rendered, sandbox).validated == 0
    assert dispatch.plan_send(engine, rendered, WEEKLY, mailer, SMALL).to_send == AUDIENCE_SIZE
    assert send(engine, rendered, mailer).sent == AUDIENCE_SIZE
    assert received(fake_sendgrid) == collections.Counter(weekly_readers)


def test_a_scheduled_send_carries_send_at_and_one_batch_id_and_can_be_cancelled(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    at = db.now().replace(microsecond=0) + dt.timedelta(hours=20)
    send(engine, rendered, mailer, dataclasses.replace(SMALL, send_at=at))
    bodies = [r.body for r in fake_sendgrid.mail_sends()]
    assert {b["send_at"] for b in bodies} == {int(at.timestamp())}
    assert len({b["batch_id"] for b in bodies}) == 1
    assert dispatch.cancel_send(engine, ISSUE, mailer) == AUDIENCE_SIZE
    assert fake_sendgrid.cancelled == [bodies[0]["batch_id"]]
    assert set(states(engine).values()) == {"pending"}
    with pytest.raises(DispatchError, match="no scheduled send"):
        dispatch.cancel_send(engine, ISSUE, mailer)


def test_a_schedule_too_close_to_cancel_is_refused(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    at = db.now() + dt.timedelta(minutes=5)
    send(engine, rendered, mailer, dataclasses.replace(SMALL, send_at=at))
    with pytest.raises(DispatchError, match="10 minutes"):
        dispatch.cancel_send(engine, ISSUE, mailer)
    assert fake_sendgrid.cancelled == []


def test_scheduling_more_than_72_hours_ahead_is_refused_before_anything_is_sent(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    at = db.now() + dt.timedelta(hours=73)
    with pytest.raises(UsageError, match="72 hours"):
        send(engine, rendered, mailer, dataclasses.replace(SMALL, send_at=at))
    assert fake_sendgrid.requests == []


def claimed_by_a_run_elsewhere(engine: Engine, heartbeat: dt.datetime) -> None:
    """Rows claimed by a run on another machine whose last sign of life was `heartbeat`."""
    with db.writing(engine) as conn:
        ledger.open_send(conn, ISSUE, "weekly", "c0ffee", allow_changed=False)
        run_id = ledger.start_run(conn, ISSUE)
        people = list(audience.select_recipients(conn, WEEKLY))
        claimed, _skipped = ledger.claim_new(conn, ISSUE, run_id, people, "weekly")
        ledger.release(conn, run_id, [c.key for c in claimed[10:]])  # the rest wait, pending
        conn.execute(
            schema.send_runs.update()
            .where(schema.send_runs.c.id == run_id)
            .values(host="another-machine", heartbeat_at=heartbeat)
        )


def test_claims_of_a_silent_run_on_another_machine_become_unknown_after_the_lease(
    engine: Engine, weekly_readers: list[str]
) -> None:
    claimed_by_a_run_elsewhere(engine, db.now() - dispatch.LEASE - dt.timedelta(seconds=1))
    with db.writing(engine) as conn:
        assert ledger.recover(conn, ISSUE, dispatch.LEASE) == 10
    assert collections.Counter(states(engine).values()) == {"unknown": 10, "pending": 15}


def test_claims_of_a_live_run_on_another_machine_are_left_alone(
    engine: Engine, weekly_readers: list[str]
) -> None:
    claimed_by_a_run_elsewhere(engine, db.now())
    with db.writing(engine) as conn:
        assert ledger.recover(conn, ISSUE, dispatch.LEASE) == 0
    assert collections.Counter(states(engine).values()) == {"claimed": 10, "pending": 15}


@dataclasses.dataclass(frozen=True)
class Person:
    public_id: str
    email: str
    first_name: str


def test_claiming_new_rows_keeps_every_field_and_screens_suppressions(engine: Engine) -> None:
    """The batch travels as one JSON parameter: quotes and non-ASCII survive the trip, rows
    come back in ledger order, and a suppressed address is inserted `skipped` with why."""
    people = [
        Person("pub-1", "o'brien@example.org", "Ólafur"),
        Person("pub-2", "blocked@example.org", "Zoë"),
        Person("pub-3", "айгүл@example.kg", 'Ай "Гүл"'),
    ]
    with db.writing(engine) as conn:
        audience.suppress(conn, "blocked@example.org", "bounced")
        run_id = ledger.start_run(conn, ISSUE)
        claimed, skipped = ledger.claim_new(conn, ISSUE, run_id, people, "weekly")
        again, skipped_again = ledger.claim_new(conn, ISSUE, run_id, people, "weekly")
    assert [(c.email, c.first_name, c.public_id) for c in claimed] == [
        ("o'brien@example.org", "Ólafur", "pub-1"),
        ("айгүл@example.kg", 'Ай "Гүл"', "pub-3"),
    ]
    assert int(claimed[0].key) < int(claimed[1].key)
    assert (skipped, again, skipped_again) == (1, [], 0)  # rows already there are not taken
    rows = schema.send_ledger
    with db.reading(engine) as conn:
        found = conn.execute(
            select(rows.c.email, rows.c.state, rows.c.error, rows.c.run_id).order_by(rows.c.id)
        ).all()
    assert [tuple(r) for r in found] == [
        ("o'brien@example.org", "claimed", "", run_id),
        ("blocked@example.org", "skipped", ledger.SUPPRESSED, run_id),
        ("айгүл@example.kg", "claimed", "", run_id),
    ]


@pytest.mark.parametrize(
    "states", [(LedgerState.PENDING,), (LedgerState.PENDING, LedgerState.VALIDATED)]
)
def test_claims_find_waiting_rows_through_the_partial_index(
    engine: Engine, states: tuple[LedgerState, ...]
) -> None:
    """Without it a rerun would walk every row of the issue, a million of them, per batch."""
    with engine.connect() as conn:
        query = ledger.claimable(ISSUE, 1000, states)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")  # an empty table: scan wins
            explain = "EXPLAIN "
        else:
            explain = "EXPLAIN QUERY PLAN "
        compiled = query.compile(conn, compile_kwargs={"render_postcompile": True})
        params = (
            compiled.params
            if conn.dialect.name == "postgresql"
            else tuple(compiled.params.values())
        )
        plan = " ".join(str(row) for row in conn.exec_driver_sql(explain + str(compiled), params))
    assert "ix_send_ledger_waiting" in plan


def test_a_send_leaves_the_garbage_collector_as_it_found_it(
    engine: Engine, weekly_readers: list[str], rendered: RenderedEmail, mailer: SendGridMailer
) -> None:
    """Long-lived objects are frozen only for the send, and an application's own freeze
    (a pre-forking server's, say) survives it."""
    assert gc.get_freeze_count() == 0
    send(engine, rendered, mailer)
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        send(engine, rendered, mailer, dataclasses.replace(SMALL, resend_unknown=True))
        # Nothing more was frozen (frozen objects that died meanwhile leave the count).
        assert gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


def test_a_batch_that_cannot_become_a_request_goes_back_unsent(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    """A link HTML would have to escape (a hand-made `links`) stops the send before any
    request: the claimed rows are given back, not left `unknown`."""
    with pytest.raises(PayloadError, match="Nothing was sent"):
        dispatch.send_issue(
            engine, rendered, WEEKLY, mailer, lambda _id: "https://x.test/u/a&b", SMALL
        )
    assert fake_sendgrid.requests == []
    assert set(states(engine).values()) == {"pending"}
    assert send(engine, rendered, mailer).sent == AUDIENCE_SIZE
