"""The default mailer: writes each message as an .eml file instead of sending it."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from newsletter.atomic import write_bytes
from newsletter.config import Settings
from newsletter.message import UNBUILDABLE, personal_message, unbuildable
from newsletter.models import BatchOutcome, RenderedEmail, SendBatch, SendResult

_UNSAFE = re.compile(r"[^A-Za-z0-9@._+-]")


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
                # Dated when written, as the SMTP mailer dates a copy when it sends it.
                now = dt.datetime.now(dt.UTC)
                message = personal_message(email, self.settings, recipient, batch, sent_at=now)
                data = message.as_bytes()
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
