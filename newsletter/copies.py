"""The stored copy of each sent issue: written when a send opens, read by every public page.

A public page never re-renders today's files: an article edited, unpublished or marked
draft after the send, or an issue file that no longer builds, cannot change what the web
copy shows. The copy is written in the transaction that records the issue's content hash
in the send record (`ledger.open_send`), before the first recipient is claimed, so a
copy exists for exactly the content anyone may have received, and a rerun that sends
changed content (`--allow-changed`) replaces it: the copy follows what was last sent.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import or_, select, update
from sqlalchemy.engine import Connection

from newsletter.db import insert_if_absent, now
from newsletter.models import LedgerState, RenderedEmail
from newsletter.placeholders import Tags
from newsletter.schema import issue_copies, send_ledger, send_runs

EDITION = ""  # one edition per issue until editions exist


@dataclass(frozen=True)
class StoredCopy:
    """The rendered issue as sent: placeholders still in, as the mailer got it."""

    issue: str
    list_name: str
    subject: str
    preheader: str
    html: str
    text: str
    content_hash: str
    tags: Tags  # the tags the build placed: the only ones filled


def store(conn: Connection, email: RenderedEmail, list_name: str) -> None:
    """Keep `email` as the issue's copy; an existing copy is replaced only if it differs."""
    values = {
        "issue": email.issue_name,
        "edition": EDITION,
        "list_name": list_name,
        "subject": email.subject,
        "preheader": email.preheader,
        "html": email.html,
        "text": email.text,
        "content_hash": email.content_hash,
        "tags_key": email.tags.key,
        "stored_at": now(),
    }
    if insert_if_absent(conn, issue_copies, values):
        return
    conn.execute(
        update(issue_copies)
        .where(
            issue_copies.c.issue == email.issue_name,
            issue_copies.c.edition == EDITION,
            # Unchanged content keeps its row (and its stored_at): a rerun writes nothing.
            or_(
                issue_copies.c.content_hash != email.content_hash,
                issue_copies.c.list_name != list_name,
            ),
        )
        .values(values)
    )


def current_hash(conn: Connection, issue: str) -> str | None:
    """The content hash of the issue's stored copy (a primary-key lookup), or None."""
    query = select(issue_copies.c.content_hash).where(
        issue_copies.c.issue == issue, issue_copies.c.edition == EDITION
    )
    return conn.execute(query).scalar_one_or_none()


def load(conn: Connection, issue: str) -> StoredCopy | None:
    row = conn.execute(
        select(issue_copies).where(issue_copies.c.issue == issue, issue_copies.c.edition == EDITION)
    ).first()
    if row is None:
        return None
    return StoredCopy(
        row.issue,
        row.list_name,
        row.subject,
        row.preheader,
        row.html,
        row.text,
        row.content_hash,
        Tags(row.tags_key),
    )


def delivered(conn: Connection, issue: str, moment: dt.datetime) -> bool:
    """Whether someone has the issue by `moment`: a `sent` row whose scheduled time has come.

    A scheduled send's rows are `sent` once SendGrid accepted them, hours before anyone
    receives them; until then the issue is embargoed and has no public copy.
    """
    query = (
        select(send_ledger.c.id)
        .select_from(send_ledger.outerjoin(send_runs, send_runs.c.id == send_ledger.c.run_id))
        .where(
            send_ledger.c.issue == issue,
            send_ledger.c.state == LedgerState.SENT,
            or_(send_runs.c.send_at.is_(None), send_runs.c.send_at <= moment),
        )
        .limit(1)
    )
    return conn.execute(query).first() is not None
