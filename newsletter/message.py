"""The RFC 5322 messages we send: an issue (multipart/alternative, list headers) and the
subscription confirmation. Headers come from structured values (see newsletter.headers)."""

from __future__ import annotations

import datetime as dt
import hashlib
from email.errors import MessageError
from email.headerregistry import Address, Group
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

from newsletter import placeholders, tokens
from newsletter.config import Settings
from newsletter.headers import ListId, registry
from newsletter.models import Recipient, RenderedEmail, SendBatch, SendResult

# RFC 5322 allows 998 characters a header line. At the default 78, the email package turns
# a long unsubscribe URL (no spaces to fold at) into an RFC 2047 encoded-word that no client
# follows. Bodies are encoded first under BODY: the email package wraps quoted-printable at
# the policy's line length, and RFC 2045 allows 76. Both use our header classes, so a name or
# subject is never decoded into header syntax.
WIRE = SMTP.clone(max_line_length=998, header_factory=registry())
BODY = WIRE.clone(max_line_length=76)
# What the email package raises for a message it cannot build or serialize (a non-ASCII
# address is a UnicodeEncodeError, a ValueError).
UNBUILDABLE = (ValueError, MessageError)


def build_message(
    email: RenderedEmail,
    settings: Settings,
    recipient: Recipient | None = None,
    subject_prefix: str = "",
    sent_at: dt.datetime | None = None,
) -> EmailMessage:
    """The message as a mail client will see it; without a recipient, placeholders stay
    and `To` is an empty "undisclosed-recipients" group (a message with no `To` at all is
    a spam sign, and has no one to name).

    Without `sent_at`, byte-identical for the same inputs: the Date comes from the issue
    date, the Message-ID and MIME boundary from the content hash (no clock, no randomness).
    A mailer passes the time it sends: a Date hours or days away from the delivery is a
    spam sign (SpamAssassin's DATE_IN_PAST/DATE_IN_FUTURE) and sorts the copy wrongly.
    """
    html, text = email.html, email.text
    unsubscribe = email.tags.text("unsubscribe_url")
    if recipient is not None:
        html = placeholders.fill(html, recipient, part="html", tags=email.tags)
        text = placeholders.fill(text, recipient, part="text", tags=email.tags)
        unsubscribe = recipient.unsubscribe_url
    msg = EmailMessage(policy=BODY)
    msg["From"] = Address(email.from_name, addr_spec=email.from_email)
    if recipient is not None:
        msg["To"] = Address(recipient.first_name, addr_spec=recipient.email)
    else:
        msg["To"] = Group("undisclosed-recipients")
    msg["Subject"] = subject_prefix + email.subject
    msg["Date"] = format_datetime(sent_at or _issue_time(email))
    key = email.content_hash[:32]
    domain = settings.from_email.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = f"<{email.issue_name}.{key}{_personal(recipient, subject_prefix)}@{domain}>"
    msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    msg.set_boundary(f"=_newsletter_{key}")
    msg.policy = WIRE  # from here on only header folding is affected
    return msg


def _issue_time(email: RenderedEmail) -> dt.datetime:
    """The deterministic Date of a built message: 06:00 UTC on the issue's date."""
    date = email.issue_date or dt.date(1970, 1, 1)
    return dt.datetime.combine(date, dt.time(6, 0), tzinfo=dt.UTC)


def list_id_header(settings: Settings, list_name: str) -> ListId:
    """RFC 2919 List-Id: a stable identifier under the sender's domain, described by from_name.

    Structured, not a formatted string: from_name is written out as text (quoted or
    encoded), so it can never be read as header syntax. (Not `audience.list_id`, the
    list's database key.)
    """
    domain = settings.from_email.rpartition("@")[2] or "localhost"
    return ListId(settings.from_name, f"{list_name}.{domain}")


def personal_message(
    email: RenderedEmail,
    settings: Settings,
    recipient: Recipient,
    batch: SendBatch,
    *,
    sent_at: dt.datetime,
) -> EmailMessage:
    """One recipient's message, filled as SendGrid fills it (subject included) with its List-Id,
    dated `sent_at` (the mailer's clock when it sends)."""
    message = build_message(email, settings, recipient, batch.subject_prefix, sent_at)
    subject = placeholders.fill(
        batch.subject_prefix + email.subject, recipient, part="text", tags=email.tags
    )
    message.replace_header("Subject", subject)
    message["List-Id"] = list_id_header(settings, batch.list_name)
    return message


def unbuildable(key: str, exc: Exception) -> SendResult:
    """The result for a recipient whose message cannot be built: that recipient alone fails."""
    return SendResult((key,), "failed", error=f"the message cannot be built: {exc}")


def _personal(recipient: Recipient | None, subject_prefix: str) -> str:
    """A per-copy part of the Message-ID: clients such as Gmail drop a message whose id they
    have already seen, so a test copy and each recipient's copy need their own."""
    if recipient is None:
        return ""
    seed = f"{recipient.email}\0{subject_prefix}".encode()
    return "." + hashlib.sha256(seed).hexdigest()[:16]


def to_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=WIRE)


def confirmation(
    settings: Settings, public_id: str, address: str, name: str, list_name: str
) -> EmailMessage:
    """The double opt-in message: the subscriber's name goes into `To` as typed, never decoded."""
    message = EmailMessage(policy=BODY)
    message["From"] = Address(settings.from_name, addr_spec=settings.from_email)
    message["To"] = Address(name, addr_spec=address)
    message["Subject"] = f"Confirm your subscription to {list_name}"
    message["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    message["Message-ID"] = make_msgid(domain=settings.from_email.rpartition("@")[2])
    link = tokens.confirm_url(settings, public_id, list_name)
    message.set_content(
        f"Someone, hopefully you, asked to receive {list_name} from {settings.from_name}.\n\n"
        f"Confirm here:\n{link}\n\n"
        "If it was not you, ignore this message: nothing is sent until you confirm.\n\n"
        f"{settings.postal_address}\n"
    )
    message.policy = WIRE
    return message
