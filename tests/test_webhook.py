"""SendGrid's signed event webhook over HTTP: bodies signed with a real P-256 key, as SendGrid
signs them, posted to the real app on the test database(s)."""

from __future__ import annotations

import base64
import collections
import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sendgrid.helpers.eventwebhook import EventWebhook
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from newsletter import db, dispatch, webhook
from newsletter.config import Settings
from newsletter.dispatch import SendOptions
from newsletter.errors import ConfigError, SignatureError
from newsletter.mailers.sendgrid import SendGridMailer
from newsletter.models import AudienceSpec, RenderedEmail
from newsletter.schema import suppressions, webhook_events
from newsletter.web import create_app
from tests.fakes.sendgrid_server import FakeSendGrid

STRANGER = "never-subscribed@example.net"
Key = ec.EllipticCurvePrivateKey
Request = tuple[bytes, dict[str, str]]  # the body and headers to post
Forgery = Callable[[Key, bytes], Request]


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def public_b64(key: Key) -> str:
    """The verification key as SendGrid's settings page shows it: base64 DER SPKI."""
    der = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode("ascii")


def sign(key: Key, timestamp: str, body: bytes) -> str:
    """What SendGrid puts in X-Twilio-Email-Event-Webhook-Signature."""
    return base64.b64encode(key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def now() -> str:
    return str(int(time.time()))


def encode(events: Any) -> bytes:
    return json.dumps(events, ensure_ascii=False).encode("utf-8")


def signed_headers(key: Key, body: bytes, ts: str = "") -> dict[str, str]:
    ts = ts or now()
    return {
        webhook.SIGNATURE_HEADER: sign(key, ts, body),
        webhook.TIMESTAMP_HEADER: ts,
        "Content-Type": "application/json",
    }


def event(kind: str, email: str, n: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "timestamp": 1765350000,
        "event": kind,
        "sg_event_id": f"ev-{n:04d}-{kind}",
        "sg_message_id": f"msg-{n}.filter0001",
        **extra,
    }


@pytest.fixture
def signer() -> Key:
    return new_key()


@pytest.fixture
def hook_settings(db_settings: Settings, signer: Key) -> Settings:
    return dataclasses.replace(db_settings, sendgrid_webhook_public_key=public_b64(signer))


@pytest.fixture
def client(hook_settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(hook_settings), base_url="https://news.test") as test_client:
        yield test_client


def post(client: TestClient, key: Key, body: bytes, ts: str = "") -> Any:
    return client.post(webhook.PATH, content=body, headers=signed_headers(key, body, ts))


def stored(engine: Engine) -> list[tuple[object, ...]]:
    """Every row the webhook may write, without the times."""
    with db.reading(engine) as conn:
        kept = conn.execute(
            select(suppressions.c.email, suppressions.c.scope, suppressions.c.reason).order_by(
                suppressions.c.email
            )
        ).all()
        seen = conn.execute(
            select(
                webhook_events.c.sg_event_id,
                webhook_events.c.event,
                webhook_events.c.email,
                webhook_events.c.issue,
                webhook_events.c.ledger_key,
            ).order_by(webhook_events.c.sg_event_id)
        ).all()
    return [tuple(row) for row in (*kept, *seen)]


def mixed_batch(readers: list[str]) -> list[dict[str, Any]]:
    keys = {"newsletter_issue": "2025-12-10", "newsletter_key": "17"}
    return [
        event("bounce", readers[0].upper(), 0, type="bounce", reason="550 5.1.1 no such user"),
        event("bounce", readers[1], 1, type="blocked", reason="554 blocked by reputation"),
        event("spamreport", readers[2], 2, **keys),
        event("unsubscribe", readers[3], 3),
        event("group_unsubscribe", readers[4], 4, asm_group_id=7),
        event("delivered", readers[5], 5, response="250 OK", **keys),
        event("open", readers[6], 6, useragent="Mozilla/5.0 — Бишкек"),
        event("dropped", readers[7], 7, reason="Bounced Address"),
        event("bounce", STRANGER, 8, type="bounce"),
    ]


# --- a valid batch acts, and a later send honours it ------------------------------------


def test_a_valid_batch_suppresses_and_the_next_send_skips_those_addresses(
    client: TestClient,
    signer: Key,
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    response = post(client, signer, encode(mixed_batch(weekly_readers)))
    assert response.status_code == 200, response.text

    r = weekly_readers
    with db.reading(engine) as conn:
        kept = conn.execute(
            select(suppressions.c.email, suppressions.c.scope, suppressions.c.reason)
        )
        assert sorted(map(tuple, kept)) == sorted(
            [
                (r[0], "", "bounced"),
                (r[2], "", "spam_report"),
                (r[3], "", "unsubscribed"),
                (r[4], "", "unsubscribed"),
                (STRANGER, "", "bounced"),
            ]
        )
        events = conn.execute(
            select(webhook_events.c.event, webhook_events.c.email, webhook_events.c.issue,
                   webhook_events.c.ledger_key).order_by(webhook_events.c.id)
        ).all()  # fmt: skip
    assert len(events) == 9  # every event is kept, acted on or not
    assert events[2] == ("spamreport", r[2], "2025-12-10", "17")
    assert events[6] == ("open", r[6], "", "")

    report = dispatch.send_issue(
        engine,
        rendered,
        AudienceSpec("weekly"),
        mailer,
        lambda public_id: f"https://news.test/u/{public_id}",
        SendOptions(batch_size=10),
    )
    received = collections.Counter(address for _issue, address in fake_sendgrid.delivered)
    expected = [a for i, a in enumerate(r) if i not in (0, 2, 3, 4)]
    assert received == collections.Counter(expected)
    assert report.sent == len(expected)


def test_the_same_batch_posted_again_changes_nothing(
    client: TestClient,
    signer: Key,
    engine: Engine,
    weekly_readers: list[str],
) -> None:
    body = encode(mixed_batch(weekly_readers))
    first = post(client, signer, body)
    assert first.status_code == 200
    assert "9 new" in first.text
    # An editor lifts the bounce by hand; SendGrid's retry of the old POST must not undo that.
    with db.writing(engine) as conn:
        conn.execute(delete(suppressions).where(suppressions.c.email == weekly_readers[0]))
    before = stored(engine)

    again = post(client, signer, body)  # SendGrid's retry: same events, freshly signed
    assert again.status_code == 200
    assert "0 new" in again.text
    assert stored(engine) == before


def test_a_repeated_event_inside_one_batch_counts_once(
    client: TestClient, signer: Key, engine: Engine
) -> None:
    twice = [event("bounce", STRANGER, 1, type="bounce")] * 2
    response = post(client, signer, encode(twice))
    assert response.status_code == 200
    assert "1 new" in response.text
    assert stored(engine) == [
        (STRANGER, "", "bounced"),
        ("ev-0001-bounce", "bounce", STRANGER, "", ""),
    ]


# --- refused: nothing is stored -------------------------------------------------------------


def _tampered(key: Key, body: bytes) -> Request:
    return body.replace(b"bounce", b"spamreport", 1), signed_headers(key, body)


def _wrong_key(_key: Key, body: bytes) -> Request:
    return body, signed_headers(new_key(), body)


def _without(header: str) -> Forgery:
    def make(key: Key, body: bytes) -> Request:
        headers = signed_headers(key, body)
        del headers[header]
        return body, headers

    return make


def _at(offset: int) -> Forgery:
    def make(key: Key, body: bytes) -> Request:
        return body, signed_headers(key, body, str(int(time.time()) + offset))

    return make


def _timestamp_swapped(key: Key, body: bytes) -> Request:
    headers = signed_headers(key, body, str(int(time.time()) - 5))
    headers[webhook.TIMESTAMP_HEADER] = now()  # the timestamp is part of what is signed
    return body, headers


def _body_only(key: Key, body: bytes) -> Request:
    headers = signed_headers(key, body)
    signature = key.sign(body, ec.ECDSA(hashes.SHA256()))
    headers[webhook.SIGNATURE_HEADER] = base64.b64encode(signature).decode()
    return body, headers


def _not_base64(key: Key, body: bytes) -> Request:
    headers = signed_headers(key, body)
    headers[webhook.SIGNATURE_HEADER] = "not a signature!"
    return body, headers


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(_tampered, id="tampered-body"),
        pytest.param(_wrong_key, id="wrong-key"),
        pytest.param(_without(webhook.SIGNATURE_HEADER), id="no-signature"),
        pytest.param(_without(webhook.TIMESTAMP_HEADER), id="no-timestamp"),
        pytest.param(_at(-601), id="stale"),
        # 60 s past the window: a slow machine must not bring the timestamp back inside it.
        pytest.param(_at(+660), id="from-the-future"),
        pytest.param(_timestamp_swapped, id="timestamp-swapped"),
        pytest.param(_body_only, id="signed-without-timestamp"),
        pytest.param(_not_base64, id="not-base64"),
    ],
)
def test_an_unverified_post_is_403_with_one_text_and_stores_nothing(
    client: TestClient, signer: Key, engine: Engine, make: Forgery
) -> None:
    body = encode([event("bounce", STRANGER, 1, type="bounce")])
    sent_body, headers = make(signer, body)
    response = client.post(webhook.PATH, content=sent_body, headers=headers)
    assert response.status_code == 403
    assert response.text == str(SignatureError())
    assert stored(engine) == []


def test_a_post_just_inside_the_tolerance_is_accepted(
    client: TestClient, signer: Key, engine: Engine
) -> None:
    """The other side of the `stale` case: the window is the setting, not something tighter."""
    body = encode([event("bounce", STRANGER, 1, type="bounce")])
    response = post(client, signer, body, ts=str(int(time.time()) - 590))
    assert response.status_code == 200
    assert len(stored(engine)) == 2


# --- malformed: 400 naming the event and field, nothing stored -----------------------------


GOOD = event("bounce", STRANGER, 0, type="bounce")


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(b"[{not json", "not JSON", id="not-json"),
        pytest.param(encode({"events": [GOOD]}), "JSON array", id="not-an-array"),
        pytest.param(encode([GOOD, "bounce"]), "Event 1 is not a JSON object", id="not-object"),
        pytest.param(
            encode([GOOD, {**GOOD, "sg_event_id": "x", "email": None}]),
            "Event 1, field 'email'",
            id="no-email",
        ),
        pytest.param(
            encode([GOOD, GOOD, {k: v for k, v in GOOD.items() if k != "sg_event_id"}]),
            "Event 2, field 'sg_event_id'",
            id="no-event-id",
        ),
        pytest.param(
            encode([GOOD, {**GOOD, "sg_event_id": "x", "event": ""}]),
            "Event 1, field 'event'",
            id="empty-event",
        ),
        pytest.param(
            encode([GOOD, {**GOOD, "sg_event_id": "x", "email": "not an address"}]),
            "Event 1, field 'email'",
            id="bad-address",
        ),
    ],
)
def test_a_malformed_batch_is_400_naming_the_event_and_stores_nothing(
    client: TestClient, signer: Key, engine: Engine, body: bytes, says: str
) -> None:
    response = post(client, signer, body)
    assert response.status_code == 400
    assert says in response.text
    assert "Nothing was stored" in response.text
    assert stored(engine) == []


# --- size cap ----------------------------------------------------------------------------


def _padded(size: int) -> bytes:
    """A valid batch, padded with JSON whitespace to exactly `size` bytes."""
    body = encode([event("bounce", STRANGER, 1, type="bounce")])
    return body[:-1] + b" " * (size - len(body)) + b"]"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_cap_is_413_and_stores_nothing(
    client: TestClient, signer: Key, engine: Engine, chunked: bool
) -> None:
    body = _padded(webhook.MAX_BODY + 1)
    headers = signed_headers(signer, body)
    if chunked:  # no Content-Length: the cap must hold while streaming too
        pieces = [body[i : i + 65536] for i in range(0, len(body), 65536)]
        response = client.post(webhook.PATH, content=iter(pieces), headers=headers)
    else:
        response = client.post(webhook.PATH, content=body, headers=headers)
    assert response.status_code == 413
    assert stored(engine) == []


def test_a_body_at_the_cap_is_accepted(client: TestClient, signer: Key, engine: Engine) -> None:
    response = post(client, signer, _padded(webhook.MAX_BODY))
    assert response.status_code == 200
    assert len(stored(engine)) == 2


# --- our verifier agrees with SendGrid's own helper --------------------------------------


def test_the_official_sendgrid_helper_agrees_with_our_verifier(
    signer: Key,
) -> None:
    body = encode([event("open", "aida@example.org", 1, useragent="Алматы — Ташкент")])
    ts = now()
    good = sign(signer, ts, body)
    cases = {
        "good": (body, good, ts),
        "tampered body": (body.replace(b"open", b"click"), good, ts),
        "other timestamp": (body, good, str(int(ts) - 1)),
        "other key": (body, sign(new_key(), ts, body), ts),
        "signed body only": (
            body,
            base64.b64encode(signer.sign(body, ec.ECDSA(hashes.SHA256()))).decode(),
            ts,
        ),
    }
    ours = webhook.load_key(public_b64(signer))
    official = EventWebhook(public_b64(signer))
    verdicts = {}
    for name, (payload, signature, stamp) in cases.items():
        theirs = official.verify_signature(payload.decode("utf-8"), signature, stamp)
        try:
            webhook.verify(ours, signature, stamp, payload, tolerance=60, now=float(ts))
            mine = True
        except SignatureError:
            mine = False
        assert mine == theirs, name
        verdicts[name] = mine
    assert verdicts == {name: name == "good" for name in cases}


# --- configuration ---------------------------------------------------------------------


def test_without_a_key_the_webhook_is_off_and_says_how_to_turn_it_on(
    db_settings: Settings, signer: Key, engine: Engine
) -> None:
    with TestClient(create_app(db_settings), base_url="https://news.test") as off:
        body = encode([GOOD])
        response = off.post(webhook.PATH, content=body, headers=signed_headers(signer, body))
    assert response.status_code == 503
    assert "sendgrid_webhook_public_key" in response.text
    assert stored(engine) == []


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("not base64 at all!", id="not-base64"),
        pytest.param(base64.b64encode(b"garbage").decode(), id="not-der"),
        pytest.param(
            base64.b64encode(
                ec.generate_private_key(ec.SECP384R1())
                .public_key()
                .public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            ).decode(),
            id="p384",
        ),
    ],
)
def test_a_malformed_key_stops_the_app_at_start_up(db_settings: Settings, text: str) -> None:
    broken = dataclasses.replace(db_settings, sendgrid_webhook_public_key=text)
    with pytest.raises(ConfigError, match="sendgrid_webhook_public_key"):
        create_app(broken)


def test_the_key_may_be_pasted_as_pem(signer: Key) -> None:
    pem = f"-----BEGIN PUBLIC KEY-----\n{public_b64(signer)}\n-----END PUBLIC KEY-----\n"
    body, ts = b"[]", now()
    webhook.verify(
        webhook.load_key(pem), sign(signer, ts, body), ts, body, tolerance=60, now=float(ts)
    )
