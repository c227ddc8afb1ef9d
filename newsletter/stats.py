"""`newsletter stats`: what SendGrid's events say about one sent issue, or the last few.

Counts come from the send ledger (recipients, sent) and from `webhook_events` matched by
the issue in each event's `custom_args`; "unique" counts distinct addresses. Opens are
inflated by privacy proxies (Apple Mail Privacy Protection) and link scanners, which open
every message; SendGrid's `sg_machine_open` marker is excluded where present, and the
figure is flagged either way. Click URLs are grouped without their `utm_*` parameters,
and named by the link text in the copy stored at send time (`issue_copies`).

Figures are computed per edition: the ledger has no edition column yet, so every row
counts under the one edition "" until it does; `_ledger_counts` and `_event_rows` are the
two places that will group by it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import lxml.html
from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from newsletter import db
from newsletter.errors import UsageError
from newsletter.models import LedgerState
from newsletter.schema import issue_copies, send_issues, send_ledger, webhook_events

OPENS_CAVEAT = (
    "opens are inflated by privacy proxies (Apple Mail Privacy Protection) and link "
    "scanners; SendGrid's machine opens are left out where it marks them"
)
EDITION = ""  # the one edition of every issue until the ledger records editions


@dataclass(frozen=True)
class Link:
    url: str  # without utm_* parameters
    text: str  # the link's text in the stored copy, "" when not found there
    unique_clicks: int


@dataclass(frozen=True)
class EditionStats:
    issue: str
    edition: str
    recipients: int
    sent: int
    delivered: int
    hard_bounces: int
    soft_bounces: int
    deferred: int
    unique_opens: int
    machine_opens: int
    unique_clicks: int
    unsubscribes: int
    spam_reports: int
    links: list[Link] = field(default_factory=list)

    @property
    def rates(self) -> dict[str, float | None]:
        """Delivery and bounces over sent; engagement over delivered. None: nothing to divide."""
        return {
            "delivered": _rate(self.delivered, self.sent),
            "hard_bounces": _rate(self.hard_bounces, self.sent),
            "soft_bounces": _rate(self.soft_bounces, self.sent),
            "unique_opens": _rate(self.unique_opens, self.delivered),
            "unique_clicks": _rate(self.unique_clicks, self.delivered),
            "unsubscribes": _rate(self.unsubscribes, self.delivered),
            "spam_reports": _rate(self.spam_reports, self.delivered),
        }

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rates": self.rates, "opens_caveat": OPENS_CAVEAT}


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def issue_stats(engine: Engine, issue: str) -> list[EditionStats]:
    """The figures of `issue`, one entry per edition; UsageError if it was never sent."""
    with db.reading(engine) as conn:
        if conn.execute(select(send_issues.c.issue).where(send_issues.c.issue == issue)).first():
            return [_edition(conn, issue, EDITION)]
    raise UsageError(
        f"{issue}: no send of this issue is recorded, so there are no statistics. "
        "`newsletter status ISSUE` shows the issues that were sent; check the name."
    )


def last_issues(engine: Engine, count: int) -> list[str]:
    """The names of the last `count` issues sent, oldest first."""
    with db.reading(engine) as conn:
        names = conn.execute(
            select(send_issues.c.issue)
            .order_by(send_issues.c.created_at.desc(), send_issues.c.issue.desc())
            .limit(count)
        ).scalars()
        return list(reversed(list(names)))


def _edition(conn: Connection, issue: str, edition: str) -> EditionStats:
    recipients, sent = _ledger_counts(conn, issue)
    rows = _event_rows(conn, issue)
    who: dict[str, set[str]] = defaultdict(set)
    clicks: dict[str, set[str]] = defaultdict(set)
    machine = deferred = 0
    for kind, email, bounce_type, machine_open, url in rows:
        if kind == "open" and machine_open:
            machine += 1
            continue
        if kind == "deferred":
            deferred += 1
        if kind == "bounce":
            kind = "hard_bounce" if bounce_type == "bounce" else "soft_bounce"
        if kind == "click":
            clicks[without_utm(url)].add(email)
        who[kind].add(email)
    texts = link_texts(_copy_html(conn, issue, edition))
    links = sorted(
        (Link(url, texts.get(url, ""), len(people)) for url, people in clicks.items()),
        key=lambda link: (-link.unique_clicks, link.url),
    )
    return EditionStats(
        issue=issue,
        edition=edition,
        recipients=recipients,
        sent=sent,
        delivered=len(who["delivered"]),
        hard_bounces=len(who["hard_bounce"]),
        soft_bounces=len(who["soft_bounce"]),
        deferred=deferred,
        unique_opens=len(who["open"]),
        machine_opens=machine,
        unique_clicks=len(who["click"]),
        unsubscribes=len(who["unsubscribe"] | who["group_unsubscribe"]),
        spam_reports=len(who["spamreport"]),
        links=links,
    )


def _ledger_counts(conn: Connection, issue: str) -> tuple[int, int]:
    rows = conn.execute(
        select(send_ledger.c.state, func.count())
        .where(send_ledger.c.issue == issue)
        .group_by(send_ledger.c.state)
    ).all()
    counts = Counter({state: int(n) for state, n in rows})
    skipped = counts[LedgerState.SKIPPED.value]
    return sum(counts.values()) - skipped, counts[LedgerState.SENT.value]


def _event_rows(conn: Connection, issue: str) -> list[tuple[str, str, str, bool, str]]:
    query = select(
        webhook_events.c.event,
        webhook_events.c.email,
        webhook_events.c.bounce_type,
        webhook_events.c.machine_open,
        webhook_events.c.url,
    ).where(webhook_events.c.issue == issue)
    return [(r[0], r[1], r[2], bool(r[3]), r[4]) for r in conn.execute(query)]


def _copy_html(conn: Connection, issue: str, edition: str) -> str:
    html = conn.execute(
        select(issue_copies.c.html).where(
            issue_copies.c.issue == issue, issue_copies.c.edition == edition
        )
    ).scalar()
    return html or ""


def without_utm(url: str) -> str:
    """The URL without utm_* query parameters (campaign tags, not a different link)."""
    parts = urlsplit(url)
    kept = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_")
    ]
    return urlunsplit(parts._replace(query=urlencode(kept)))


def link_texts(html: str) -> dict[str, str]:
    """Each link's URL (utm_* removed) -> its text in the stored copy (the first one)."""
    if not html.strip():
        return {}
    texts: dict[str, str] = {}
    for anchor in lxml.html.fromstring(html).iter("a"):
        href = anchor.get("href")
        text = " ".join(anchor.text_content().split())
        if href and text:
            texts.setdefault(without_utm(href), text)
    return texts
