"""The small protocol every mailer speaks, and the choice of mailer from settings."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol

from newsletter.config import Settings
from newsletter.errors import ConfigError


class Mailer(Protocol):
    """Delivers messages. Transactional mail (confirmations, tests) goes through `send_message`."""

    name: str

    def send_message(self, message: EmailMessage) -> str:
        """Deliver one complete message; return a provider or file id for the log."""
        ...


def get_mailer(settings: Settings) -> Mailer:
    """The configured mailer: SendGrid when its key is set, else the setting (outbox by default)."""
    from newsletter.outbox import OutboxMailer  # imported lazily: start-up stays lean

    kind = settings.mailer
    if kind == "outbox":
        return OutboxMailer(settings.path("outbox_dir"))
    raise ConfigError(
        f"Setting 'mailer' is {kind!r}; this version knows 'outbox'. "
        "Set NEWSLETTER_MAILER=outbox or remove it from newsletter.toml."
    )
