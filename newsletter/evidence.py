"""Unknowns resolved by evidence: SendGrid's events prove which `unknown` rows it accepted.

A ledger row is `unknown` when its request may or may not have reached SendGrid. Every
personalization carries the row's id as `custom_args.newsletter_key` (and the issue as
`newsletter_issue`), and SendGrid's events echo them; a `processed`, `delivered`,
`deferred`, `bounce` or `dropped` event exists only for a message SendGrid took, so such an
event moves the row to `sent` and names itself in `proof_event`/`proof_event_id`. An event
whose key names another issue, or no row, is kept in `webhook_events` and changes nothing:
the match is on issue *and* id, and only rows still `unknown` move.

Proof is applied twice: by the webhook for the keys of each chunk it stores, and before a
`--resend-unknown`, for events that arrived while the row was still `claimed` (a run that
died after its request went out is only marked `unknown` later).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection

from sqlalchemy import String, and_, cast, exists, func, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql.elements import ColumnElement

from newsletter import db
from newsletter.errors import UsageError
from newsletter.models import LedgerState
from newsletter.schema import send_ledger, webhook_events

# Events SendGrid posts only for a message it accepted (SendGrid's "delivery events").
PROOF_EVENTS = ("processed", "delivered", "deferred", "bounce", "dropped")


def _proof_for_row() -> ColumnElement[bool]:
    """Events of the row's own issue carrying the row's id as ledger key, of a proving kind."""
    return and_(
        webhook_events.c.issue == send_ledger.c.issue,
        webhook_events.c.ledger_key == cast(send_ledger.c.id, String),
        webhook_events.c.event.in_(PROOF_EVENTS),
    )


def _first_proof(column: ColumnElement[str]) -> ColumnElement[str]:
    return (
        select(column)
        .where(_proof_for_row())
        .order_by(webhook_events.c.id)
        .limit(1)
        .scalar_subquery()
    )


def prove(conn: Connection, issue: str | None = None, ids: Collection[int] = ()) -> int:
    """Move `unknown` rows with a proving event to `sent`; returns how many moved.

    Restricted to one issue, or to the ledger ids in `ids` (the keys of a webhook chunk).
    """
    where = [send_ledger.c.state == LedgerState.UNKNOWN, exists().where(_proof_for_row())]
    if issue is not None:
        where.append(send_ledger.c.issue == issue)
    if ids:
        where.append(send_ledger.c.id.in_(sorted(ids)))
    elif issue is None:
        return 0  # neither: nothing was asked for
    result = conn.execute(
        update(send_ledger)
        .where(*where)
        .values(
            state=LedgerState.SENT,
            proof_event=_first_proof(webhook_events.c.event),
            proof_event_id=_first_proof(webhook_events.c.sg_event_id),
            proved_at=db.now(),
            error="",
            updated_at=db.now(),
        )
    )
    return int(result.rowcount)


def unproven(conn: Connection, issue: str) -> int:
    """`unknown` rows of `issue` no stored event proves (those a resend would mail)."""
    query = (
        select(func.count())
        .select_from(send_ledger)
        .where(
            send_ledger.c.issue == issue,
            send_ledger.c.state == LedgerState.UNKNOWN,
            ~exists().where(_proof_for_row()),
        )
    )
    return int(conn.execute(query).scalar_one())


def proven(conn: Connection, issue: str) -> int:
    """Rows of `issue` that an event moved from `unknown` to `sent`."""
    query = (
        select(func.count())
        .select_from(send_ledger)
        .where(send_ledger.c.issue == issue, send_ledger.c.proof_event != "")
    )
    return int(conn.execute(query).scalar_one())


def check_quiet(conn: Connection, issue: str, quiet: dt.timedelta, now: dt.datetime) -> None:
    """Refuse a resend of `issue`'s unknowns until `quiet` has passed since the newest of
    them became unknown: SendGrid posts the events that would prove them within minutes."""
    newest = conn.execute(
        select(func.max(send_ledger.c.updated_at)).where(
            send_ledger.c.issue == issue, send_ledger.c.state == LedgerState.UNKNOWN
        )
    ).scalar_one()
    if newest is None:
        return
    ready = db.aware(newest) + quiet
    if now < ready:
        minutes = quiet.total_seconds() / 60
        raise UsageError(
            f"{issue}: not resending unknown recipients yet. The newest became unknown at "
            f"{db.aware(newest).isoformat(timespec='seconds')}; SendGrid posts the events "
            f"that prove delivery within minutes, so wait until "
            f"{ready.isoformat(timespec='seconds')} ({minutes:g} minutes, the setting "
            "resend_quiet_minutes) and run the command again. Nothing was sent."
        )


def ready_to_resend(engine: Engine, issue: str, quiet_minutes: float) -> None:
    """`check_quiet` in its own read transaction, for `send --resend-unknown`."""
    with db.reading(engine) as conn:
        check_quiet(conn, issue, dt.timedelta(minutes=quiet_minutes), db.now())


def unproven_count(engine: Engine, issue: str) -> int:
    with db.reading(engine) as conn:
        return unproven(conn, issue)
