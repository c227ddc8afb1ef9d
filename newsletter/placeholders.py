"""Per-recipient placeholders: one render per issue, filled by the mailer per recipient.

The HTML part and the text part use different tags, because the HTML part needs
HTML-escaped values and the text part raw ones (SendGrid substitutions replace a tag
verbatim, so the escaping has to be decided by which tag is used). The unsubscribe URL is
the exception: we build it from characters HTML never escapes (the base URL is checked
when settings load, tokens are URL-safe base64), so one tag serves both parts and each of
up to 1,000 personalizations in a request carries the URL once less.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from newsletter.models import Recipient, RenderedEmail

FIELDS = ("first_name", "email", "unsubscribe_url")
ESCAPE_FREE = frozenset({"unsubscribe_url"})  # the same value in both parts, by construction


def html_tag(name: str) -> str:
    return text_tag(name) if name in ESCAPE_FREE else f"-{name}_html-"


def text_tag(name: str) -> str:
    return f"-{name}-"


def values(recipient: Recipient, fallback_name: str = "reader") -> dict[str, str]:
    return {
        "first_name": recipient.first_name or fallback_name,
        "email": recipient.email,
        "unsubscribe_url": recipient.unsubscribe_url,
    }


_NEEDS_ESCAPE = re.compile("[&<>\"']")


def escape(value: str) -> str:
    """html.escape, skipped for the usual value that has nothing to escape (URLs, names)."""
    return html.escape(value, quote=True) if _NEEDS_ESCAPE.search(value) else value


def used_fields(email: RenderedEmail) -> tuple[str, ...]:
    """The fields whose tags the email contains: only those go into every personalization."""
    parts = (email.html, email.text, email.subject)
    return tuple(
        name
        for name in FIELDS
        if any(html_tag(name) in part or text_tag(name) in part for part in parts)
    )


# Built once: `substitutions` runs for every recipient of a send.
_HTML_TAGS = {name: html_tag(name) for name in FIELDS}
_TEXT_TAGS = {name: text_tag(name) for name in FIELDS}


def substitutions(recipient: Recipient, fields: Sequence[str] = FIELDS) -> dict[str, str]:
    """The tag -> value map for one recipient, as SendGrid's `substitutions` take it."""
    raw = values(recipient)
    subs = {_HTML_TAGS[name]: escape(raw[name]) for name in fields}
    for name in fields:
        if subs.setdefault(_TEXT_TAGS[name], raw[name]) != raw[name]:
            # One tag for both parts: an escape-free field's value must need no escaping.
            raise ValueError(f"the {name} {raw[name]!r} holds characters HTML must escape")
    return subs


def fill(body: str, recipient: Recipient, *, part: str) -> str:
    """Fill one part locally (outbox, SMTP, previews) exactly as SendGrid would."""
    raw = values(recipient)
    for name, value in raw.items():
        if part == "html":
            body = body.replace(html_tag(name), escape(value))
        else:
            body = body.replace(text_tag(name), value)
    return body
