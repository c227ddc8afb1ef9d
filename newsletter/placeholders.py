"""Per-recipient placeholders: one render per issue, filled by the mailer per recipient.

The HTML part and the text part use different tags, because the HTML part needs
HTML-escaped values and the text part raw ones (SendGrid substitutions replace a tag
verbatim, so the escaping has to be decided by which tag is used).
"""

from __future__ import annotations

import html

from newsletter.models import Recipient

FIELDS = ("first_name", "email", "unsubscribe_url")


def html_tag(name: str) -> str:
    return f"-{name}_html-"


def text_tag(name: str) -> str:
    return f"-{name}-"


def values(recipient: Recipient, fallback_name: str = "reader") -> dict[str, str]:
    return {
        "first_name": recipient.first_name or fallback_name,
        "email": recipient.email,
        "unsubscribe_url": recipient.unsubscribe_url,
    }


def substitutions(recipient: Recipient) -> dict[str, str]:
    """The tag -> value map for one recipient, as SendGrid's `substitutions` take it."""
    raw = values(recipient)
    subs = {html_tag(k): html.escape(v, quote=True) for k, v in raw.items()}
    subs.update({text_tag(k): v for k, v in raw.items()})
    return subs


def fill(body: str, recipient: Recipient, *, part: str) -> str:
    """Fill one part locally (outbox, SMTP, previews) exactly as SendGrid would."""
    raw = values(recipient)
    for name, value in raw.items():
        if part == "html":
            body = body.replace(html_tag(name), html.escape(value, quote=True))
        else:
            body = body.replace(text_tag(name), value)
    return body
