"""The default mailer: writes each message as an .eml file instead of sending it."""

from __future__ import annotations

import hashlib
import re
from email.errors import MessageError
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from newsletter import placeholders
from newsletter.atomic import write_bytes
from newsletter.config import Settings
from newsletter.mailer import list_id
from newsletter.message import build_message
from newsletter.models import BatchOutcome, Recipient, RenderedEmail, SendBatch, SendResult

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")
# What the email package raises for a message it cannot build or serialize (a non-ASCII
# address is a UnicodeEncodeError, a ValueError).
UNBUILDABLE = (ValueError, MessageError)


def personal_message(
    email: RenderedEmail, settings: Settings, recipient: Recipient, batch: SendBatch
) -> EmailMessage:
    """One recipient's message, filled as SendGrid fills it (subject included) with its List-Id."""
    message = build_message(email, settings, recipient, batch.subject_prefix)
    subject = placeholders.fill(
        batch.subject_prefix + email.subject, recipient, part="text", tags=email.tags
    )
    message.replace_header("Subject", subject)
    message["List-Id"] = list_id(settings, batch.list_name)
    return message


def unbuildable(key: str, exc: Exception) -> SendResult:
    """The result for a recipient whose message cannot be built: that recipient alone fails."""
    return SendResult((key,), "failed", error=f"the message cannot be built: {exc}")


class OutboxMailer:
    name = "outbox"
    max_batch = 1000
    sandbox = False

    def __init__(self, directory: Path, settings: Settings | None = None) -> None:
        self.directory = directory
        self.settings = settings or Settings()

    def send_message(self, message: EmailMessage) -> str:
        data = message.as_bytes(policy=SMTP)
        # Named by content, so writing the same message twice is one file, not two.
        digest = hashlib.sha256(data).hexdigest()[:16]
        return str(write_bytes(self.directory / "messages" / f"{digest}.eml", data))

    def send_batch(self, email: RenderedEmail, batch: SendBatch) -> BatchOutcome:
        """One .eml per recipient under outbox/<issue>/ (test copies under <issue>-test/)."""
        folder = self.directory / (batch.issue_name + ("-test" if batch.subject_prefix else ""))
        results = []
        for recipient, key in zip(batch.recipients, batch.keys, strict=True):
            try:
                data = personal_message(email, self.settings, recipient, batch).as_bytes()
            except UNBUILDABLE as exc:
                results.append(unbuildable(key, exc))
                continue
            path = write_bytes(folder / file_name(recipient.email), data)
            results.append(SendResult((key,), "sent", message_id=path.name))
        return BatchOutcome(tuple(results))


def file_name(address: str) -> str:
    """The address as a file name; a digest keeps two addresses from sharing one file."""
    safe = _UNSAFE.sub("_", address)
    if safe != address or safe.startswith("."):
        safe = f"{safe.lstrip('.')}-{hashlib.sha256(address.encode()).hexdigest()[:8]}"
    return f"{safe}.eml"
