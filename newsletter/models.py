"""Frozen data passed between the stages: content in, a rendered email out."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Literal

from newsletter.errors import Problem
from newsletter.placeholders import UNKEYED, Tags

Order = Literal["newest", "oldest", "title"]
# lead: image, title, the first paragraphs up to a word budget; full: the whole article;
# cards: image, title, summary; brief: title and one sentence, no image.
Style = Literal["lead", "full", "cards", "brief"]
STYLES: tuple[Style, ...] = ("lead", "full", "cards", "brief")
CallToAction = Literal["link", "button"]  # a card's "Read more": an inline link or a button
LEAD_WORDS = 120  # a lead story's excerpt: whole paragraphs until this many words


@dataclass(frozen=True)
class Image:
    url: str
    alt: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Article:
    slug: str
    title: str
    date: dt.date
    url: str
    summary: str
    body: str  # Markdown, untrusted: rendered and sanitized before it reaches a template
    tags: tuple[str, ...] = ()
    image: Image | None = None
    author: str | None = None
    credit: str | None = None
    path: Path | None = None
    draft: bool = False  # `draft: true`: no query selects it and no issue may list it
    lang: str | None = None  # `lang: ru`: the article's language, when not the issue's
    # The file's lines as parsed, so a finding on a field can name its line without the
    # render reading the file again.
    file_lines: tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Rate:
    """One currency against the snapshot's base: ``1 currency = value base``.

    ``value`` keeps the exact digits it was given (Decimal("0.28490") stays five places).
    """

    currency: str
    value: Decimal
    change_pct: Decimal


@dataclass(frozen=True)
class RateSnapshot:
    date: dt.date
    base: str
    as_of: dt.datetime
    source: str
    rates: tuple[Rate, ...]
    path: Path | None = None
    # The file's lines as parsed, so a finding on a field can name its line without the
    # render reading the file again.
    file_lines: tuple[str, ...] = field(default=(), repr=False, compare=False)

    def get(self, currency: str) -> Rate | None:
        return next((r for r in self.rates if r.currency == currency), None)


@dataclass(frozen=True)
class Query:
    """Select articles by tags and a date window relative to the issue date."""

    tags_any: tuple[str, ...] = ()
    tags_all: tuple[str, ...] = ()
    days: int = 7  # articles dated within the `days` days up to and including the issue date
    limit: int | None = None
    order: Order = "newest"


@dataclass(frozen=True)
class SectionSpec:
    heading: str
    articles: tuple[str, ...] | None = None
    query: Query | None = None
    style: Style = "cards"
    line: int | None = None
    words: int = LEAD_WORDS  # the `lead` style's word budget
    cta: CallToAction = "link"


@dataclass(frozen=True)
class AudienceSpec:
    """Who receives the issue: a list, optionally narrowed by subscriber attributes."""

    list: str = "weekly"
    where: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class IssueSpec:
    """An issue definition as written by the editor (validated, not yet resolved)."""

    name: str
    path: Path
    title: str
    date: dt.date
    subject: str
    preheader: str
    intro: str
    rates: dt.date | Literal["latest"]
    sections: tuple[SectionSpec, ...]
    template: str = "digest"
    utm: tuple[tuple[str, str], ...] = ()
    audience: AudienceSpec = field(default_factory=AudienceSpec)
    language: str = "en"  # a BCP 47 tag: <html lang>, and the default of every article
    # The file's lines as parsed, so a finding on a field can name its line without the
    # render reading the file again.
    file_lines: tuple[str, ...] = field(default=(), repr=False, compare=False)


@dataclass(frozen=True)
class Section:
    heading: str
    articles: tuple[Article, ...]
    style: Style = "cards"
    words: int = LEAD_WORDS
    cta: CallToAction = "link"


@dataclass(frozen=True)
class Issue:
    """An issue definition resolved against the content: everything a template needs."""

    spec: IssueSpec
    sections: tuple[Section, ...]
    rates: RateSnapshot | None
    rate_history: tuple[RateSnapshot, ...] = ()  # oldest first, ending with `rates`
    warnings: tuple[Problem, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def articles(self) -> tuple[Article, ...]:
        return tuple(a for s in self.sections for a in s.articles)


@dataclass(frozen=True)
class RenderedEmail:
    """One render per issue; per-recipient fields are placeholders (see `placeholders`)."""

    issue_name: str
    subject: str
    preheader: str
    from_name: str
    from_email: str
    html: str
    text: str
    mjml: str
    content_hash: str
    warnings: tuple[Problem, ...] = ()
    issue_date: dt.date | None = None
    # The tags this build placed: whatever fills the email fills these and nothing else.
    tags: Tags = UNKEYED

    @property
    def html_bytes(self) -> int:
        return len(self.html.encode("utf-8"))


@dataclass(frozen=True)
class Recipient:
    """One addressee, with the values that fill the per-recipient placeholders."""

    email: str
    first_name: str = ""
    unsubscribe_url: str = ""
    public_id: str | None = None  # the subscriber's opaque public id, for a real one


class LedgerState(StrEnum):
    """A recipient's row in the send ledger; the `state` column holds the value.

    ``pending -> claimed -> sent | failed | unknown``, plus ``skipped`` (suppressed when
    claimed) and ``validated`` (accepted by a sandbox run, sent again by a real one).
    """

    PENDING = "pending"
    CLAIMED = "claimed"
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"
    VALIDATED = "validated"


# What a mailer reports for a batch: the LedgerState value its rows move to, or
# "released": the mailer never got to these recipients; they go back to `pending`.
SendState = Literal["sent", "failed", "unknown", "validated", "released"]


@dataclass(frozen=True)
class SendBatch:
    """Recipients that travel in one provider request, each with its ledger key."""

    issue_name: str
    list_name: str
    recipients: tuple[Recipient, ...]
    keys: tuple[str, ...]  # ledger keys, aligned with `recipients`; carried in custom_args
    subject_prefix: str = ""
    send_at: dt.datetime | None = None
    batch_id: str | None = None

    def __post_init__(self) -> None:
        if len(self.keys) != len(self.recipients):
            raise ValueError("a SendBatch needs one ledger key per recipient")


@dataclass(frozen=True)
class SendResult:
    """What became of the recipients under some ledger keys."""

    keys: tuple[str, ...]
    state: SendState
    message_id: str = ""
    error: str = ""


@dataclass(frozen=True)
class BatchOutcome:
    """A mailer's answer for one batch; `too_large` asks the caller to split it and retry."""

    results: tuple[SendResult, ...] = ()
    too_large: bool = False


@dataclass(frozen=True)
class DispatchPlan:
    """What a send would do, shown before the editor confirms."""

    issue_name: str
    list_name: str
    mailer: str
    recipients: int
    already_sent: int
    suppressed: int
    to_send: int
    batches: int
    unknown: int = 0
    send_at: dt.datetime | None = None


@dataclass(frozen=True)
class DispatchReport:
    """Counts at the end of a send (or from the ledger for `newsletter status`)."""

    issue_name: str
    sent: int = 0
    failed: int = 0
    unknown: int = 0
    skipped: int = 0
    pending: int = 0
    claimed: int = 0
    validated: int = 0
    batches: int = 0
