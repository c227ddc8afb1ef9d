"""`newsletter stats ISSUE --html FILE`: one self-contained page of charts, readable offline.

The charts are inline SVG drawn by the template (newsletter/pages/stats/report.html) from
numbers computed here: this module only does the arithmetic (bucket, scale, place), and
every text that came from outside (link texts, URLs, issue names) reaches the page as
template context, escaped where it lands. The page loads nothing: no script, no font, no
image, so it opens the same from a mail attachment or a laptop without network.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import db, pages
from newsletter.schema import send_issues, webhook_events
from newsletter.stats import OPENS_CAVEAT, EditionStats, issue_stats, last_issues

HOURS = 72
WIDTH, HEIGHT, LEFT, TOP = 720, 200, 40, 10  # the plot area of a line chart, in SVG units
BAR_WIDTH = 400


@dataclass(frozen=True)
class Series:
    name: str
    points: str  # SVG polyline points "x,y x,y ..."
    peak: int | float


@dataclass(frozen=True)
class Bar:
    label: str
    url: str
    value: int
    width: float


def page(engine: Engine, issue: str, last: int) -> str:
    """The page's HTML for `issue`, with the rates of the `last` issues sent as a line."""
    [figures] = issue_stats(engine, issue)[:1]
    opens, clicks = _hourly(engine, issue)
    recent = [issue_stats(engine, name)[0] for name in last_issues(engine, last)]
    if issue not in [r.issue for r in recent]:
        recent.append(figures)
    return render(figures, opens, clicks, recent)


def render(
    figures: EditionStats, opens: list[int], clicks: list[int], recent: list[EditionStats]
) -> str:
    """The page from figures already computed (every text escaped by the template)."""
    return pages.render(
        "stats/report.html",
        figures=figures,
        rates=figures.rates,
        caveat=OPENS_CAVEAT,
        hourly=[_line("opens", opens), _line("clicks", clicks)],
        bars=_bars(figures),
        trend=_trend(recent),
        trend_names=[r.issue for r in recent],
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        hours=HOURS,
        bar_width=BAR_WIDTH,
    )


def _hourly(engine: Engine, issue: str) -> tuple[list[int], list[int]]:
    """Unique people opening / clicking in each of the first 72 hours after the send."""
    with db.reading(engine) as conn:
        started = conn.execute(
            select(send_issues.c.created_at).where(send_issues.c.issue == issue)
        ).scalar_one()
        rows = conn.execute(
            select(webhook_events.c.event, webhook_events.c.email, webhook_events.c.event_at)
            .where(
                webhook_events.c.issue == issue,
                webhook_events.c.event.in_(("open", "click")),
                webhook_events.c.machine_open.is_(False),
            )
            .order_by(webhook_events.c.event_at)
        ).all()
    start = int(db.aware(started).timestamp())
    first: dict[tuple[str, str], int] = {}
    for kind, email, at in rows:
        first.setdefault((kind, email), at)
    counts = {"open": [0] * HOURS, "click": [0] * HOURS}
    for (kind, _email), at in first.items():
        hour = (at - start) // 3600
        if 0 <= hour < HOURS:
            counts[kind][hour] += 1
    return counts["open"], counts["click"]


def _line(name: str, values: list[int] | list[float], peak: float | None = None) -> Series:
    top = peak if peak else (max(values) or 1)
    step = WIDTH / max(len(values) - 1, 1)
    points = " ".join(
        f"{LEFT + i * step:.1f},{TOP + HEIGHT - (v / top) * HEIGHT:.1f}"
        for i, v in enumerate(values)
    )
    return Series(name, points, max(values) if values else 0)


def _bars(figures: EditionStats) -> list[Bar]:
    top = max((link.unique_clicks for link in figures.links), default=1) or 1
    return [
        Bar(
            link.text or link.url,
            link.url,
            link.unique_clicks,
            BAR_WIDTH * link.unique_clicks / top,
        )
        for link in figures.links
    ]


def _trend(recent: list[EditionStats]) -> list[Series]:
    series = []
    for name in ("unique_opens", "unique_clicks"):
        values = [(r.rates[name] or 0.0) * 100 for r in recent]
        series.append(_line(name.replace("unique_", "") + " %", values, peak=100.0))
    return series
