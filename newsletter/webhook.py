"""SendGrid's signed Event Webhook: verify the raw POST, then apply its events in bulk.

The order is the guarantee: the signature headers are checked for presence, shape and a
fresh timestamp before a byte of the body is read; the body is read up to a cap; its
signature is checked over the exact bytes received (timestamp + body, ECDSA P-256 with
SHA-256, as SendGrid signs them), and only then is it parsed as JSON. Every event of a POST
is validated before anything is written. Events are then stored in chunks of `CHUNK`, each
one multi-row INSERT ... ON CONFLICT DO NOTHING (PostgreSQL: COPY to a temporary table,
then INSERT ... SELECT) in its own short write transaction, so an
unsubscribe arriving during a large ingest waits for one chunk, not the whole POST. An
event is new unless its `sg_event_id` or its fingerprint (message id, event, timestamp,
email, url) is stored already: a POST SendGrid retries, even with new event ids, changes
nothing the second time, and a POST cut short by a crash is completed by SendGrid's retry.
Only new events act: suppressions, soft-bounce counting, and proof for `unknown` ledger
rows (newsletter.evidence).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import functools
import hashlib
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import and_, select
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import audience, db, evidence
from newsletter.config import Settings
from newsletter.errors import (
    AddressError,
    ConfigError,
    EventBatchError,
    SignatureError,
)
from newsletter.schema import ALL_LISTS, webhook_events

log = logging.getLogger(__name__)

PATH = "/webhooks/sendgrid"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
# SendGrid posts a batch every 30 seconds or once it reaches 768 KB, whichever comes first
# ("Getting started with the Event Webhook"). 5 MiB accepts that with room to spare should
# the batch grow, while a stranger cannot make us hold more than this in memory.
MAX_BODY = 5 * 1024 * 1024
# Unix seconds, ASCII digits only: the header is concatenated into the signed bytes as is.
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)
# A DER-encoded P-256 ECDSA signature is at most 72 bytes: at most 96 base64 characters.
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{4,96}={0,2}", re.ASCII)
# Events that suppress an address on every list. `group_unsubscribe` is an unsubscribe from
# a SendGrid ASM group; we send without ASM groups, so any one of them means "stop".
# `bounce` suppresses only with type "bounce" (see `_reason`).
SUPPRESSING = {
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
# Column widths in schema.webhook_events; a longer required field rejects the POST.
LIMITS = {"sg_event_id": 255, "event": 50, "email": 320}
# Optional fields kept for statistics; one longer than this is dropped, not refused.
MESSAGE_ID_LIMIT = 255
URL_LIMIT = 8192
BOUNCE_TYPE_LIMIT = 20
# Events per INSERT and per write transaction: 500 rows take a few milliseconds to write,
# which bounds how long an unsubscribe waits for the lock during a 1,000,000-event ingest.
CHUNK = 500
OFF = (
    "The SendGrid event webhook is off: set sendgrid_webhook_public_key (newsletter.toml or "
    "NEWSLETTER_SENDGRID_WEBHOOK_PUBLIC_KEY) to the verification key shown in SendGrid's "
    "Mail Settings under Signed Event Webhook, then restart `newsletter serve`."
)


# --- Verification ----------------------------------------------------------------------


def load_key(text: str) -> ec.EllipticCurvePublicKey:
    """The P-256 key from SendGrid's settings page (base64 DER; PEM armour is tolerated)."""
    lines = [line for line in text.strip().splitlines() if not line.startswith("-----")]
    try:
        key = load_der_public_key(base64.b64decode("".join(lines), validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm) as exc:
        raise ConfigError(_bad_key("it is not a base64 DER public key")) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ConfigError(_bad_key("it is not an ECDSA P-256 key"))
    return key


def _bad_key(why: str) -> str:
    return (
        f"The setting sendgrid_webhook_public_key cannot be used: {why}. Copy the "
        "verification key again from SendGrid's Mail Settings (Signed Event Webhook)."
    )


def verify(
    key: ec.EllipticCurvePublicKey,
    signature: str | None,
    timestamp: str | None,
    body: bytes,
    *,
    tolerance: float,
    now: float,
) -> None:
    """Raise SignatureError unless SendGrid signed timestamp + body within `tolerance` of now."""
    signature, timestamp = check_headers(signature, timestamp, tolerance=tolerance, now=now)
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        raise SignatureError from None


def check_headers(
    signature: str | None, timestamp: str | None, *, tolerance: float, now: float
) -> tuple[str, str]:
    """The signature and timestamp headers if both are there, well-formed and the timestamp is
    within `tolerance` of now; SignatureError otherwise. Needs no body, so a POST that cannot
    be SendGrid's is refused before it is read."""
    if signature is None or timestamp is None:
        raise SignatureError
    if not _SIGNATURE.fullmatch(signature) or not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError
    if abs(now - int(timestamp)) > tolerance:
        raise SignatureError
    return signature, timestamp


# --- Parsing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    sg_event_id: str
    event: str
    email: str  # normalized
    issue: str  # from custom_args, "" when absent
    ledger_key: str  # from custom_args, "" when absent
    reason: str | None  # the suppression it causes on every list, if any
    sg_message_id: str = ""
    timestamp: int = 0  # the event's Unix time as SendGrid gives it, 0 when absent
    url: str = ""  # the clicked link of a `click`
    bounce_type: str = ""  # "bounce" (hard) or "blocked" (soft) for a `bounce`
    machine_open: bool = False  # SendGrid's sg_machine_open: a proxy or scanner opened it

    @functools.cached_property
    def fingerprint(self) -> str:
        """What makes two events the same though their sg_event_ids differ."""
        parts = [self.sg_message_id, self.event, self.timestamp, self.email, self.url]
        return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()

    @property
    def soft_bounce(self) -> bool:
        return self.event == "bounce" and self.bounce_type != "bounce"


def parse_events(body: bytes) -> list[Event]:
    """Every event of a verified body, or an EventBatchError naming the first bad one."""
    try:
        data = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise EventBatchError(f"The body is not JSON: {exc}.") from exc
    except RecursionError as exc:
        # json's C decoder stops at the interpreter's recursion limit (~1000 levels) and
        # raises this cleanly; SendGrid's events are three levels deep.
        raise EventBatchError(
            "The body is JSON nested too deeply to read; events are flat objects."
        ) from exc
    if not isinstance(data, list):
        raise EventBatchError("The body must be a JSON array of event objects.")
    return [_event(index, item) for index, item in enumerate(data)]


def _event(index: int, item: Any) -> Event:
    if not isinstance(item, dict):
        raise EventBatchError(f"Event {index} is not a JSON object.")
    kind = _required(index, item, "event")
    try:
        email = audience.normalize_email(_required(index, item, "email"))
    except AddressError as exc:
        raise EventBatchError(f"Event {index}, field 'email': {exc}") from exc
    return Event(
        sg_event_id=_required(index, item, "sg_event_id"),
        event=kind,
        email=email,
        issue=_custom_arg(item, "newsletter_issue", 200),
        ledger_key=_custom_arg(item, "newsletter_key", 32),
        reason=_reason(kind, item),
        sg_message_id=_optional(item, "sg_message_id", MESSAGE_ID_LIMIT),
        timestamp=_timestamp(item),
        url=_optional(item, "url", URL_LIMIT),
        bounce_type=_optional(item, "type", BOUNCE_TYPE_LIMIT) if kind == "bounce" else "",
        machine_open=item.get("sg_machine_open") is True,
    )


def _optional(item: dict[str, Any], field: str, limit: int) -> str:
    """An optional text field, "" when absent or unusable (statistics only: never refused)."""
    value = item.get(field)
    if isinstance(value, str) and len(value) <= limit and storable(value):
        return value
    return ""


def _timestamp(item: dict[str, Any]) -> int:
    value = item.get("timestamp")
    # bool is an int to Python; 2**40 s is far past any real event and fits a BIGINT.
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40:
        return value
    return 0


def _required(index: int, item: dict[str, Any], field: str) -> str:
    value = item.get(field)
    if not isinstance(value, str) or not value.strip():
        raise EventBatchError(f"Event {index}, field '{field}': missing or not a text value.")
    if len(value) > LIMITS[field]:
        raise EventBatchError(
            f"Event {index}, field '{field}': longer than {LIMITS[field]} characters."
        )
    if not storable(value):
        raise EventBatchError(
            f"Event {index}, field '{field}': contains a NUL or an unpaired surrogate "
            "(\\u0000, \\ud800...), which no real event has and no database stores."
        )
    return value


def storable(value: str) -> bool:
    """Text every database stores: PostgreSQL refuses NUL, and a lone surrogate (which
    JSON's \\ud800 escape makes) is not UTF-8 at all."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _custom_arg(item: dict[str, Any], name: str, limit: int) -> str:
    """A custom arg we set when sending. Only informational: one we cannot use is dropped
    rather than refusing the batch, which would hold back the bounces in it."""
    value = item.get(name)
    if isinstance(value, str) and len(value) <= limit and storable(value):
        return value
    return ""


def _reason(kind: str, item: dict[str, Any]) -> str | None:
    if kind == "bounce":
        # "blocked" is a temporary refusal (reputation, content), not a dead mailbox.
        return "bounced" if item.get("type") == "bounce" else None
    return SUPPRESSING.get(kind)


# --- Storing ---------------------------------------------------------------------------


def apply_events(
    conn: Connection,
    events: Sequence[Event],
    received_at: dt.datetime,
    soft_limit: int = 3,
    soft_window: dt.timedelta = dt.timedelta(days=30),
) -> int:
    """Store one chunk's events not seen before and act on them; returns how many were new."""
    new = _insert_new(conn, _unique(events), received_at)
    for event in new:
        if event.reason is not None:
            audience.suppress(conn, event.email, event.reason, ALL_LISTS, detail=_detail(event))
    soft = [e for e in new if e.soft_bounce and e.reason is None]
    if soft:
        _suppress_soft_bouncers(conn, soft, soft_limit, soft_window)
    keys = {int(e.ledger_key) for e in new if e.ledger_key.isdigit() and len(e.ledger_key) < 19}
    if any(e.event in evidence.PROOF_EVENTS for e in new) and keys:
        evidence.prove(conn, ids=keys)
    return len(new)


def _detail(event: Event) -> str:
    return f"SendGrid {event.event} event" + (f" ({event.issue})" if event.issue else "")


def _unique(events: Sequence[Event]) -> list[Event]:
    """The chunk without repeats of itself, by event id and by fingerprint."""
    seen: set[str] = set()
    kept = []
    for event in events:
        keys = (event.sg_event_id, "fp:" + event.fingerprint)
        if seen.isdisjoint(keys):
            seen.update(keys)
            kept.append(event)
    return kept


# The stored columns, in the order of `_values`.
_COLUMNS = (
    "sg_event_id", "event", "email", "issue", "ledger_key", "received_at",
    "sg_message_id", "event_at", "url", "bounce_type", "machine_open", "fingerprint",
)  # fmt: skip


def _insert_new(conn: Connection, events: list[Event], received_at: dt.datetime) -> list[Event]:
    """One multi-row INSERT ... ON CONFLICT DO NOTHING for the chunk; the events it added,
    told by RETURNING (rowcount is -1 on PostgreSQL).

    Written as SQL with placeholders, not built by SQLAlchemy: compiling a 500-row VALUES
    clause cost more than the database spent storing it. The values still go through
    each column's bind processor (SQLite's datetime and boolean forms)."""
    if not events:
        return []
    if conn.dialect.name == "postgresql":
        added = _copy_new(conn, events, received_at)
        return [event for event in events if event.sg_event_id in added]
    converters = [webhook_events.c[name].type.bind_processor(conn.dialect) for name in _COLUMNS]
    params: list[Any] = []
    for event in events:
        for convert, value in zip(converters, _values(event, received_at), strict=True):
            params.append(convert(value) if convert else value)
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    row = "(" + ", ".join([mark] * len(_COLUMNS)) + ")"
    # bandit B608: only fixed column names and placeholders are joined; every value is bound.
    sql = (
        f"INSERT INTO webhook_events ({', '.join(_COLUMNS)}) VALUES "  # noqa: S608  # nosec B608
        + ", ".join([row] * len(events))
        + " ON CONFLICT DO NOTHING RETURNING sg_event_id"
    )
    added = set(conn.exec_driver_sql(sql, tuple(params)).scalars())
    return [event for event in events if event.sg_event_id in added]


def _copy_new(conn: Connection, events: list[Event], received_at: dt.datetime) -> set[str]:
    """PostgreSQL: COPY the chunk into a session's temporary table, then one INSERT ...
    SELECT ... ON CONFLICT DO NOTHING: five times faster than binding 6,000 parameters."""
    columns = ", ".join(_COLUMNS)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(
            "CREATE TEMPORARY TABLE IF NOT EXISTS incoming_events "
            "(LIKE webhook_events INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )
        with cursor.copy(f"COPY incoming_events ({columns}) FROM STDIN") as copy:
            for event in events:
                copy.write_row(_values(event, received_at))
        cursor.execute(
            f"INSERT INTO webhook_events ({columns}) "  # noqa: S608  # nosec B608
            f"SELECT {columns} FROM incoming_events ON CONFLICT DO NOTHING "
            "RETURNING sg_event_id"
        )
        added = {str(row[0]) for row in cursor.fetchall()}
        cursor.execute("TRUNCATE incoming_events")  # the next chunk shares the transaction
        return added
    finally:
        cursor.close()


def _values(event: Event, received_at: dt.datetime) -> tuple[Any, ...]:
    return (
        event.sg_event_id,
        event.event,
        event.email,
        event.issue,
        event.ledger_key,
        received_at,
        event.sg_message_id,
        event.timestamp,
        event.url,
        event.bounce_type,
        event.machine_open,
        event.fingerprint,
    )


def _suppress_soft_bouncers(
    conn: Connection, soft: list[Event], limit: int, window: dt.timedelta
) -> None:
    """N soft bounces of an address within the window suppress it, as a hard bounce does.
    One query per chunk; each address's window ends at its newest soft bounce's own time
    (SendGrid may post a backlog at once, so the time received says little)."""
    newest: dict[str, int] = {}
    for event in soft:
        newest[event.email] = max(newest.get(event.email, 0), event.timestamp)
    span = int(window.total_seconds())
    rows = conn.execute(
        select(webhook_events.c.email, webhook_events.c.event_at).where(
            and_(
                webhook_events.c.email.in_(sorted(newest)),
                webhook_events.c.event == "bounce",
                webhook_events.c.bounce_type != "bounce",
                webhook_events.c.event_at >= min(newest.values()) - span,
            )
        )
    ).all()
    counts = Counter(e for e, at in rows if newest[e] - span <= at <= newest[e])
    for email, count in sorted(counts.items()):
        if count >= limit:
            detail = f"{count} soft bounces from SendGrid within {window.days} days"
            audience.suppress(conn, email, "bounced", ALL_LISTS, detail=detail)


def chunks(events: Sequence[Event], size: int = CHUNK) -> Iterator[Sequence[Event]]:
    for start in range(0, len(events), size):
        yield events[start : start + size]


def ingest(engine: Engine, events: Sequence[Event], settings: Settings) -> int:
    """Store a verified POST's events chunk by chunk, each in a short write transaction."""
    new = 0
    window = dt.timedelta(days=settings.soft_bounce_window_days)
    for chunk in chunks(events):
        with db.writing(engine) as conn:
            new += apply_events(conn, chunk, db.now(), settings.soft_bounce_limit, window)
    return new


# --- The route -------------------------------------------------------------------------


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The raw body, or None once it is longer than `limit` (announced or streamed)."""
    announced = request.headers.get("content-length", "")
    if announced.isdigit() and int(announced) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class _Receiver:
    def __init__(self, key: ec.EllipticCurvePublicKey, settings: Settings, engine: Engine) -> None:
        self.key = key
        self.tolerance = settings.sendgrid_webhook_tolerance
        self.settings = settings
        self.engine = engine

    async def receive(self, request: Request) -> Response:
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        try:
            # Before reading: a stranger without plausible headers cannot make us take in
            # even the capped body.
            check_headers(signature, timestamp, tolerance=self.tolerance, now=time.time())
        except SignatureError as exc:
            return PlainTextResponse(str(exc), 403)
        body = await read_capped(request, MAX_BODY)
        if body is None:
            return PlainTextResponse(f"The body is larger than {MAX_BODY} bytes.", 413)
        try:
            verify(self.key, signature, timestamp, body, tolerance=self.tolerance, now=time.time())
        except SignatureError as exc:
            return PlainTextResponse(str(exc), 403)
        try:
            # In a worker thread: parsing 768 KB takes a few hundred milliseconds, during
            # which the event loop must go on answering unsubscribes.
            events = await run_in_threadpool(parse_events, body)
        except EventBatchError as exc:
            log.warning("Refused a signed SendGrid webhook POST: %s", exc)
            return PlainTextResponse(f"{exc} Nothing was stored.", 400)
        new = await run_in_threadpool(self.store, events)
        # Any 2xx stops SendGrid retrying; repeats are answered the same as first deliveries.
        return PlainTextResponse(f"Received {len(events)} event(s), {new} new.", 200)

    def store(self, events: Sequence[Event]) -> int:
        return ingest(self.engine, events, self.settings)


async def _off(_request: Request) -> Response:
    # 503, not 404: SendGrid keeps retrying for a day, so events sent before the key is
    # configured still arrive once it is.
    return PlainTextResponse(OFF, 503)


def routes(settings: Settings, engine: Engine) -> list[Route]:
    """The webhook route; without a key it answers 503 saying how to turn it on."""
    if not settings.sendgrid_webhook_public_key:
        return [Route(PATH, _off, methods=["POST"])]
    key = load_key(settings.sendgrid_webhook_public_key)
    receiver = _Receiver(key, settings, engine)
    return [Route(PATH, receiver.receive, methods=["POST"])]
