"""Per-recipient placeholders: one render per issue, filled by the mailer per recipient.

The HTML part and the text part use different tags, because the HTML part needs
HTML-escaped values and the text part raw ones (SendGrid substitutions replace a tag
verbatim, so the escaping has to be decided by which tag is used). The unsubscribe URL is
the exception: we build it from characters HTML never escapes (the base URL is checked
when settings load, tokens are URL-safe base64), so one tag serves both parts and each of
up to 1,000 personalizations in a request carries the URL once less.

Every tag carries the build's key (`-first_name_html-<key>-`), a digest of everything the
build put into the templates. Content cannot spell a tag: it would have to contain the
digest of itself. The tags travel with the RenderedEmail (`email.tags`), so whatever fills
an email (mailers, previews, the web copy) fills exactly the tags that build placed.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # models imports this module for Tags, the type of RenderedEmail.tags
    from newsletter.models import Recipient, RenderedEmail

FIELDS = ("first_name", "email", "unsubscribe_url")
ESCAPE_FREE = frozenset({"unsubscribe_url"})  # the same value in both parts, by construction
KEY_LENGTH = 12  # hex digits: 48 bits, and 13 bytes more per tag in each personalization
Part = Literal["html", "text"]


@dataclass(frozen=True)
class Tags:
    """How one build spells each field's tag in each part.

    `key` is the build's key (see `build_key`). An email built by hand (tests) has none:
    its tags are the bare `-first_name_html-` ones, which `render` never places. An email
    rebuilt from a stored copy needs the key of the build that made it.
    """

    key: str = ""

    def html(self, name: str) -> str:
        return self.text(name) if name in ESCAPE_FREE else f"-{name}_html-{self._suffix}"

    def text(self, name: str) -> str:
        return f"-{name}-{self._suffix}"

    @property
    def _suffix(self) -> str:
        return f"{self.key}-" if self.key else ""

    def all(self) -> frozenset[str]:
        return frozenset(spell(name) for name in FIELDS for spell in (self.html, self.text))


UNKEYED = Tags()


def build_key(context: Any) -> str:
    """The build's tag key: a digest of the template context (deterministic, content-bound).

    The context holds every piece of content the templates can print, so a text that
    contained a tag would have to contain a digest of itself.
    """
    data = json.dumps(context, sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.sha256(data.encode("utf-8")).hexdigest()[:KEY_LENGTH]


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


@dataclass(frozen=True)
class UsedTags:
    """The (field, HTML tag, text tag) of each field an email uses, computed once per send."""

    tags: tuple[tuple[str, str, str], ...]


def used_fields(email: RenderedEmail) -> UsedTags:
    """The fields whose tags the email contains: only those go into every personalization."""
    parts = (email.html, email.text, email.subject)
    tags = email.tags
    return UsedTags(
        tuple(
            (name, tags.html(name), tags.text(name))
            for name in FIELDS
            if any(tags.html(name) in part or tags.text(name) in part for part in parts)
        )
    )


def substitutions(recipient: Recipient, used: UsedTags) -> dict[str, str]:
    """The tag -> value map for one recipient, as SendGrid's `substitutions` take it."""
    raw = values(recipient)
    subs = {html_tag: escape(raw[name]) for name, html_tag, _ in used.tags}
    for name, _, text_tag in used.tags:
        if subs.setdefault(text_tag, raw[name]) != raw[name]:
            # One tag for both parts: an escape-free field's value must need no escaping.
            raise ValueError(f"the {name} {raw[name]!r} holds characters HTML must escape")
    return subs


def fill(body: str, recipient: Recipient, *, part: Part, tags: Tags) -> str:
    """Fill one part locally (outbox, SMTP, previews) as SendGrid would, with `tags` only.

    One pass over the body: a value that happens to contain another tag stays as it is.
    """
    raw = values(recipient)
    tag_of, pattern = _spelling(tags, part)
    by_tag = {tag_of[name]: value for name, value in raw.items()}
    if part == "html":
        by_tag = {tag: escape(value) for tag, value in by_tag.items()}
    return pattern.sub(lambda match: by_tag[match.group(0)], body)


@lru_cache(maxsize=64)  # a preview server fills the same few builds again and again
def _spelling(tags: Tags, part: Part) -> tuple[dict[str, str], re.Pattern[str]]:
    spell = tags.html if part == "html" else tags.text
    tag_of = {name: spell(name) for name in FIELDS}
    return tag_of, re.compile("|".join(re.escape(tag) for tag in tag_of.values()))
