"""The default mailer: writes each message as an .eml file instead of sending it."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path


class OutboxMailer:
    name = "outbox"

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def send_message(self, message: EmailMessage) -> str:
        data = message.as_bytes(policy=SMTP)
        # Named by content, so writing the same message twice is one file, not two.
        digest = hashlib.sha256(data).hexdigest()[:16]
        folder = self.directory / "messages"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{digest}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
        return str(path)
