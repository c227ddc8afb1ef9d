"""The small protocol every mailer speaks, and the choice of mailer from settings."""

from __future__ import annotations

from email.message import EmailMessage
from typing import Protocol, runtime_checkable

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.headers import ListId
from newsletter.models import BatchOutcome, RenderedEmail, SendBatch

MAILERS = ("sendgrid", "smtp", "outbox")


class Mailer(Protocol):
    """Delivers messages: whole batches of one issue, or one complete message."""

    name: str
    max_batch: int  # recipients per `send_batch` call
    sandbox: bool  # True: the provider validates and delivers nothing

    def send_batch(self, email: RenderedEmail, batch: SendBatch) -> BatchOutcome:
        """Deliver one rendered issue to a batch, each recipient with their own fields.

        Raises AuthError or UnreachableError only when nothing of the batch was accepted.
        """
        ...

    def send_message(self, message: EmailMessage) -> str:
        """Deliver one complete message; return a provider or file id for the log."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """A mailer that can send later and cancel what it scheduled (SendGrid)."""

    def create_batch_id(self) -> str: ...

    def cancel_scheduled(self, batch_id: str) -> None: ...


def list_id(settings: Settings, list_name: str) -> ListId:
    """RFC 2919 List-Id: a stable identifier under the sender's domain, described by from_name.

    Structured, not a formatted string: from_name is written out as text (quoted or
    encoded), so it can never be read as header syntax.
    """
    domain = settings.from_email.rpartition("@")[2] or "localhost"
    return ListId(settings.from_name, f"{list_name}.{domain}")


def mailer_kind(settings: Settings) -> str:
    """`auto` means SendGrid when its key is set, the outbox otherwise."""
    kind = settings.mailer
    if kind == "auto":
        return "sendgrid" if settings.sendgrid_api_key is not None else "outbox"
    if kind not in MAILERS:
        raise ConfigError(
            f"Setting 'mailer' is {kind!r}; use one of auto, {', '.join(MAILERS)} "
            "(NEWSLETTER_MAILER or newsletter.toml)."
        )
    return kind


def get_mailer(settings: Settings) -> Mailer:
    """The configured mailer; imported lazily so start-up stays lean."""
    kind = mailer_kind(settings)
    if kind == "sendgrid":
        from newsletter.sendgrid import SendGridMailer

        return SendGridMailer(settings)
    if kind == "smtp":
        from newsletter.smtp import SmtpMailer

        return SmtpMailer(settings)
    from newsletter.outbox import OutboxMailer

    return OutboxMailer(settings.path("outbox_dir"), settings)
