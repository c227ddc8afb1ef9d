"""The send ledger: one row per (issue, recipient), claimed before the request that carries it.

States: ``pending -> claimed -> sent | failed | unknown`` (plus ``skipped`` for a recipient
suppressed at claim time, and ``validated`` for a sandbox run, which a real run sends again).
A recipient new to the ledger gets a row the moment their batch is claimed (inserted as
``claimed``); ``pending`` rows are those given back or set aside to send again. A claim is
committed before the request goes out, so after a crash a row is never ``pending`` if its
request may have left; rows a dead run left ``claimed`` become ``unknown``.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    JSON,
    Integer,
    and_,
    bindparam,
    case,
    column,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.engine import Connection, Row
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Insert

from newsletter.db import aware, insert_ignoring_duplicates, now
from newsletter.errors import DispatchError
from newsletter.models import LedgerState, SendResult
from newsletter.schema import (
    ALL_LISTS,
    LEDGER_STATES,
    WAITING_STATES,
    send_issues,
    send_ledger,
    send_rate,
    send_runs,
    suppressions,
)

STATES = LEDGER_STATES
# The partial index's condition (schema.WAITING) with its values inline, so that SQLite and
# PostgreSQL see that the index holds every row a claim can want (a bound parameter hides that).
WAITING = send_ledger.c.state.in_([literal_column(f"'{state}'") for state in WAITING_STATES])
SUPPRESSED = "suppressed when claimed"


class Addressee(Protocol):
    """What the ledger keeps of a recipient (`audience.Member` fits)."""

    @property
    def public_id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def first_name(self) -> str: ...


class Claimed(NamedTuple):
    """One claimed row: the ledger key and what the request needs to address it.

    A NamedTuple: one is made per recipient, and a frozen dataclass costs several times more.
    """

    key: str
    email: str
    first_name: str
    public_id: str  # the subscriber's opaque public id (column subscriber_public_id)


@dataclass(frozen=True)
class SendRecord:
    """The issue's send as the ledger remembers it."""

    issue: str
    list_name: str
    content_hash: str
    batch_id: str | None
    send_at: dt.datetime | None


# --- The issue's send record --------------------------------------------------------------


def open_send(
    conn: Connection, issue: str, list_name: str, content_hash: str, *, allow_changed: bool
) -> SendRecord:
    """Create or check the send record; a rerun with changed content is refused."""
    # Two senders may start at once: the first insert wins, the other finds its record.
    conn.execute(
        insert_ignoring_duplicates(conn, send_issues).values(
            issue=issue,
            list_name=list_name,
            content_hash=content_hash,
            created_at=now(),
            updated_at=now(),
        )
    )
    record = send_record(conn, issue)
    # bandit B101: open_send inserted the row just above; the assert only narrows the type.
    assert record is not None  # nosec B101
    if record.content_hash != content_hash and not allow_changed and _reached_anyone(conn, issue):
        raise DispatchError(
            f"Issue {issue} was already sent (in part) with different content "
            f"({record.content_hash[:12]}, now {content_hash[:12]}). Recipients of the earlier "
            "version would not get this one. Rerun with --allow-changed to send the new "
            "version to the remaining recipients."
        )
    if record.content_hash != content_hash:
        _update_record(conn, issue, content_hash=content_hash)
    return SendRecord(issue, record.list_name, content_hash, record.batch_id, record.send_at)


def _reached_anyone(conn: Connection, issue: str) -> bool:
    """Whether some recipient may have the earlier version (sent, or possibly sent)."""
    query = select(send_ledger.c.id).where(
        send_ledger.c.issue == issue,
        send_ledger.c.state.in_((LedgerState.SENT, LedgerState.UNKNOWN, LedgerState.CLAIMED)),
    )
    return conn.execute(query.limit(1)).first() is not None


def send_record(conn: Connection, issue: str) -> SendRecord | None:
    row = conn.execute(select(send_issues).where(send_issues.c.issue == issue)).first()
    if row is None:
        return None
    send_at = aware(row.send_at) if row.send_at else row.send_at
    return SendRecord(row.issue, row.list_name, row.content_hash, row.batch_id, send_at)


def set_schedule(conn: Connection, issue: str, batch_id: str, send_at: dt.datetime) -> bool:
    """Record the schedule; False (nothing changed) when another still-future one holds it.

    One conditional statement, so two senders scheduling at once cannot both win.
    """
    moment = now()
    free = or_(
        send_issues.c.send_at.is_(None),
        send_issues.c.send_at <= moment,
        send_issues.c.batch_id == batch_id,  # the same schedule, resumed
    )
    changed = conn.execute(
        update(send_issues)
        .where(send_issues.c.issue == issue, free)
        .values(batch_id=batch_id, send_at=send_at, updated_at=moment)
    ).rowcount
    return bool(changed)


def _update_record(conn: Connection, issue: str, **values: object) -> None:
    conn.execute(
        update(send_issues).where(send_issues.c.issue == issue).values(updated_at=now(), **values)
    )


# --- Runs: who holds the claims --------------------------------------------------------------


def start_run(
    conn: Connection,
    issue: str,
    batch_id: str | None = None,
    send_at: dt.datetime | None = None,
) -> int:
    """A new run; `batch_id` and `send_at` name the scheduled batch its requests carry.

    Stamped on the database's clock, as every later beat is: a host whose own clock is
    slow must not start out looking silent for as long as it is behind."""
    moment = clock(conn)
    result = conn.execute(
        insert(send_runs).values(
            issue=issue,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=moment,
            heartbeat_at=moment,
            batch_id=batch_id,
            send_at=send_at,
        )
    )
    key = result.inserted_primary_key
    # bandit B101: an INSERT always has a primary key; the assert only narrows the type.
    assert key is not None  # nosec B101
    return int(key[0])


def finish_run(conn: Connection, run_id: int) -> int:
    """End a run; claims it still holds (it was interrupted) become `unknown`."""
    left = conn.execute(
        update(send_ledger)
        .where(send_ledger.c.run_id == run_id, send_ledger.c.state == LedgerState.CLAIMED)
        .values(
            state=LedgerState.UNKNOWN,
            error="the send was interrupted while this request may have been in flight",
            updated_at=now(),
        )
    ).rowcount
    conn.execute(
        update(send_runs)
        .where(send_runs.c.id == run_id, send_runs.c.finished_at.is_(None))
        .values(finished_at=now())
    )
    return int(left)


def clock(conn: Connection) -> dt.datetime:
    """The database's time: runs on several hosts judge each other's heartbeats by one clock,
    so a host whose clock is off can neither look dead nor keep a dead run alive.
    (SQLite is one machine's file: its clock is ours.)"""
    if conn.dialect.name != "postgresql":
        return now()
    return aware(conn.execute(select(func.clock_timestamp())).scalar_one())


def beat(conn: Connection, run_id: int) -> bool:
    """Stamp the run's heartbeat; False when another run already settled this one as dead
    (its claims are `unknown` now, and it must not claim or record anything more)."""
    changed = conn.execute(
        update(send_runs)
        .where(send_runs.c.id == run_id, send_runs.c.finished_at.is_(None))
        .values(heartbeat_at=clock(conn))
    ).rowcount
    return bool(changed)


def _hold(conn: Connection, run_id: int) -> None:
    """Inside a claim's transaction: refuse (and so roll the claim back) once the run was
    settled as dead, so a worker that was silent too long never takes rows again."""
    if not beat(conn, run_id):
        raise DispatchError(SETTLED)


SETTLED = (
    "This worker was silent for longer than the lease (send_lease), so another run took it "
    "for dead and marked its claims `unknown`; it stopped without claiming more. Check "
    "`newsletter status ISSUE`, then run the same send again to continue."
)


def recover(conn: Connection, issue: str, lease: dt.timedelta, *, but: int | None = None) -> int:
    """Rows claimed by runs that died become `unknown`: their request may have gone out.

    `but` is the calling run, never judged. See `is_dead` for the rule.
    """
    runs = conn.execute(
        select(send_runs.c.id, send_runs.c.host, send_runs.c.pid, send_runs.c.heartbeat_at).where(
            send_runs.c.issue == issue, send_runs.c.finished_at.is_(None)
        )
    ).all()
    moment = clock(conn)
    dead = [
        r.id
        for r in runs
        if r.id != but and is_dead(r.host, r.pid, moment - aware(r.heartbeat_at), lease)
    ]
    if not dead:
        return 0
    # The rows before the runs: a run's `record` locks its rows and then its run, so taking
    # them in the same order cannot deadlock with a worker that is alive after all. One
    # commit: the run's next claim or record sees both changes, or neither.
    changed = conn.execute(
        update(send_ledger)
        .where(send_ledger.c.run_id.in_(dead), send_ledger.c.state == LedgerState.CLAIMED)
        .values(
            state=LedgerState.UNKNOWN,
            error="the sending process stopped while this request may have been in flight",
            updated_at=now(),
        )
    ).rowcount
    conn.execute(
        update(send_runs)
        .where(send_runs.c.id.in_(dead), send_runs.c.finished_at.is_(None))
        .values(finished_at=moment)
    )
    return int(changed)


def is_dead(host: str, pid: int, silence: dt.timedelta, lease: dt.timedelta) -> bool:
    """Whether a run is dead, from its last heartbeat (database clock) and, on this host,
    its process.

    Silence past the lease means dead on any host, so a frozen process (SIGSTOP, a
    suspended VM) cannot keep its claims forever. Sooner than that only when this host can
    see the process gone AND the run has missed two beats: a host name is not unique (two
    containers may share one), and a live worker elsewhere beats every quarter of the
    lease, so its pid being absent here is no proof while its heartbeat is fresh.
    """
    if silence > lease:
        return True
    return host == socket.gethostname() and silence > lease / 2 and not _process_alive(pid)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process with that id: alive, not ours to judge
    return True


# --- Rows -------------------------------------------------------------------------------------


def count_new(conn: Connection, issue: str, recipients: Select[Any]) -> int:
    """How many of `recipients` (an audience query with an email column) have no row yet."""
    people = recipients.subquery()
    known = exists().where(send_ledger.c.issue == issue, send_ledger.c.email == people.c.email)
    return int(conn.execute(select(func.count()).select_from(people).where(~known)).scalar_one())


def claim(
    conn: Connection,
    issue: str,
    run_id: int,
    limit: int,
    list_name: str,
    states: Sequence[LedgerState],
) -> tuple[list[Claimed], int]:
    """Claim up to `limit` rows in `states`; suppressed ones become `skipped` instead.

    Returns the claimed rows and how many were skipped. Call inside a write transaction
    and commit before sending. PostgreSQL: SKIP LOCKED, so two senders take disjoint rows;
    SQLite: the write transaction (BEGIN IMMEDIATE) serializes claimers.
    """
    _hold(conn, run_id)
    candidates = claimable(issue, limit, states).with_for_update(skip_locked=True)
    # One statement: the rows it returns are exactly the rows this run now holds.
    taken = conn.execute(
        update(send_ledger)
        .where(send_ledger.c.id.in_(candidates))
        .values(state=LedgerState.CLAIMED, run_id=run_id, updated_at=now())
        .returning(*_ADDRESSING)
    ).all()
    return _screen(conn, run_id, taken, list_name)


def claimable(issue: str, limit: int, states: Sequence[LedgerState]) -> Select[tuple[int]]:
    """The ids of the first `limit` rows in `states` (through the partial index)."""
    return (
        select(send_ledger.c.id)
        .where(send_ledger.c.issue == issue, WAITING, send_ledger.c.state.in_(states))
        .order_by(send_ledger.c.id)
        .limit(limit)
    )


def claim_new(
    conn: Connection, issue: str, run_id: int, people: Sequence[Addressee], list_name: str
) -> tuple[list[Claimed], int]:
    """Insert recipients the ledger does not have yet straight as `claimed` by this run.

    One statement for the batch: those already in the ledger (sent, or held by another
    sender) are left alone and not returned; a suppressed address is inserted as
    `skipped` instead (checked in the same statement, so an unsubscribe that landed
    mid-send counts). Same contract as `claim`.
    """
    if not people:
        return [], 0
    _hold(conn, run_id)
    # The batch travels as one JSON parameter expanded by the database: binding a thousand
    # rows one parameter at a time costs more in SQLAlchemy than the INSERT in SQLite.
    batch = [[p.email, p.public_id, p.first_name] for p in people]
    taken = conn.execute(_claim_new_statement(conn, issue, run_id, list_name), {"batch": batch})
    rows = sorted(map(tuple, taken.all()))  # (id, email, first_name, public id, state)
    skipped = [r[0] for r in rows if r[4] == LedgerState.SKIPPED]
    if skipped:
        _set(conn, skipped, error=SUPPRESSED)
    claimed = [
        Claimed(str(i), e, f, p) for i, e, f, p, state in rows if state == LedgerState.CLAIMED
    ]
    return claimed, len(skipped)


def _claim_new_statement(conn: Connection, issue: str, run_id: int, list_name: str) -> Insert:
    elements = "json_array_elements" if conn.dialect.name == "postgresql" else "json_each"
    people = getattr(func, elements)(bindparam("batch", type_=JSON)).table_valued(
        column("value", JSON)
    )
    email = people.c.value[0].as_string()
    blocked = exists().where(
        suppressions.c.email == email, suppressions.c.scope.in_([ALL_LISTS, list_name])
    )
    source = select(
        literal(issue, send_ledger.c.issue.type),
        email,
        people.c.value[1].as_string(),
        people.c.value[2].as_string(),
        # Plain values: a bare enum literal would let SQLAlchemy bind it by member name.
        case((blocked, LedgerState.SKIPPED.value), else_=LedgerState.CLAIMED.value),
        literal(run_id, Integer),
        literal(now(), send_ledger.c.updated_at.type),
    ).where(true())  # SQLite needs a WHERE to tell the upsert's ON CONFLICT from a join's ON
    columns = ["issue", "email", "subscriber_public_id", "first_name", "state"]
    insert = insert_ignoring_duplicates(conn, send_ledger)
    return insert.from_select([*columns, "run_id", "updated_at"], source).returning(
        *_ADDRESSING, send_ledger.c.state
    )


_ADDRESSING = (
    send_ledger.c.id,
    send_ledger.c.email,
    send_ledger.c.first_name,
    send_ledger.c.subscriber_public_id,
)


def _screen(
    conn: Connection, run_id: int, taken: Sequence[Row[Any]], list_name: str
) -> tuple[list[Claimed], int]:
    """Suppressed addresses among freshly claimed rows become `skipped` (checked now, so an
    unsubscribe that landed mid-send counts); the rest are returned in ledger order."""
    if not taken:
        return [], 0
    # Plain tuples (id, email, first_name, public id): a Row's attribute access costs more.
    rows = sorted(map(tuple, taken))
    blocked = suppressed(conn, [r[1] for r in rows], list_name)
    if blocked:
        _set(
            conn,
            [r[0] for r in rows if r[1] in blocked],
            state=LedgerState.SKIPPED,
            error=SUPPRESSED,
        )
    claimed = [Claimed(str(i), e, f, p) for i, e, f, p in rows if e not in blocked]
    return claimed, len(rows) - len(claimed)


def suppressed(conn: Connection, emails: Sequence[str], list_name: str) -> set[str]:
    """The addresses among `emails` suppressed for the list or for every list."""
    query = select(suppressions.c.email).where(
        suppressions.c.email.in_(emails), suppressions.c.scope.in_([ALL_LISTS, list_name])
    )
    return set(conn.execute(query).scalars())


def record(conn: Connection, run_id: int, results: Iterable[SendResult]) -> int:
    """Write outcomes for rows this run still holds; returns how many rows were written.

    Rows another run settled as `unknown` (it took this one for dead) are left as they are:
    that run already reported them, and a row must not change under an operator who may
    be acting on the report. The caller compares the count and stops.
    """
    written = sent = 0
    for result in results:
        if result.state == "released":
            written += release(conn, run_id, result.keys)
            continue
        ids = [int(k) for k in result.keys]
        changed = conn.execute(
            update(send_ledger)
            .where(
                send_ledger.c.id.in_(ids),
                send_ledger.c.run_id == run_id,
                send_ledger.c.state == LedgerState.CLAIMED,
            )
            .values(
                state=result.state,
                message_id=result.message_id[:100],
                error=result.error,
                updated_at=now(),
            )
        ).rowcount
        written += changed
        sent += changed if result.state == "sent" else 0
    if sent:
        conn.execute(
            update(send_runs).where(send_runs.c.id == run_id).values(sent=send_runs.c.sent + sent)
        )
    return written


def accepted_late(conn: Connection, run_id: int, results: Iterable[SendResult]) -> int:
    """After this run was settled as dead: rows of its accepted (202) results that the
    settling made `unknown` keep that state but get the message id and a note, so whoever
    decides on --resend-unknown can see SendGrid took them. Returns how many rows."""
    noted = 0
    for result in results:
        if result.state != "sent":
            continue
        noted += conn.execute(
            update(send_ledger)
            .where(
                send_ledger.c.id.in_([int(k) for k in result.keys]),
                send_ledger.c.run_id == run_id,
                send_ledger.c.state == LedgerState.UNKNOWN,
            )
            .values(message_id=result.message_id[:100], error=ACCEPTED_LATE, updated_at=now())
        ).rowcount
    return noted


ACCEPTED_LATE = (
    "SendGrid accepted this request (HTTP 202, message id kept) after the worker had been "
    "taken for dead: most likely delivered; --resend-unknown would send it again"
)


def release(conn: Connection, run_id: int, keys: Sequence[str]) -> int:
    """Back to `pending`: for claims whose request certainly never reached the provider."""
    changed = conn.execute(
        update(send_ledger)
        .where(
            send_ledger.c.id.in_([int(k) for k in keys]),
            send_ledger.c.run_id == run_id,
            send_ledger.c.state == LedgerState.CLAIMED,
        )
        .values(state=LedgerState.PENDING, run_id=None, updated_at=now())
    ).rowcount
    return int(changed)


def resend_unknown(conn: Connection, issue: str) -> int:
    """The explicit way out of at-most-once: `unknown` rows become `pending` again."""
    result = conn.execute(
        update(send_ledger)
        .where(send_ledger.c.issue == issue, send_ledger.c.state == LedgerState.UNKNOWN)
        .values(state=LedgerState.PENDING, run_id=None, error="", updated_at=now())
    )
    return int(result.rowcount)


def _set(conn: Connection, ids: list[int], **values: object) -> None:
    conn.execute(
        update(send_ledger).where(send_ledger.c.id.in_(ids)).values(updated_at=now(), **values)
    )


# --- Reading ----------------------------------------------------------------------------------


def counts(conn: Connection, issue: str) -> dict[str, int]:
    """Rows per state for one issue (every state present, zero when none)."""
    query = (
        select(send_ledger.c.state, func.count())
        .where(send_ledger.c.issue == issue)
        .group_by(send_ledger.c.state)
    )
    found = {state: int(n) for state, n in conn.execute(query)}
    return {state: found.get(state, 0) for state in STATES}


@dataclass(frozen=True)
class Undelivered:
    """A recipient whose row is `failed` or `unknown`, with the error the mailer gave."""

    email: str
    state: str
    error: str
    updated_at: dt.datetime


# `status --details` lists what needs a decision first: `unknown` (resend or not), then failed.
UNDELIVERED_ORDER = (LedgerState.UNKNOWN, LedgerState.FAILED)


def undelivered(
    conn: Connection, issue: str, state: LedgerState, after: str = "", limit: int = 1000
) -> list[Undelivered]:
    """One page of `state` rows (failed or unknown) by address, those after `after`.

    Keyset paging over the (issue, email) unique index: each page costs the same however
    deep into a large list it is, and rows settled meanwhile cannot shift a page.
    """
    query = (
        select(
            send_ledger.c.email, send_ledger.c.state, send_ledger.c.error, send_ledger.c.updated_at
        )
        .where(
            and_(
                send_ledger.c.issue == issue,
                send_ledger.c.state == state,
                send_ledger.c.email > after,
            )
        )
        .order_by(send_ledger.c.email)
        .limit(limit)
    )
    return [Undelivered(*row) for row in conn.execute(query)]


@dataclass(frozen=True)
class Worker:
    """A run that has not finished: a `newsletter send` process, live or not yet settled."""

    run_id: int
    host: str
    pid: int
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    sent: int
    silence: dt.timedelta  # since its last heartbeat, on the database's clock


def workers(conn: Connection, issue: str) -> list[Worker]:
    """The unfinished runs of `issue`, oldest first."""
    moment = clock(conn)
    runs = conn.execute(
        select(
            send_runs.c.id,
            send_runs.c.host,
            send_runs.c.pid,
            send_runs.c.started_at,
            send_runs.c.heartbeat_at,
            send_runs.c.sent,
        )
        .where(send_runs.c.issue == issue, send_runs.c.finished_at.is_(None))
        .order_by(send_runs.c.id)
    ).all()
    return [
        Worker(
            r.id,
            r.host,
            r.pid,
            aware(r.started_at),
            aware(r.heartbeat_at),
            r.sent,
            moment - aware(r.heartbeat_at),
        )
        for r in runs
    ]


# --- The shared rate ceiling -------------------------------------------------------------------


def reserve(conn: Connection, name: str, count: int, rate: float) -> float:
    """Reserve the next slot for `count` messages under `rate` per second; returns how many
    seconds to wait before sending them.

    The row holds the moment (database clock, in seconds) from which the next message may
    leave. One UPDATE moves it past this batch's share, so workers on any host take
    disjoint slots in turn and together never send faster than `rate` (plus one batch).
    Idle time is not saved up: a quiet minute buys no burst afterwards.
    """
    clock_now = _epoch(conn)
    conn.execute(insert_ignoring_duplicates(conn, send_rate).values(name=name, next_at=0.0))
    start = func.max if conn.dialect.name == "sqlite" else func.greatest
    begins = start(send_rate.c.next_at, clock_now)
    taken = conn.execute(
        update(send_rate)
        .where(send_rate.c.name == name)
        .values(next_at=begins + count / rate)
        .returning(send_rate.c.next_at - count / rate - clock_now)
    ).scalar_one()
    return max(0.0, float(taken))


def _epoch(conn: Connection) -> Any:
    """The database's clock in seconds, as an SQL expression evaluated in the statement."""
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", func.clock_timestamp())
    return (func.julianday("now") - 2440587.5) * 86400.0


def unschedule(conn: Connection, issue: str, batch_id: str) -> int:
    """After `batch_id` was cancelled: the rows it carried go back to `pending`.

    Only rows sent by runs under that batch whose send_at is still ahead: rows sent at once,
    or under an earlier schedule whose time has come, were delivered and stay `sent`.
    """
    moment = now()
    carriers = select(send_runs.c.id).where(
        send_runs.c.issue == issue, send_runs.c.batch_id == batch_id, send_runs.c.send_at > moment
    )
    changed = conn.execute(
        update(send_ledger)
        .where(
            send_ledger.c.issue == issue,
            send_ledger.c.state == LedgerState.SENT,
            send_ledger.c.run_id.in_(carriers),
        )
        .values(state=LedgerState.PENDING, run_id=None, message_id="", updated_at=moment)
    ).rowcount
    conn.execute(
        update(send_issues)
        .where(send_issues.c.issue == issue, send_issues.c.batch_id == batch_id)
        .values(batch_id=None, send_at=None, updated_at=moment)
    )
    return int(changed)
