"""The rate panel's data: rows for the table, bar heights for the trend, and its sentences.

The template draws the trend as bars of exact pixel height in bottom-aligned table cells
(what Outlook, Gmail and Apple Mail all render; see `_rates.mjml.j2`), one column per
calendar day of the window, so a day without a quote is a visible gap rather than a silently
shorter chart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from newsletter import inert, rates
from newsletter.models import RateSnapshot

CHART_HEIGHT = 32  # px: the tallest bar, the week's highest value
MIN_BAR = 4  # px: the week's lowest value still draws a visible bar
# The smallest span (relative to the week's middle value) that fills the chart's height.
# Without it a 0.01 % wobble would swing from the floor to the ceiling and a quiet week would
# look like a crash; with it, a flat week is a row of equal mid-height bars.
SPAN_FLOOR = Decimal("0.005")

CURRENCY_NAMES = {
    "USD": "US dollar",
    "EUR": "euro",
    "RUB": "Russian rouble",
    "CNY": "Chinese yuan",
    "KGS": "Kyrgyz som",
    "KZT": "Kazakh tenge",
    "TJS": "Tajik somoni",
    "UZS": "Uzbek soʻm",
    "TMT": "Turkmen manat",
}

DateText = Callable[[dt.date], str]


@dataclass(frozen=True)
class Bar:
    """One day of the trend: its value (None: no quote that day) and its height in px."""

    day: dt.date
    value: Decimal | None
    height: int

    @property
    def gap(self) -> bool:
        return self.value is None


def days_phrase(count: int) -> str:
    """'1 day', '5 days'."""
    return f"{count} day" if count == 1 else f"{count} days"


def covers(quoted: int, days: int) -> str:
    """What the trend covers, as the chart's sentences say it: '7 days', '5 of 7 days'."""
    return days_phrase(days) if quoted == days else f"{quoted} of {days_phrase(days)}"


def window(end: dt.date, days: int) -> tuple[dt.date, ...]:
    """The `days` calendar days ending at `end`, oldest first."""
    return tuple(end - dt.timedelta(days=back) for back in range(days - 1, -1, -1))


def series(
    currency: str, trend: Sequence[RateSnapshot], days: tuple[dt.date, ...]
) -> list[tuple[dt.date, Decimal | None]]:
    """The currency's value on each day of the window; None where no snapshot quotes it."""
    quoted: dict[dt.date, Decimal] = {}
    for snapshot in trend:
        rate = snapshot.get(currency)
        if rate is not None:
            quoted[snapshot.date] = rate.value
    return [(day, quoted.get(day)) for day in days]


def bars(points: Sequence[tuple[dt.date, Decimal | None]]) -> tuple[Bar, ...]:
    """Heights from the week's own low and high, the span no narrower than SPAN_FLOOR."""
    values = [v for _, v in points if v is not None]
    if not values:
        return tuple(Bar(day, None, 0) for day, _ in points)
    low, high = min(values), max(values)
    middle = (low + high) / 2
    floor = middle * SPAN_FLOOR
    if high - low < floor:
        low, high = middle - floor / 2, middle + floor / 2
    span = high - low
    return tuple(
        Bar(day, value, 0 if value is None else _height(value, low, span)) for day, value in points
    )


def _height(value: Decimal, low: Decimal, span: Decimal) -> int:
    share = (value - low) / span if span else Decimal("0.5")
    scaled = MIN_BAR + share * (CHART_HEIGHT - MIN_BAR)
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def describe(subject: str, points: Sequence[tuple[dt.date, Decimal | None]], date: DateText) -> str:
    """The chart as one sentence: 'Kyrgyz som in US dollars over 7 days: from 0.01143 on
    4 December to 0.01144 on 10 December, up 0.09%.'"""
    known = [(day, value) for day, value in points if value is not None]
    if not known:
        return f"{subject}: no quote in the last {days_phrase(len(points))}."
    (first_day, first), (last_day, last) = known[0], known[-1]
    if len(known) == 1:
        return (
            f"{subject}: {rates.plain(last)} on {date(last_day)}, "
            f"the only quote in the last {days_phrase(len(points))}."
        )
    # Counted over the whole window, as the chart draws it (one column per day, a gap for a
    # day without a quote) and as the panel's sub-line says it: "over 5 of 7 days".
    missing = [day for day, value in points if value is None]
    span = days_phrase(len(points))
    over = f"over {len(known)} of {span}" if missing else f"over {span}"
    if missing:
        over += f" (no quote on {_and(date(day) for day in missing)})"
    if all(value == first for _, value in known):
        return (
            f"{subject} {over}: unchanged at {rates.plain(first)} "
            f"from {date(first_day)} to {date(last_day)}."
        )
    return (
        f"{subject} {over}: from {rates.plain(first)} on {date(first_day)} "
        f"to {rates.plain(last)} on {date(last_day)}, {_movement(first, last)}."
    )


def _movement(first: Decimal, last: Decimal) -> str:
    percent = ((last - first) / first * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    if percent.is_zero():
        return "back where it started" if first == last else "a change of less than 0.01%"
    return f"{'up' if percent > 0 else 'down'} {rates.plain(percent.copy_abs())}%"


def _and(items: Iterable[str]) -> str:
    words = list(items)
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _without_year(date: DateText) -> DateText:
    return lambda day: date(day).removesuffix(f" {day.year}")


def name(currency: str) -> str:
    return CURRENCY_NAMES.get(currency, currency)


def plural(currency_name: str) -> str:
    """'US dollars', 'euros'; a yuan, som, soʻm or code stays as it is."""
    if currency_name.endswith(("yuan", "som", "soʻm")) or currency_name.isupper():
        return currency_name
    return currency_name + "s"


def panel(
    snapshot: RateSnapshot | None,
    trend: tuple[RateSnapshot, ...],
    days: int,
    long_date: DateText,
) -> dict[str, Any] | None:
    """What `_rates.mjml.j2` and the text part see; None when the issue has no snapshot."""
    if snapshot is None:
        return None
    calendar = window(snapshot.date, days)
    # The panel's heading gives the year; the sentences leave it out unless the week spans two.
    date = _without_year(long_date) if calendar[0].year == snapshot.date.year else long_date
    in_window = [s for s in trend if s.date in calendar]
    subject_tail = f" in {plural(name(snapshot.base))}"
    rows: list[dict[str, Any]] = []
    for rate in snapshot.rates:
        change = rates.zero_safe(rate.change_pct)
        points = series(rate.currency, in_window, calendar)
        rows.append(
            {
                "currency": rate.currency,
                "name": name(rate.currency),
                "value": rates.plain(rate.value),
                "inverse": rates.significant(rates.inverse(rate)),
                "change": rates.format_change(change),
                "direction": "up" if change > 0 else "down" if change < 0 else "flat",
                "bars": [
                    {
                        "gap": bar.gap,
                        "height": bar.height,
                        "title": f"{date(bar.day)}: "
                        + ("no quote" if bar.value is None else rates.plain(bar.value)),
                    }
                    for bar in bars(points)
                ],
                "description": describe(name(rate.currency) + subject_tail, points, date),
            }
        )
    return {
        "base": snapshot.base,
        "base_name": name(snapshot.base),
        "date": long_date(snapshot.date),
        "source": inert.text(snapshot.source),
        "days": len(in_window),
        "covers": covers(len(in_window), len(calendar)),
        "chart_height": CHART_HEIGHT,
        "gaps": any(bar["gap"] for row in rows for bar in row["bars"]),
        "rows": rows,
    }
