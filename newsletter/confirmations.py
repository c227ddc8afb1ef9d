"""The subscribe form's confirmation mail: who the client is, its budgets, the queue and its worker.

A form post never mails inside the request. It is counted against two rolling-hour
budgets (per client, and for everyone) and, when there is something to mail, queued in
`confirmation_queue`; a worker started by `newsletter serve` sends the queue. So the
answer is the same, and takes the same time, whatever the address's state or the list,
and a client that posts 600 times gets its budget's worth of mail, then 429s.

Every accepted post is a row, even one that mails nothing (an unknown or private list,
an address already subscribed): otherwise the budget left would tell a client which of
its posts produced mail. The worker resolves a row (records the membership, or finds
there is nothing to mail) and then sends it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage

from sqlalchemy import and_, delete, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine

from newsletter import audience, db
from newsletter.config import Settings
from newsletter.errors import AuthError, MailerError, NewsletterError, RefusedError
from newsletter.mailers import Mailer
from newsletter.schema import confirmation_queue, subscribers

log = logging.getLogger(__name__)

WINDOW = dt.timedelta(hours=1)
KEEP = dt.timedelta(days=2)  # rows older than this count for nothing and are deleted
# Attempt n of a confirmation is due RETRY[n] after its post: a short outage, a greylisting
# 4xx or a dead worker costs minutes, a long outage hours; all within KEEP.
RETRY = tuple(dt.timedelta(minutes=m) for m in (0, 3, 10, 30, 2 * 60, 6 * 60, 18 * 60))
MAX_ATTEMPTS = len(RETRY)
# How long a claimed row is left to the process that claimed it (a send takes seconds, at
# most smtp_timeout per step); then another process sends it again.
LEASE = dt.timedelta(minutes=2)
BATCH = 50  # rows one worker pass sends at most before it looks at the clock again
# PostgreSQL: posts from several `serve` processes count their budgets one at a time, so
# two of them cannot both take the last unit. (SQLite writes one at a time anyway.)
_BUDGET_LOCK = 0x6E65_7773  # "news"

Build = Callable[[Settings, str, str, str, str], EmailMessage]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- Who is asking ---------------------------------------------------------------------


def client_key(settings: Settings, peer: str, headers: Sequence[tuple[str, str]]) -> str:
    """The budget key of a request: an IPv4 address, or the /64 of an IPv6 address.

    The TCP peer is the client, unless it is one of `trusted_proxies`: then the client is
    the right-most address of `client_ip_header` that is not itself a trusted proxy (the
    left part of that header is whatever the client chose to write). `headers` are the
    request's (name, value) pairs, repeated names included.
    """
    proxies = _networks(settings.trusted_proxies)
    client = _address(peer)
    if client is not None and _trusted(client, proxies):
        wanted = settings.client_ip_header.lower()
        # Every line of the header, in order: a client may send its own line first.
        forwarded = ",".join(value for key, value in headers if key.lower() == wanted)
        for part in reversed([p.strip() for p in forwarded.split(",")]):
            hop = _address(part)
            if hop is None:
                break  # a malformed hop: trust nothing left of it
            client = hop
            if not _trusted(hop, proxies):
                break
    if client is None:
        return peer[:64]
    if isinstance(client, ipaddress.IPv6Address):
        if client.ipv4_mapped is not None:
            return str(client.ipv4_mapped)
        return str(ipaddress.IPv6Network((client, 64), strict=False))
    return str(client)


def _address(text_: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text_.strip().removeprefix("[").removesuffix("]"))
    except ValueError:
        return None


def _networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def _trusted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address, proxies: tuple[Network, ...]
) -> bool:
    return any(address.version == net.version and address in net for net in proxies)


# --- Budgets and the queue -------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    """Over budget: ask again in `retry_after` seconds."""

    retry_after: int


def request(
    conn: Connection, settings: Settings, client: str, address: str, name: str, list_name: str
) -> Refused | None:
    """Count one form post against the budgets and queue it; None when it was accepted.

    The post is stored as asked, and the worker decides what it means (new, known, unknown
    list...): so this does the same work, and takes the same time, whatever the answer.
    """
    stamp = db.now()
    refused = over_budget(conn, settings, client, stamp)
    if refused is not None:
        return refused
    # A name no list can have (too long, a NUL, an unpaired surrogate...) is stored as ""
    # (no list), never sent to the database as is: PostgreSQL refuses NUL, and an error
    # would answer differently from an unknown list.
    fits = audience.LIST_NAME.match(list_name) is not None
    conn.execute(
        insert(confirmation_queue).values(
            email=address,
            name=name,
            list_name=list_name if fits else "",
            client=client,
            requested_at=stamp,
        )
    )
    return None


def over_budget(
    conn: Connection, settings: Settings, client: str, stamp: dt.datetime
) -> Refused | None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _BUDGET_LOCK})
    since = stamp - WINDOW
    recent = confirmation_queue.c.requested_at > since
    for where, limit in (
        (and_(recent, confirmation_queue.c.client == client), settings.subscribe_per_client_hour),
        (recent, settings.subscribe_per_hour),
    ):
        count, oldest = conn.execute(
            select(func.count(), func.min(confirmation_queue.c.requested_at)).where(where)
        ).one()
        if count >= limit:
            # The window frees its first unit when the oldest post in it is an hour old.
            free_at = db.aware(oldest) + WINDOW if oldest is not None else stamp + WINDOW
            return Refused(max(1, math.ceil((free_at - stamp).total_seconds())))
    return None


# --- The worker ------------------------------------------------------------------------


def send_due(settings: Settings, engine: Engine, mailer: Mailer, build: Build) -> int:
    """Resolve and send up to BATCH queued posts each; how many rows were handled."""
    with db.reading(engine) as conn:  # an idle pass takes no write lock
        asked = conn.execute(
            select(confirmation_queue.c.id, confirmation_queue.c.email)
            .where(confirmation_queue.c.email != "")
            .order_by(confirmation_queue.c.id)
            .limit(BATCH)
        ).all()
    if asked:  # rows only pile up with posts: purge the stale ones as new ones come
        with db.writing(engine) as conn:
            stale = confirmation_queue.c.requested_at < _old()
            conn.execute(delete(confirmation_queue).where(stale))
    for row_id, address in asked:
        with db.writing(engine) as conn:
            _resolve(conn, row_id, address)
    return len(asked) + _send_resolved(settings, engine, mailer, build)


def _resolve(conn: Connection, row_id: int, address: str) -> None:
    """What a post means: an unconfirmed membership and a confirmation to send, or nothing.

    The row is claimed by emptying its address (nobody else resolves it twice), in the same
    transaction that records the membership. The posted name stays with the request, never
    on the subscriber: whoever posts last for an unconfirmed address names the pending
    request (all its rows), and confirming takes that name (see `confirm`).
    """
    queue = confirmation_queue.c
    row = conn.execute(select(queue.name, queue.list_name).where(queue.id == row_id)).first()
    claimed = conn.execute(
        update(confirmation_queue)
        .where(queue.id == row_id, queue.email == address)
        .values(email="")
    )
    if row is None or not claimed.rowcount or not row.list_name:
        return
    try:
        pending = audience.request_subscription(conn, address, row.list_name)
    except NewsletterError as exc:  # checked by the form already; a stale row at worst
        log.warning("A queued subscribe request was dropped: %s", exc)
        return
    if pending is None:
        return
    subscriber_id, due = pending
    mine = and_(queue.subscriber_id == subscriber_id, queue.list_name == row.list_name)
    conn.execute(update(confirmation_queue).where(mine).values(name=row.name))
    if due:
        conn.execute(
            update(confirmation_queue).where(queue.id == row_id).values(subscriber_id=subscriber_id)
        )


def confirm(conn: Connection, subscriber_id: int, list_name: str) -> bool:
    """Confirm a double opt-in (audience.confirm_subscription) with the name of its pending
    request: the name posted last for this address and list, never stored before now."""
    queue = confirmation_queue.c
    name = conn.execute(
        select(queue.name)
        .where(queue.subscriber_id == subscriber_id, queue.list_name == list_name)
        .order_by(queue.id.desc())
        .limit(1)
    ).scalar()
    return audience.confirm_subscription(conn, subscriber_id, list_name, name or "")


def _send_resolved(settings: Settings, engine: Engine, mailer: Mailer, build: Build) -> int:
    """Send up to BATCH confirmations whose next attempt is due.

    At least once: a duplicate confirmation is harmless, a lost one is not. Attempt n of a
    row is due RETRY[n] after the post. Each row is claimed by a conditional UPDATE that
    moves it to the first attempt at least LEASE away, so two processes never both send it
    within its lease, and a row claimed by a process that then died is sent again.
    """
    stamp = db.now()
    queue = confirmation_queue.c
    due_now = or_(
        *(
            and_(queue.attempts == n, queue.requested_at <= stamp - wait)
            for n, wait in enumerate(RETRY)
        )
    )
    with db.reading(engine) as conn:
        due = conn.execute(
            select(queue.id, queue.attempts, queue.requested_at)
            .where(queue.sent_at.is_(None), queue.subscriber_id.is_not(None), due_now)
            .order_by(queue.id)
            .limit(BATCH)
        ).all()
    for row_id, attempts, requested_at in due:
        _send_one(settings, engine, mailer, build, row_id, attempts, db.aware(requested_at))
    return len(due)


def _old() -> dt.datetime:
    return db.now() - KEEP


def _send_one(
    settings: Settings,
    engine: Engine,
    mailer: Mailer,
    build: Build,
    row_id: int,
    attempts: int,
    requested_at: dt.datetime,
) -> None:
    with db.writing(engine) as conn:
        claimed = _claim(conn, row_id, attempts, requested_at)
    if claimed is None:
        return
    subscriber_id, message = claimed
    outcome: dict[str, object]
    try:
        mailer.send_message(build(settings, *message))
    except (RefusedError, AuthError) as exc:  # an answer that will not change: give up
        log.warning("A confirmation message was refused (given up): %s", exc)
        outcome = {"error": str(exc)[:500] or type(exc).__name__, "attempts": MAX_ATTEMPTS}
    except MailerError as exc:
        log.warning("A confirmation message could not be sent (will retry): %s", exc)
        outcome = {"error": str(exc)[:500] or type(exc).__name__}
    except Exception as exc:  # a message that cannot be built: record it, never loop on it
        log.exception("A confirmation message could not be built")
        outcome = {"error": f"{type(exc).__name__}: {exc}"[:500], "attempts": MAX_ATTEMPTS}
    else:
        outcome = {"sent_at": db.now()}
    with db.writing(engine) as conn:
        conn.execute(
            update(confirmation_queue).where(confirmation_queue.c.id == row_id).values(**outcome)
        )
        list_name = message[3]
        if "sent_at" in outcome:
            audience.confirmation_sent(conn, subscriber_id, list_name)
        elif outcome.get("attempts") == MAX_ATTEMPTS or _last(row_id, conn):
            audience.confirmation_abandoned(conn, subscriber_id, list_name)


def _last(row_id: int, conn: Connection) -> bool:
    attempts = conn.execute(
        select(confirmation_queue.c.attempts).where(confirmation_queue.c.id == row_id)
    ).scalar()
    return attempts is None or attempts >= MAX_ATTEMPTS


def _claim(
    conn: Connection, row_id: int, attempts: int, requested_at: dt.datetime
) -> tuple[int, tuple[str, str, str, str]] | None:
    """Take the row: (subscriber id, (public id, address, name, list)) to mail, or None if
    another process took it or the subscriber is gone.

    Committed before the send. The row moves to the first attempt due at least LEASE from
    now, so it is not sent again before then, and is sent again after if this process dies.
    """
    queue = confirmation_queue.c
    later = db.now() + LEASE
    following = next(
        (n for n in range(attempts + 1, MAX_ATTEMPTS) if requested_at + RETRY[n] >= later),
        MAX_ATTEMPTS,
    )
    claimed = conn.execute(
        update(confirmation_queue)
        .where(queue.id == row_id, queue.attempts == attempts, queue.sent_at.is_(None))
        .values(attempts=following, error="")
    )
    if not claimed.rowcount:
        return None
    row = conn.execute(
        select(
            subscribers.c.id,
            subscribers.c.public_id,
            subscribers.c.email,
            subscribers.c.name,
            queue.list_name,
        )
        .join(subscribers, subscribers.c.id == queue.subscriber_id)
        .where(queue.id == row_id)
    ).first()
    if row is None:
        return None
    return int(row.id), (row.public_id, row.email, row.name, row.list_name)


def drain(settings: Settings, engine: Engine, mailer: Mailer, build: Build) -> int:
    """Send everything due now, in this thread; how many rows were handled (for tests and
    for a server stopping)."""
    total = 0
    while handled := send_due(settings, engine, mailer, build):
        total += handled
    return total
