"""SendGrid v3 Mail Send: payloads as plain dicts, and the mailer that posts them."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.headerregistry import Address
from email.message import EmailMessage
from typing import Any

# Absolute import: this module is `newsletter.mailers.sendgrid`, the package below is the
# real one.
import python_http_client
import sendgrid

from newsletter import placeholders
from newsletter.config import Settings, check_api_key
from newsletter.errors import (
    AuthError,
    ConfigError,
    InterruptedBeforeSending,
    MailerError,
    PayloadError,
    UnreachableError,
)
from newsletter.headers import addresses, wire_value
from newsletter.mailers import wire
from newsletter.message import list_id_header
from newsletter.models import BatchOutcome, Recipient, RenderedEmail, SendBatch, SendResult

MAX_PERSONALIZATIONS = 1000
MAX_CATEGORIES = 10
# SendGrid's scheduling limits (the Scheduler protocol's): send_at at most 72 hours ahead,
# and a cancellation at least 10 minutes before the scheduled time.
MAX_SCHEDULE_AHEAD = dt.timedelta(hours=72)
CANCEL_MARGIN = dt.timedelta(minutes=10)
ONE_CLICK = "List-Unsubscribe=One-Click"

# python_http_client logs every request's headers at DEBUG, Authorization included: keep that
# logger above DEBUG whatever the application's logging says, so the key never reaches a log.
logging.getLogger("python_http_client.client").setLevel(logging.INFO)


def categories(batch: SendBatch) -> list[str]:
    """Unique, at most ten (SendGrid rejects more); used for the provider's statistics."""
    wanted = ["newsletter", batch.list_name, batch.issue_name]
    if batch.subject_prefix:
        wanted.append("test")
    return list(dict.fromkeys(c[:255] for c in wanted if c))[:MAX_CATEGORIES]


def personalization(
    recipient: Recipient,
    key: str,
    issue_name: str,
    fields: placeholders.UsedTags,
) -> dict[str, Any]:
    """One recipient's envelope: address, placeholder values, unsubscribe headers, keys."""
    headers = {}
    if recipient.unsubscribe_url:
        headers = {
            "List-Unsubscribe": f"<{recipient.unsubscribe_url}>",
            "List-Unsubscribe-Post": ONE_CLICK,
        }
    entry: dict[str, Any] = {
        "to": [{"email": recipient.email}],
        "substitutions": placeholders.substitutions(recipient, fields),
        # Only the issue and the ledger key, never personal data: these come back in webhooks.
        "custom_args": {"newsletter_issue": issue_name, "newsletter_key": key},
    }
    if headers:
        entry["headers"] = headers
    return entry


def build_payload(
    email: RenderedEmail, batch: SendBatch, settings: Settings, *, sandbox: bool = False
) -> dict[str, Any]:
    """The Mail Send body for one batch as a plain dict (helper classes cost ~28 µs a recipient)."""
    check_batch(batch)
    # Only the placeholders the email uses: fewer bytes in each of up to 1,000 entries.
    fields = placeholders.used_fields(email)
    payload: dict[str, Any] = {
        "personalizations": [
            personalization(r, k, batch.issue_name, fields)
            for r, k in zip(batch.recipients, batch.keys, strict=True)
        ],
        "from": {"email": email.from_email, "name": email.from_name},
        "subject": batch.subject_prefix + email.subject,
        # SendGrid requires text/plain before text/html.
        "content": [
            {"type": "text/plain", "value": email.text},
            {"type": "text/html", "value": email.html},
        ],
        "headers": {"List-Id": list_id_header(settings, batch.list_name).wire()},
        "categories": categories(batch),
    }
    if batch.send_at is not None:
        payload["send_at"] = int(batch.send_at.timestamp())
    if batch.batch_id:
        payload["batch_id"] = batch.batch_id
    if sandbox:
        payload["mail_settings"] = {"sandbox_mode": {"enable": True}}
    return payload


# Headers SendGrid sets itself, or takes from their own fields of the payload.
_OWN_FIELDS = {
    "from",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "content-type",
    "content-transfer-encoding",
    "mime-version",
}


def message_payload(message: EmailMessage) -> dict[str, Any]:
    """A complete RFC 5322 message as a Mail Send body (for transactional mail).

    Names and subject are taken from the structured headers, exactly as given: SendGrid
    takes these fields as literal text and encodes them itself.
    """
    senders = addresses(message, "From")
    if len(senders) != 1:
        raise ValueError("a message for SendGrid needs exactly one From address")
    payload: dict[str, Any] = {
        "personalizations": [{"to": [_address(a) for a in addresses(message, "To")]}],
        "from": _address(senders[0]),
        "subject": str(message["Subject"]),
        "content": [
            {"type": f"text/{kind}", "value": part.get_content()}
            for kind in ("plain", "html")
            if (part := message.get_body((kind,))) is not None
        ],
    }
    headers = {k: wire_value(message, k) for k in message if k.lower() not in _OWN_FIELDS}
    if headers:
        payload["headers"] = headers
    return payload


def _address(address: Address) -> dict[str, str]:
    entry = {"email": address.addr_spec}
    if address.display_name:
        entry["name"] = address.display_name
    return entry


def check_batch(batch: SendBatch) -> None:
    """SendGrid rejects the whole request over 1000 personalizations or on a repeated address."""
    if len(batch.recipients) > MAX_PERSONALIZATIONS:
        raise ValueError(f"a batch holds at most {MAX_PERSONALIZATIONS} recipients")
    addresses = {r.email.lower() for r in batch.recipients}
    if len(addresses) != len(batch.recipients):
        raise ValueError("a batch must not name the same address twice")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying when nothing was accepted (429, connection refused)."""

    attempts: int = 8
    base: float = 1.0
    cap: float = 60.0

    def backoff(self, attempt: int) -> float:
        # Full jitter: parallel senders that were throttled together do not retry together.
        # bandit B311: jitter for retry timing, not a secret.
        return random.uniform(0, min(self.cap, self.base * 2**attempt))  # noqa: S311  # nosec B311


class SendGridMailer:
    """Posts Mail Send requests through the `sendgrid` package, with a timeout on every call."""

    name = "sendgrid"
    max_batch = MAX_PERSONALIZATIONS
    max_schedule_ahead = MAX_SCHEDULE_AHEAD
    cancel_margin = CANCEL_MARGIN
    sandbox: bool

    def __init__(
        self,
        settings: Settings,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if settings.sendgrid_api_key is None:
            raise ConfigError("The sendgrid mailer needs SENDGRID_API_KEY in the environment.")
        # Again here for settings not made by load_settings: a key that cannot go into a
        # header would otherwise fail, or be mangled, mid-request.
        check_api_key(settings.sendgrid_api_key, "SENDGRID_API_KEY")
        self.settings = settings
        self.timeout = settings.sendgrid_timeout
        self.sandbox = settings.sendgrid_sandbox
        self.retry = retry or RetryPolicy()
        self.sleep = sleep
        api = sendgrid.SendGridAPIClient(
            api_key=settings.sendgrid_api_key.reveal(),
            host=settings.sendgrid_api_url.rstrip("/"),
        )
        # The package's headers (Authorization, User-Agent) and URLs, through a transport
        # that bounds each request as a whole and says how far a failed one got.
        self._client = wire.DeadlineClient(
            host=api.host, request_headers=api.client.request_headers, version=3
        )

    def __repr__(self) -> str:
        return f"SendGridMailer(url={self.settings.sendgrid_api_url!r})"

    def send_batch(self, email: RenderedEmail, batch: SendBatch) -> BatchOutcome:
        try:
            payload = build_payload(email, batch, self.settings, sandbox=self.sandbox)
        except ValueError as exc:
            # Before any request: the caller gives the batch back instead of guessing.
            raise PayloadError(
                f"Cannot build the SendGrid request: {exc}. Nothing was sent."
            ) from exc
        except KeyboardInterrupt as exc:
            # Building 1,000 entries takes a while: a Ctrl-C here sent nothing.
            raise InterruptedBeforeSending from exc
        return self.post_payload(payload, batch.keys)

    def send_message(self, message: EmailMessage) -> str:
        """One transactional message (a confirmation, say); returns SendGrid's message id."""
        outcome = self.post_payload(message_payload(message), ("message",))
        result = outcome.results[0] if outcome.results else None
        if result is None or result.state not in ("sent", "validated"):
            why = result.error if result else "too large (HTTP 413)"
            raise MailerError(f"SendGrid did not take the message to {message['To']}: {why}.")
        return result.message_id

    def post_payload(self, payload: dict[str, Any], keys: tuple[str, ...]) -> BatchOutcome:
        """Post one body; retry only what SendGrid certainly did not accept."""
        for attempt in range(self.retry.attempts):
            try:
                response = self._post(payload)
            except python_http_client.exceptions.HTTPError as exc:
                outcome = self._answer_error(exc, keys)
                if outcome is not None:
                    return outcome
                delay = self._rate_limit_wait(exc.headers, attempt)
            except wire.TransportError as exc:
                if exc.body_written:
                    # The whole body went out and no complete answer came back: SendGrid may
                    # have accepted it, and it has no idempotency key, so no retry.
                    return _unknown(keys, f"no answer after the request was sent ({exc.why})")
                # Failed while connecting or while the body was still being written: a
                # server cannot act on a body it did not get whole.
                delay = self.retry.backoff(attempt)
            else:
                return self._answer_success(response, keys)
            self._wait(delay)
        raise UnreachableError(
            f"SendGrid at {self.settings.sendgrid_api_url} did not take the request after "
            f"{self.retry.attempts} attempts (rate limited or unreachable); nothing was "
            "accepted. Run the same command again later."
        )

    def _post(self, payload: dict[str, Any]) -> Any:
        requests = self._client.requests
        requests.forget()
        try:
            return self._client.mail.send.post(request_body=payload, timeout=self.timeout)
        except InterruptedBeforeSending:
            raise
        except KeyboardInterrupt as exc:
            if requests.untouched:
                # Ctrl-C while the library encoded the body or built the request: no byte
                # was written, so the batch goes back to `pending`, not `unknown`.
                raise InterruptedBeforeSending from exc
            raise
        except wire.TransportError as exc:
            if exc.stage == wire.Stage.PREPARING:
                raise self._unbuildable(exc.cause) from None
            raise
        except python_http_client.exceptions.HTTPError:
            raise
        except Exception as exc:
            # Everything after opening the request is a TransportError or an HTTPError, so
            # this failed while building it (URL, headers, JSON): nothing left the machine.
            raise self._unbuildable(exc) from None

    def _unbuildable(self, exc: BaseException) -> PayloadError:
        # Not chained: a foreign message may quote the Authorization header, the key.
        return PayloadError(
            f"Cannot build the request to SendGrid at {self.settings.sendgrid_api_url} "
            f"({wire.describe(exc)}). Nothing was sent; check sendgrid_api_url and "
            "SENDGRID_API_KEY."
        )

    def _misdirected(self, status: int) -> MailerError:
        # Not a verdict on this batch: the URL does not lead to Mail Send (a redirect is
        # never followed, it would carry the key elsewhere). SendGrid accepted nothing, so
        # the batch goes back to `pending`, as a MailerError from send_batch does.
        what = "redirected the request" if status < 400 else "has no Mail Send endpoint"
        return MailerError(
            f"SendGrid at {self.settings.sendgrid_api_url} {what} (HTTP {status}); nothing "
            "was accepted. Set sendgrid_api_url (NEWSLETTER_SENDGRID_API_URL) to the base "
            "URL, e.g. https://api.sendgrid.com, and run the same command again."
        )

    def _wait(self, seconds: float) -> None:
        try:
            self.sleep(seconds)
        except KeyboardInterrupt as exc:
            # Every attempt so far was refused (429) or never connected: SendGrid accepted
            # nothing, so the caller may give the batch back rather than mark it unknown.
            raise InterruptedBeforeSending from exc

    def _answer_success(self, response: Any, keys: tuple[str, ...]) -> BatchOutcome:
        if self.sandbox and response.status_code == 200:
            # Sandbox mode validates the request and delivers nothing.
            return BatchOutcome((SendResult(keys, "validated"),))
        if response.status_code == 202:
            message_id = _header(response.headers, "X-Message-Id")
            return BatchOutcome((SendResult(keys, "sent", message_id=message_id),))
        return _unknown(keys, f"unexpected HTTP {response.status_code} from SendGrid")

    def _answer_error(
        self, exc: python_http_client.exceptions.HTTPError, keys: tuple[str, ...]
    ) -> BatchOutcome | None:
        """The outcome an error response settles, or None when it says "wait and retry"."""
        status = int(exc.status_code)
        if status == 429:
            return None
        if 300 <= status < 400 or status == 404:
            raise self._misdirected(status)
        if status in (401, 403):
            raise AuthError(
                f"SendGrid refused the API key (HTTP {status}). Check SENDGRID_API_KEY: it must "
                "be a valid key with the Mail Send permission. Nothing more was sent."
            )
        if status == 413:
            return BatchOutcome(too_large=True)
        if 400 <= status < 500:
            return BatchOutcome((SendResult(keys, "failed", error=_errors(exc)),))
        return _unknown(keys, f"HTTP {status} from SendGrid: {_errors(exc)}")

    def _rate_limit_wait(self, headers: Any, attempt: int) -> float:
        reset = _header(headers, "X-RateLimit-Reset")
        if reset.isdigit():
            # bandit B311: jitter for retry timing, not a secret.
            return min(self.retry.cap, max(0.0, int(reset) - time.time()) + random.random())  # noqa: S311  # nosec B311
        return self.retry.backoff(attempt)

    def create_batch_id(self) -> str:
        """A batch id from SendGrid, so a scheduled send can be cancelled later."""
        response = self._call(lambda: self._client.mail.batch.post(timeout=self.timeout))
        return str(json.loads(response.body)["batch_id"])

    def cancel_scheduled(self, batch_id: str) -> None:
        """Cancel every message scheduled under `batch_id` (scheduled-sends API)."""
        body = {"batch_id": batch_id, "status": "cancel"}
        self._call(
            lambda: self._client.user.scheduled_sends.post(request_body=body, timeout=self.timeout)
        )

    def _call(self, request: Callable[[], Any]) -> Any:
        try:
            return request()
        except python_http_client.exceptions.HTTPError as exc:
            if exc.status_code in (401, 403):
                raise AuthError(
                    f"SendGrid refused the API key (HTTP {exc.status_code}). "
                    "Check SENDGRID_API_KEY."
                ) from None
            raise MailerError(f"SendGrid answered HTTP {exc.status_code}: {_errors(exc)}") from None
        except wire.TransportError as exc:
            if exc.stage == wire.Stage.PREPARING:
                raise self._unbuildable(exc.cause) from None
            raise UnreachableError(
                f"Cannot reach SendGrid at {self.settings.sendgrid_api_url} ({exc})."
            ) from None
        except Exception as exc:  # building the request failed: see `_post`
            raise self._unbuildable(exc) from None


def _unknown(keys: tuple[str, ...], why: str) -> BatchOutcome:
    return BatchOutcome((SendResult(keys, "unknown", error=why),))


def _header(headers: Any, name: str) -> str:
    value = headers.get(name) if headers is not None else None
    return str(value).strip() if value else ""


def _errors(exc: python_http_client.exceptions.HTTPError) -> str:
    """SendGrid's `errors[].field` and `message`, without echoing anything else."""
    try:
        body = json.loads(exc.body)
        items = body.get("errors", [])
        text = "; ".join(
            f"{e.get('field') or 'request'}: {e.get('message', '')}".strip() for e in items
        )
    except (ValueError, TypeError, AttributeError):
        text = ""
    return text or f"HTTP {exc.status_code} {exc.reason}"
