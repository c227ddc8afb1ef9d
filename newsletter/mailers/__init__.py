"""The mailers, and the choice of one from settings.

`base` holds the protocols; `outbox`, `smtp` and `sendgrid` are the backends. Each backend
imports only `base` and the shared modules (message, headers, placeholders, models, errors,
config), never this package or another backend, so importing them makes no cycle; this
module imports a backend only when it is chosen, so start-up stays lean.
"""

from __future__ import annotations

from newsletter.config import Settings
from newsletter.errors import ConfigError
from newsletter.mailers.base import Mailer, Scheduler

__all__ = ["MAILERS", "Mailer", "Scheduler", "get_mailer", "mailer_kind"]

MAILERS = ("sendgrid", "smtp", "outbox")


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
        from newsletter.mailers.sendgrid import SendGridMailer

        return SendGridMailer(settings)
    if kind == "smtp":
        from newsletter.mailers.smtp import SmtpMailer

        return SmtpMailer(settings)
    from newsletter.mailers.outbox import OutboxMailer

    return OutboxMailer(settings.path("outbox_dir"), settings)
