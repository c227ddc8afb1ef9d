"""Sending an issue: plan, claim, send and record, batch by batch, at most once per recipient."""

from __future__ import annotations

import contextlib
import datetime as dt
import gc
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import islice

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from newsletter import audience, copies, db, evidence, ledger
from newsletter.errors import (
    AudienceError,
    DispatchError,
    InterruptedBeforeSending,
    MailerError,
    SendInterrupted,
    StorageError,
    UsageError,
)
from newsletter.mailers import Mailer, Scheduler
from newsletter.models import (
    AudienceSpec,
    BatchOutcome,
    DispatchPlan,
    DispatchReport,
    LedgerState,
    Recipient,
    RenderedEmail,
    SendBatch,
    SendResult,
)
from newsletter.schema import ALL_LISTS, send_ledger, suppressions

TEST_PREFIX = "[TEST] "
TOO_LARGE = "the provider refused the message as too large (HTTP 413) even for one recipient"
# A run on another machine that has not beaten for this long is taken for dead
# (the `send_lease` setting; this is its default).
LEASE = dt.timedelta(seconds=60)

Links = Callable[[str], str]  # subscriber public id -> unsubscribe URL
Progress = Callable[[DispatchReport], None]


@dataclass(frozen=True)
class SendOptions:
    batch_size: int = 1000
    resend_unknown: bool = False
    allow_changed: bool = False
    send_at: dt.datetime | None = None
    lease: dt.timedelta = LEASE
    rate_limit: float = 0.0  # messages per second for all workers together; 0: no ceiling


def plan_send(
    engine: Engine, email: RenderedEmail, spec: AudienceSpec, mailer: Mailer, options: SendOptions
) -> DispatchPlan:
    """What `send_issue` would do, computed in a transaction that is rolled back.

    Only the few rows a run would settle first (dead runs' claims, --resend-unknown) are
    changed, then given back; recipients new to the ledger are counted, not inserted, so
    planning a send to a million costs a query, not a million rows written and undone.
    """
    with _rolled_back(engine) as conn:
        ledger.open_send(
            conn,
            email.issue_name,
            spec.list,
            email.content_hash,
            allow_changed=options.allow_changed,
        )
        ledger.recover(conn, email.issue_name, options.lease)
        if options.resend_unknown:
            evidence.prove(conn, email.issue_name)  # only unproven unknowns are resent
            ledger.resend_unknown(conn, email.issue_name)
        # New ones are never suppressed: the audience query leaves suppressed members out.
        new = ledger.count_new(conn, email.issue_name, audience.recipients_query(conn, spec))
        counts = ledger.counts(conn, email.issue_name)
        states = _claimable(mailer)
        blocked = _suppressed_waiting(conn, email.issue_name, spec.list, states)
    to_send = new + sum(counts[state] for state in states) - blocked
    return DispatchPlan(
        issue_name=email.issue_name,
        list_name=spec.list,
        mailer=mailer.name,
        recipients=new + sum(counts.values()),
        already_sent=counts[LedgerState.SENT],
        suppressed=counts[LedgerState.SKIPPED] + blocked,
        to_send=to_send,
        batches=math.ceil(to_send / _batch_size(mailer, options)),
        unknown=counts[LedgerState.UNKNOWN],
        send_at=options.send_at,
    )


def send_issue(
    engine: Engine,
    email: RenderedEmail,
    spec: AudienceSpec,
    mailer: Mailer,
    links: Links,
    options: SendOptions,
    progress: Progress | None = None,
) -> DispatchReport:
    """Send the issue to every recipient the ledger has not yet claimed.

    Other `send_issue` calls (other processes, other hosts) may work on the same issue at
    once: each claims disjoint batches, beats while it runs, and settles the claims of any
    run it finds dead. Ctrl-C raises `SendInterrupted`, which says what the run left.
    """
    schedule = _prepare(engine, email, spec, mailer, options)
    run_id = _start_run(engine, email.issue_name, schedule)
    run = _Run(
        engine,
        run_id,
        email,
        spec.list,
        mailer,
        links,
        options,
        _Left(DispatchReport(email.issue_name)),
    )
    size = _batch_size(mailer, options)
    try:
        with _long_lived_frozen(), _Heartbeat(run):
            report = _deliver_new(
                run, spec, schedule, size, DispatchReport(email.issue_name), progress
            )
            report = _deliver_left(run, schedule, size, report, progress)
    except KeyboardInterrupt as stop:
        unknown = _finish_run(engine, run.run_id)
        done = run.left.report
        raise SendInterrupted(done.sent, done.failed, unknown, run.left.released) from stop
    except BaseException:
        # Not masking what stopped the run: if the database is what failed, the next run
        # finds this process gone and settles its claims then.
        with contextlib.suppress(StorageError):
            _finish_run(engine, run.run_id)
        raise
    _finish_run(engine, run.run_id)
    return report


def send_tests(
    email: RenderedEmail, readers: Sequence[Recipient], mailer: Mailer, list_name: str
) -> list[SendResult]:
    """One `[TEST]` copy per reader (see `readers.proof_reader`), outside the ledger and the
    statistics."""
    results: list[SendResult] = []
    for number, recipient in enumerate(readers, start=1):
        batch = SendBatch(
            email.issue_name, list_name, (recipient,), (f"test-{number}",), TEST_PREFIX
        )
        results.extend(mailer.send_batch(email, batch).results)
    return results


def cancel_send(engine: Engine, issue: str, scheduler: Scheduler) -> int:
    """Cancel a scheduled send; the recipients its batch carried go back to `pending`.

    Returns how many. `_prepare` keeps one still-future schedule per issue at most, under a
    batch_id of its own, so the recorded one is the only one left to cancel.
    """
    with db.reading(engine) as conn:
        record = ledger.send_record(conn, issue)
    if record is None or record.batch_id is None or record.send_at is None:
        raise DispatchError(f"Issue {issue} has no scheduled send to cancel.")
    if record.send_at - db.now() < scheduler.cancel_margin:
        raise DispatchError(
            f"Issue {issue} is scheduled for {record.send_at.isoformat()}: too close (or past) "
            f"to cancel reliably; the {scheduler.name} mailer needs at least "
            f"{_span(scheduler.cancel_margin)} of notice."
        )
    scheduler.cancel_scheduled(record.batch_id)
    with db.writing(engine) as conn:
        return ledger.unschedule(conn, issue, record.batch_id)


@dataclass(frozen=True)
class Status:
    """An issue's send as `newsletter status` shows it."""

    report: DispatchReport
    record: ledger.SendRecord | None
    new: int  # subscribers of the list the ledger has no row for yet (still to claim)
    workers: list[ledger.Worker]


def status(engine: Engine, issue: str) -> Status:
    with db.reading(engine) as conn:
        counts = ledger.counts(conn, issue)
        record = ledger.send_record(conn, issue)
        if record is None:
            return Status(_report(issue, counts), None, 0, [])
        new = _new_on_list(conn, issue, record.list_name)
        workers = ledger.workers(conn, issue)
    return Status(_report(issue, counts), record, new, workers)


def _new_on_list(conn: Connection, issue: str, list_name: str) -> int:
    """Confirmed members of the list with no ledger row yet (0 once the list is deleted).
    The issue's `where` filters are in its file, which status does not read: an upper bound."""
    try:
        people = audience.recipients_query(conn, AudienceSpec(list_name))
    except AudienceError:
        return 0
    return ledger.count_new(conn, issue, people)


def undelivered(engine: Engine, issue: str, page: int = 1000) -> Iterator[ledger.Undelivered]:
    """Every unknown recipient, then every failed one, by address, a page per transaction."""
    for state in ledger.UNDELIVERED_ORDER:
        after = ""
        while True:
            with db.reading(engine) as conn:
                rows = ledger.undelivered(conn, issue, state, after, page)
            yield from rows
            if len(rows) < page:
                break
            after = rows[-1].email


# --- Stages --------------------------------------------------------------------------------


@dataclass
class _Left:
    """What the run has done so far, kept for the report that Ctrl-C prints."""

    report: DispatchReport
    released: int = 0  # rows given back to `pending` (their request never went out)


@dataclass(frozen=True)
class _Run:
    """What every stage of one run needs."""

    engine: Engine
    run_id: int
    email: RenderedEmail
    list_name: str
    mailer: Mailer
    links: Links
    options: SendOptions
    left: _Left


class _Heartbeat:
    """Beats for the run in a thread of its own, every quarter of the lease, and settles
    runs of the same issue it finds dead.

    A thread and not a beat between batches: a request can block far longer than the
    lease (a slow server, a long 429 wait), and the run must not look dead meanwhile. It
    stops beating once another run settled this one (its claims are `unknown` then); the
    run's next claim or record finds that out and stops.
    """

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.stop = threading.Event()
        self.every = run.options.lease.total_seconds() / 4
        self.thread = threading.Thread(target=self._beat, name="newsletter-heartbeat", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _beat(self) -> None:
        run = self.run
        while not self.stop.wait(self.every):
            try:
                with db.writing(run.engine) as conn:
                    if not ledger.beat(conn, run.run_id):
                        return
                # Apart from the beat: holding our own run's row while settling others
                # would make two workers that judge each other wait on each other.
                with db.writing(run.engine) as conn:
                    lease = run.options.lease
                    ledger.recover(conn, run.email.issue_name, lease, but=run.run_id)
            except StorageError:
                continue  # the database is busy or away: beat again next time


@dataclass(frozen=True)
class _Schedule:
    send_at: dt.datetime | None = None
    batch_id: str | None = None
    # which rows a run may claim
    states: tuple[LedgerState, ...] = (LedgerState.PENDING, LedgerState.VALIDATED)


def _prepare(
    engine: Engine, email: RenderedEmail, spec: AudienceSpec, mailer: Mailer, options: SendOptions
) -> _Schedule:
    """Check the content against the ledger, store the copy, settle dead runs, fix the schedule."""
    scheduler = _scheduler_for(mailer, options.send_at)  # refused before anything is written
    with db.writing(engine) as conn:
        record = ledger.open_send(
            conn,
            email.issue_name,
            spec.list,
            email.content_hash,
            allow_changed=options.allow_changed,
        )
        # Before anything else is written: a refusal rolls this transaction back whole.
        _check_schedule(record, options.send_at)
        # With the content hash it names, before any claim: the public copy is what was sent.
        copies.store(conn, email, spec.list)
        ledger.recover(conn, email.issue_name, options.lease)
        if options.resend_unknown:
            evidence.prove(conn, email.issue_name)  # only unproven unknowns are resent
            ledger.resend_unknown(conn, email.issue_name)
    schedule = _Schedule(states=_claimable(mailer))
    if options.send_at is None or scheduler is None:
        return schedule
    if _scheduled(record) and record.batch_id and record.send_at:
        batch_id, send_at = record.batch_id, record.send_at  # resumed (checked above)
    else:
        # A schedule whose time has come is delivered: a later one gets a batch_id of its
        # own, so cancelling it can never reach messages sent under the earlier one.
        batch_id = scheduler.create_batch_id()
        # SQLite keeps no zone: store UTC, or the time read back is off by the offset.
        send_at = options.send_at.astimezone(dt.UTC)
    with db.writing(engine) as conn:
        if not ledger.set_schedule(conn, email.issue_name, batch_id, send_at):
            raise DispatchError(
                f"Issue {email.issue_name} was scheduled by another sender meanwhile; "
                "check `newsletter status` and rerun with its --at time."
            )
    return replace(schedule, send_at=send_at, batch_id=batch_id)


def _scheduler_for(mailer: Mailer, send_at: dt.datetime | None) -> Scheduler | None:
    """The mailer as a Scheduler when the send is scheduled, with `send_at` checked."""
    if send_at is None:
        return None
    if not isinstance(mailer, Scheduler):
        raise DispatchError(f"--at needs the sendgrid mailer; the {mailer.name} mailer sends now.")
    check_send_at(send_at, db.now(), mailer)
    return mailer


def check_send_at(send_at: dt.datetime, now: dt.datetime, scheduler: Scheduler) -> None:
    """`--at` must be aware, in the future, and within what the provider schedules."""
    if send_at.tzinfo is None:
        raise UsageError(
            f"--at {send_at.isoformat()} has no time zone; add one, e.g. 2025-12-10T07:00+06:00."
        )
    if send_at <= now:
        raise UsageError(f"--at {send_at.isoformat()} is in the past; give a future time.")
    if send_at - now > scheduler.max_schedule_ahead:
        ahead = _span(scheduler.max_schedule_ahead)
        raise UsageError(
            f"--at {send_at.isoformat()} is more than {ahead} ahead; the {scheduler.name} "
            f"mailer schedules at most {ahead} in advance. Give an earlier time."
        )


def _span(delta: dt.timedelta) -> str:
    """A limit as people say it: "72 hours", "10 minutes"."""
    minutes = int(delta.total_seconds()) // 60
    if minutes % 60:
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{minutes // 60} hour{'s' if minutes != 60 else ''}"


def _scheduled(record: ledger.SendRecord) -> bool:
    """Whether the issue has a scheduled send whose time has not come yet."""
    if record.batch_id is None or record.send_at is None:
        return False
    return record.send_at > db.now()


def _check_schedule(record: ledger.SendRecord, send_at: dt.datetime | None) -> None:
    """Refuse what would mix a pending scheduled send with another time (or with now).

    A cancel gives back exactly the rows its batch carried; a send at another time (or at
    once) next to it would leave some recipients with a copy that the cancel does not stop.
    """
    if not _scheduled(record):
        return
    # bandit B101: _scheduled(record) checked send_at; the assert only narrows the type.
    assert record.send_at is not None  # nosec B101
    if send_at is not None and int(send_at.timestamp()) == int(record.send_at.timestamp()):
        return  # the same schedule, resumed (new recipients, a rerun after a crash)
    planned = record.send_at.isoformat()
    wanted = f"at {send_at.isoformat()}" if send_at is not None else "now"
    raise DispatchError(
        f"Issue {record.issue} is scheduled for {planned} (batch {record.batch_id}); "
        f"sending it {wanted} as well is refused and nothing was changed. Rerun with "
        f"--at {planned} to add the remaining recipients to that schedule, or cancel it "
        f"first with `newsletter cancel {record.issue}`."
    )


def _start_run(engine: Engine, issue: str, schedule: _Schedule) -> int:
    with db.writing(engine) as conn:
        return ledger.start_run(conn, issue, schedule.batch_id, schedule.send_at)


def _finish_run(engine: Engine, run_id: int) -> int:
    """End the run; returns how many claims it left in flight (now `unknown`)."""
    with db.writing(engine) as conn:
        return ledger.finish_run(conn, run_id)


def _deliver_new(
    run: _Run,
    spec: AudienceSpec,
    schedule: _Schedule,
    size: int,
    report: DispatchReport,
    progress: Progress | None,
) -> DispatchReport:
    """The audience page by page: recipients new to the ledger are inserted as claimed
    (committed) and sent; those it already has are left to `_deliver_left` or are done."""
    with db.errors(run.engine), run.engine.connect() as source:
        members = audience.select_recipients(source, spec)
        while page := list(islice(members, size)):
            # No snapshot held while sending: SQLite's WAL can checkpoint meanwhile.
            source.commit()
            with db.writing(run.engine) as conn:
                claimed, skipped = ledger.claim_new(
                    conn, run.email.issue_name, run.run_id, page, run.list_name
                )
            report = _send_claimed(run, claimed, skipped, schedule, report, progress)
    return report


def _deliver_left(
    run: _Run, schedule: _Schedule, size: int, report: DispatchReport, progress: Progress | None
) -> DispatchReport:
    """Rows earlier runs left pending (given back, resent on purpose, only validated)."""
    while True:
        with db.writing(run.engine) as conn:
            claimed, skipped = ledger.claim(
                conn, run.email.issue_name, run.run_id, size, run.list_name, schedule.states
            )
        if not claimed and not skipped:
            return report
        report = _send_claimed(run, claimed, skipped, schedule, report, progress)


def _send_claimed(
    run: _Run,
    claimed: list[ledger.Claimed],
    skipped: int,
    schedule: _Schedule,
    report: DispatchReport,
    progress: Progress | None,
) -> DispatchReport:
    if not claimed and not skipped:
        return report
    results = _send(run, _batch_or_release(run, claimed, schedule)) if claimed else []
    report = _tally(report, results, skipped)
    run.left.report = report
    if progress is not None:
        progress(report)
    return report


def _batch_or_release(
    run: _Run, claimed: Sequence[ledger.Claimed], schedule: _Schedule
) -> SendBatch:
    """The request's batch; Ctrl-C while it is made gives the claims back (none went out)."""
    try:
        return _batch(run, claimed, schedule)
    except KeyboardInterrupt as stop:
        _release(run, [c.key for c in claimed])
        raise InterruptedBeforeSending from stop


def _release(run: _Run, keys: Sequence[str]) -> None:
    with db.writing(run.engine) as conn:
        run.left.released += ledger.release(conn, run.run_id, keys)


def _pace(run: _Run, count: int) -> None:
    """Wait for this batch's slot under the shared rate ceiling (`send_rate_limit`)."""
    rate = run.options.rate_limit
    if rate <= 0:
        return
    try:
        with db.writing(run.engine) as conn:
            wait = ledger.reserve(conn, run.mailer.name, count, rate)
        time.sleep(wait)
    except KeyboardInterrupt as stop:
        raise InterruptedBeforeSending from stop  # nothing of the batch went out yet


def _batch(run: _Run, claimed: Sequence[ledger.Claimed], schedule: _Schedule) -> SendBatch:
    recipients = tuple(
        Recipient(c.email, c.first_name, run.links(c.public_id), c.public_id) for c in claimed
    )
    keys = tuple(c.key for c in claimed)
    return SendBatch(
        run.email.issue_name,
        run.list_name,
        recipients,
        keys,
        send_at=schedule.send_at,
        batch_id=schedule.batch_id,
    )


def _send(run: _Run, batch: SendBatch) -> list[SendResult]:
    """Send one claimed batch (halving it on 413), recording every outcome as it comes."""
    results: list[SendResult] = []
    waiting = [batch]
    while waiting:
        part = waiting.pop()
        try:
            outcome = _send_part(run, part)
        except (MailerError, InterruptedBeforeSending):
            # Neither this part nor those still waiting reached the provider: give them back.
            _release(run, [key for p in [part, *waiting] for key in p.keys])
            raise
        except KeyboardInterrupt:
            # Ctrl-C with this part on the wire: it stays claimed (finish_run makes it
            # `unknown`), but the halves still waiting after a 413 never left.
            _release(run, [key for p in waiting for key in p.keys])
            raise
        if outcome.too_large and len(part.keys) > 1:
            waiting.extend(_halves(part))
            continue
        done = outcome.results or (SendResult(part.keys, "failed", error=TOO_LARGE),)
        _record(run, done)
        results.extend(done)
    return results


def _send_part(run: _Run, part: SendBatch) -> BatchOutcome:
    _pace(run, len(part.keys))
    return run.mailer.send_batch(run.email, part)


def _record(run: _Run, done: Sequence[SendResult]) -> None:
    """Write one request's outcomes, and count them in what Ctrl-C would report."""
    with db.writing(run.engine) as conn:
        written = ledger.record(conn, run.run_id, done)
    expected = sum(len(result.keys) for result in done)
    if written < expected:
        # Another run took this one for dead meanwhile and reported these rows unknown.
        with db.writing(run.engine) as conn:
            late = ledger.accepted_late(conn, run.run_id, done)
        raise DispatchError(_settled(late))
    run.left.report = _tally(run.left.report, done, 0, requests=0)


def _settled(late: int) -> str:
    if not late:
        return ledger.SETTLED
    return (
        f"{ledger.SETTLED} SendGrid accepted {late} of the recipients marked `unknown` "
        "after that (HTTP 202; their rows keep the message id and say so): they were most "
        "likely delivered, so do not --resend-unknown them without checking."
    )


def _halves(batch: SendBatch) -> list[SendBatch]:
    middle = len(batch.recipients) // 2
    return [
        replace(batch, recipients=batch.recipients[middle:], keys=batch.keys[middle:]),
        replace(batch, recipients=batch.recipients[:middle], keys=batch.keys[:middle]),
    ]


def _tally(
    report: DispatchReport, results: Sequence[SendResult], skipped: int, requests: int = 1
) -> DispatchReport:
    add = {"sent": 0, "failed": 0, "unknown": 0, "validated": 0, "released": 0}
    for result in results:
        add[result.state] += len(result.keys)
    return replace(
        report,
        sent=report.sent + add["sent"],
        failed=report.failed + add["failed"],
        unknown=report.unknown + add["unknown"],
        validated=report.validated + add["validated"],
        skipped=report.skipped + skipped,
        batches=report.batches + (requests if results else 0),
    )


def _report(issue: str, counts: dict[str, int]) -> DispatchReport:
    return DispatchReport(
        issue_name=issue,
        sent=counts[LedgerState.SENT],
        failed=counts[LedgerState.FAILED],
        unknown=counts[LedgerState.UNKNOWN],
        skipped=counts[LedgerState.SKIPPED],
        pending=counts[LedgerState.PENDING],
        claimed=counts[LedgerState.CLAIMED],
        validated=counts[LedgerState.VALIDATED],
    )


def _batch_size(mailer: Mailer, options: SendOptions) -> int:
    return max(1, min(options.batch_size, mailer.max_batch))


def _claimable(mailer: Mailer) -> tuple[LedgerState, ...]:
    """The rows a run may claim: a sandbox run validates; a real run also sends what a
    sandbox run only validated."""
    return (
        (LedgerState.PENDING,) if mailer.sandbox else (LedgerState.PENDING, LedgerState.VALIDATED)
    )


def _suppressed_waiting(
    conn: Connection, issue: str, list_name: str, states: Sequence[LedgerState]
) -> int:
    rows = send_ledger
    query = (
        select(func.count())
        .select_from(rows)
        .where(
            rows.c.issue == issue,
            ledger.WAITING,
            rows.c.state.in_(states),
            rows.c.email.in_(
                select(suppressions.c.email).where(suppressions.c.scope.in_([ALL_LISTS, list_name]))
            ),
        )
    )
    return int(conn.execute(query).scalar_one())


@contextmanager
def _long_lived_frozen() -> Iterator[None]:
    """Keep the garbage collector off what lives through the whole send.

    A send builds millions of short-lived dicts, and each full collection they trigger
    would walk every object already loaded (SQLAlchemy, the rendered issue) again: about
    an eighth of a large send's CPU time, measured with benchmarks/bench_dispatch.py.
    An application that froze objects itself (a pre-forking server, say) is left alone:
    unfreezing is all or nothing, so a freeze we could not undo is not made.
    """
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextmanager
def _rolled_back(engine: Engine) -> Iterator[Connection]:
    with db.errors(engine), engine.connect() as conn:
        transaction = conn.begin()
        try:
            yield conn
        finally:
            transaction.rollback()
