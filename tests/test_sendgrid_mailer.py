"""The SendGrid mailer against a fake SendGrid on 127.0.0.1: each answer maps to one outcome."""

from __future__ import annotations

import dataclasses
import socket
import time
from email.headerregistry import Address
from email.message import EmailMessage

import pytest

from newsletter.config import Settings
from newsletter.errors import AuthError, InterruptedBeforeSending, MailerError, UnreachableError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import BatchOutcome, Recipient, RenderedEmail, SendBatch, SendResult
from tests.conftest import CANARY_KEY
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body

FAST = RetryPolicy(attempts=3, base=0.01, cap=0.05)
BATCH = SendBatch(
    "2025-12-10",
    "weekly",
    (Recipient("a@example.org", "A", "https://n.example/u/1"), Recipient("b@example.org")),
    ("1", "2"),
)


def mailer(settings: Settings, waits: list[float] | None = None) -> SendGridMailer:
    sleep = waits.append if waits is not None else time.sleep
    return SendGridMailer(settings, retry=FAST, sleep=sleep)


def only(outcome: BatchOutcome) -> SendResult:
    assert len(outcome.results) == 1
    return outcome.results[0]


def test_202_is_sent_with_the_message_id_and_the_key_travels_as_bearer(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(headers=(("X-Message-Id", "msg-1"),)))
    result = only(mailer(sendgrid_settings).send_batch(rendered, BATCH))
    assert result == SendResult(("1", "2"), "sent", message_id="msg-1")
    assert fake_sendgrid.delivered == [
        ("2025-12-10", "a@example.org"),
        ("2025-12-10", "b@example.org"),
    ]
    assert fake_sendgrid.mail_sends()[0].headers["Authorization"] == f"Bearer {CANARY_KEY}"


def test_429_waits_until_the_reset_time_then_retries(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    reset = int(time.time()) + 30
    fake_sendgrid.push(Reply(429, headers=(("X-RateLimit-Reset", str(reset)),)), Reply())
    waits: list[float] = []
    slow = dataclasses.replace(FAST, cap=60.0)
    result = only(
        SendGridMailer(sendgrid_settings, retry=slow, sleep=waits.append).send_batch(
            rendered, BATCH
        )
    )
    assert result.state == "sent"
    assert len(waits) == 1
    assert 28 <= waits[0] <= 32
    assert len(fake_sendgrid.mail_sends()) == 2
    assert len(fake_sendgrid.delivered) == 2


def test_429_without_reset_backs_off_within_the_cap(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(429), Reply(429), Reply())
    waits: list[float] = []
    assert only(mailer(sendgrid_settings, waits).send_batch(rendered, BATCH)).state == "sent"
    assert len(waits) == 2
    assert all(0 <= w <= FAST.cap for w in waits)


def test_429_for_ever_gives_up_saying_nothing_was_accepted(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(*[Reply(429)] * FAST.attempts)
    with pytest.raises(UnreachableError, match="nothing was accepted"):
        mailer(sendgrid_settings, []).send_batch(rendered, BATCH)
    assert fake_sendgrid.delivered == []


def test_ctrl_c_during_a_rate_limit_wait_says_nothing_went_out(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    def ctrl_c(_seconds: float) -> None:
        raise KeyboardInterrupt

    fake_sendgrid.push(Reply(429))
    client = SendGridMailer(sendgrid_settings, retry=FAST, sleep=ctrl_c)
    with pytest.raises(InterruptedBeforeSending):
        client.send_batch(rendered, BATCH)
    assert len(fake_sendgrid.mail_sends()) == 1
    assert fake_sendgrid.delivered == []


def test_400_fails_with_sendgrids_field_and_message(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(
        Reply(400, body=errors_body("Invalid email address.", "personalizations.0.to"))
    )
    result = only(mailer(sendgrid_settings).send_batch(rendered, BATCH))
    assert result.state == "failed"
    assert result.error == "personalizations.0.to: Invalid email address."


def test_413_asks_for_a_split(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(413, accept=False))
    assert mailer(sendgrid_settings).send_batch(rendered, BATCH) == BatchOutcome(too_large=True)


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_stops_at_once_without_retrying(
    status: int, sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(status, body=errors_body("denied")))
    with pytest.raises(AuthError, match="Check SENDGRID_API_KEY") as caught:
        mailer(sendgrid_settings, []).send_batch(rendered, BATCH)
    assert CANARY_KEY not in str(caught.value)
    assert len(fake_sendgrid.mail_sends()) == 1


def test_a_wrong_key_is_refused_by_the_server(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.api_key = "SG.another-key"
    with pytest.raises(AuthError):
        mailer(sendgrid_settings).send_batch(rendered, BATCH)


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_unknown_and_never_retried(
    status: int, sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(status, body=errors_body("oops")))
    assert only(mailer(sendgrid_settings).send_batch(rendered, BATCH)).state == "unknown"
    assert len(fake_sendgrid.mail_sends()) == 1


def test_an_answer_slower_than_the_timeout_is_unknown_not_retried(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    settings = dataclasses.replace(sendgrid_settings, sendgrid_timeout=0.3)
    fake_sendgrid.push(Reply(delay=1.5))
    result = only(mailer(settings).send_batch(rendered, BATCH))
    assert result.state == "unknown"
    assert "timed out" in result.error
    # The body did reach the server (which took it): exactly why the outcome is unknown and
    # why it is never posted again. How fast the timeout fires is for benchmarks/.
    assert len(fake_sendgrid.mail_sends()) == 1
    assert fake_sendgrid.delivered == [
        ("2025-12-10", "a@example.org"),
        ("2025-12-10", "b@example.org"),
    ]


def test_a_dropped_connection_is_unknown(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    fake_sendgrid.push(Reply(status=0))
    assert only(mailer(sendgrid_settings).send_batch(rendered, BATCH)).state == "unknown"
    assert len(fake_sendgrid.mail_sends()) == 1


def test_connection_refused_is_retried_then_reported_as_unreachable(
    sendgrid_settings: Settings, rendered: RenderedEmail
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = dataclasses.replace(sendgrid_settings, sendgrid_api_url=f"http://127.0.0.1:{port}")
    waits: list[float] = []
    with pytest.raises(UnreachableError, match="nothing was accepted"):
        mailer(settings, waits).send_batch(rendered, BATCH)
    assert len(waits) == FAST.attempts


def test_sandbox_answers_validated_and_delivers_nothing(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, rendered: RenderedEmail
) -> None:
    settings = dataclasses.replace(sendgrid_settings, sendgrid_sandbox=True)
    assert only(mailer(settings).send_batch(rendered, BATCH)).state == "validated"
    assert fake_sendgrid.mail_sends()[0].body["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert fake_sendgrid.delivered == []


def test_a_scheduled_send_gets_a_batch_id_that_cancels_it(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid
) -> None:
    client = mailer(sendgrid_settings)
    batch_id = client.create_batch_id()
    client.cancel_scheduled(batch_id)
    assert fake_sendgrid.cancelled == [batch_id]


def confirmation() -> EmailMessage:
    message = EmailMessage()
    message["From"] = Address("Central Asia Weekly", addr_spec="digest@news.example.org")
    message["To"] = Address("Aida", addr_spec="aida@example.org")
    message["Subject"] = "Confirm your subscription to weekly"
    message["Message-ID"] = "<c1@news.example.org>"
    message["Auto-Submitted"] = "auto-generated"
    message.set_content("Confirm here:\nhttps://news.example.org/confirm/abc\n")
    return message


def test_a_transactional_message_goes_out_as_one_mail_send(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid
) -> None:
    fake_sendgrid.push(Reply(headers=(("X-Message-Id", "m-9"),)))
    assert mailer(sendgrid_settings).send_message(confirmation()) == "m-9"
    body = fake_sendgrid.mail_sends()[0].body
    assert body["personalizations"] == [{"to": [{"email": "aida@example.org", "name": "Aida"}]}]
    assert body["from"] == {"email": "digest@news.example.org", "name": "Central Asia Weekly"}
    assert body["content"] == [
        {"type": "text/plain", "value": "Confirm here:\nhttps://news.example.org/confirm/abc\n"}
    ]
    assert body["headers"] == {"Auto-Submitted": "auto-generated"}


def test_a_transactional_message_sendgrid_refuses_is_an_error(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid
) -> None:
    fake_sendgrid.push(Reply(400, body=errors_body("Invalid to.", "personalizations.0.to")))
    with pytest.raises(MailerError, match="Invalid to"):
        mailer(sendgrid_settings).send_message(confirmation())


@pytest.mark.parametrize(
    ("addresses", "message"),
    [
        ([f"r{i}@example.org" for i in range(1001)], "1000 or fewer"),
        (["same@example.org", "Same@example.org"], "should be unique"),
    ],
)
def test_the_fake_refuses_what_sendgrid_refuses(
    addresses: list[str], message: str, sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid
) -> None:
    """The fake's own limits, so a batching bug in send_issue would fail loudly."""
    body = {
        "personalizations": [{"to": [{"email": a}]} for a in addresses],
        "from": {"email": "digest@news.example.org"},
        "subject": "s",
        "content": [{"type": "text/plain", "value": "t"}],
    }
    # 1,001 personalizations take the fake a while on a busy machine: not a timeout test.
    patient = dataclasses.replace(sendgrid_settings, sendgrid_timeout=30.0)
    result = only(mailer(patient).post_payload(body, ("1",)))
    assert result.state == "failed"
    assert message in result.error
    assert fake_sendgrid.delivered == []
