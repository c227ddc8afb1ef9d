"""SendGrid's signed Event Webhook: verify the raw POST, then apply its events in one transaction.

The order is the guarantee: the signature headers are checked for presence, shape and a
fresh timestamp before a byte of the body is read; the body is read up to a cap; its
signature is checked over the exact bytes received (timestamp + body, ECDSA P-256 with
SHA-256, as SendGrid signs them), and only then is it parsed as JSON. Every event of a POST
is validated before anything is written, and all of them are stored in one transaction,
keyed by SendGrid's `sg_event_id`, so a POST that SendGrid retries changes nothing the
second time.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from newsletter import audience, db
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
    )


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


def apply_events(conn: Connection, events: Sequence[Event], received_at: dt.datetime) -> int:
    """Record each event not seen before and act on it; returns how many were new."""
    new = 0
    for event in events:
        if not _record(conn, event, received_at):
            continue  # SendGrid sent it before: it has been acted on already
        new += 1
        if event.reason is not None:
            detail = f"SendGrid {event.event} event" + (f" ({event.issue})" if event.issue else "")
            audience.suppress(conn, event.email, event.reason, ALL_LISTS, detail=detail)
    return new


def _record(conn: Connection, event: Event, received_at: dt.datetime) -> bool:
    """True if the event is new."""
    return db.insert_if_absent(
        conn,
        webhook_events,
        {
            "sg_event_id": event.sg_event_id,
            "event": event.event,
            "email": event.email,
            "issue": event.issue,
            "ledger_key": event.ledger_key,
            "received_at": received_at,
        },
    )


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
    def __init__(self, key: ec.EllipticCurvePublicKey, tolerance: float, engine: Engine) -> None:
        self.key = key
        self.tolerance = tolerance
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
            events = parse_events(body)
        except EventBatchError as exc:
            log.warning("Refused a signed SendGrid webhook POST: %s", exc)
            return PlainTextResponse(f"{exc} Nothing was stored.", 400)
        new = await run_in_threadpool(self.store, events)
        # Any 2xx stops SendGrid retrying; repeats are answered the same as first deliveries.
        return PlainTextResponse(f"Received {len(events)} event(s), {new} new.", 200)

    def store(self, events: Sequence[Event]) -> int:
        with db.writing(self.engine) as conn:
            return apply_events(conn, events, db.now())


async def _off(_request: Request) -> Response:
    # 503, not 404: SendGrid keeps retrying for a day, so events sent before the key is
    # configured still arrive once it is.
    return PlainTextResponse(OFF, 503)


def routes(settings: Settings, engine: Engine) -> list[Route]:
    """The webhook route; without a key it answers 503 saying how to turn it on."""
    if not settings.sendgrid_webhook_public_key:
        return [Route(PATH, _off, methods=["POST"])]
    key = load_key(settings.sendgrid_webhook_public_key)
    receiver = _Receiver(key, settings.sendgrid_webhook_tolerance, engine)
    return [Route(PATH, receiver.receive, methods=["POST"])]
