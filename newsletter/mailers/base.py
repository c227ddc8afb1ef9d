"""The small protocols every mailer speaks: delivering, and (for some) scheduling.

Backends import this module, never the package `__init__` or each other, so the mailers
form no import cycle (as django-anymail's `backends/` and httpx's `_transports/`).
"""

from __future__ import annotations

import datetime as dt
from email.message import EmailMessage
from typing import Protocol, runtime_checkable

from newsletter.models import BatchOutcome, RenderedEmail, SendBatch


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
    """A mailer that can send later and cancel what it scheduled (SendGrid).

    The provider's limits travel with it, so the dispatcher checks a schedule without
    knowing which provider it talks to.
    """

    name: str
    # How far ahead a send may be scheduled.
    max_schedule_ahead: dt.timedelta
    # How long before its time a scheduled send can still be cancelled reliably.
    cancel_margin: dt.timedelta

    def create_batch_id(self) -> str: ...

    def cancel_scheduled(self, batch_id: str) -> None: ...
