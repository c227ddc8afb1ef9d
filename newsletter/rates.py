"""Currency rates: parse ticker text, read and write snapshots, format them for readers."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from pathlib import Path

from newsletter import yamlfile
from newsletter.atomic import write_bytes
from newsletter.errors import RatesError
from newsletter.models import Rate, RateSnapshot

CURRENCY = re.compile(r"[A-Z]{3}")  # fullmatch: `$` would pass "USD\n"
# A line that claims to be a ticker entry ("KGS/USD =") whether or not the rest is right.
TICKER_LIKE = re.compile(r"^\s*(?:[•*·-]\s*)?[A-Za-z]{3}\s*/\s*[A-Za-z]{3}\s*=")
TICKER = re.compile(
    r"^\s*(?:[•*·-]\s*)?(?P<cur>[A-Z]{3})/(?P<base>[A-Z]{3})\s*=\s*"
    r"(?P<value>\d+(?:\.\d+)?)\s+(?P<change>[+\-−]?\d+(?:\.\d+)?)\s*%\s*\Z"
)
SNAPSHOT_KEYS = {"date", "base", "as_of", "source", "rates"}
RATE_KEYS = {"value", "change_pct"}


# ---- ticker text -------------------------------------------------------------------------


def parse_ticker(text: str, source: str = "<ticker>") -> tuple[str, tuple[Rate, ...]]:
    """The (base, rates) of the first ticker block in `text`; repeated blocks collapse to one.

    Reading starts at the first ticker line and stops at the first line after it that is
    neither a ticker line nor blank, so a scraped page with articles below works as is.
    """
    found: dict[str, tuple[Rate, int]] = {}
    bases: set[str] = set()
    problems: list[str] = []
    started = False
    for number, line in enumerate(text.splitlines(), start=1):
        if not TICKER_LIKE.match(line):
            if started and line.strip():
                break
            continue
        started = True
        parsed = _ticker_line(line)
        if parsed is None:
            problems.append(
                f"{source}:{number}: cannot read ticker line {line.strip()!r}; "
                "expected e.g. 'KGS/USD = 0.01144 -0.28%'."
            )
            continue
        base, rate = parsed
        bases.add(base)
        seen = found.get(rate.currency)
        if seen is None:
            found[rate.currency] = (rate, number)
        elif seen[0] != rate:
            problems.append(
                f"{source}:{number}: {rate.currency} is {_ticker(rate, base)!r} "
                f"but line {seen[1]} said {_ticker(seen[0], base)!r}."
            )
    if len(bases) > 1:
        problems.append(f"{source}: more than one base currency ({', '.join(sorted(bases))}).")
    if problems:
        raise RatesError("\n".join(problems))
    if not found:
        raise RatesError(f"{source}: no ticker lines found (expected 'KGS/USD = 0.01144 0%').")
    return bases.pop(), tuple(rate for rate, _ in found.values())


def _ticker_line(line: str) -> tuple[str, Rate] | None:
    m = TICKER.match(line)
    if not m:
        return None
    change = Decimal(m["change"].replace("−", "-"))
    return m["base"], Rate(m["cur"], Decimal(m["value"]), zero_safe(change))


def _ticker(rate: Rate, base: str) -> str:
    return f"{rate.currency}/{base} = {plain(rate.value)} {plain(rate.change_pct)}%"


def format_ticker(base: str, rates: Sequence[Rate]) -> str:
    """Ticker text in the newsroom's format; parse_ticker reads it back unchanged."""
    return "".join(f"• {_ticker(rate, base)}\n" for rate in rates)


# ---- numbers -----------------------------------------------------------------------------


def zero_safe(value: Decimal) -> Decimal:
    """A negative zero ('-0', '-0.00') becomes a plain zero, keeping its digits."""
    return value.copy_abs() if value.is_zero() else value


def plain(value: Decimal) -> str:
    """Every digit given, never scientific notation: Decimal('0.28490') -> '0.28490'."""
    return format(zero_safe(value), "f")


def significant(value: Decimal, digits: int = 3) -> str:
    """At least `digits` significant digits, two decimals at least, grouped thousands."""
    value = zero_safe(value)
    if value.is_zero():
        return "0"
    magnitude = value.copy_abs().adjusted()  # 0.0114 -> -2, 87.4 -> 1
    places = max(2, digits - 1 - magnitude)
    if magnitude >= 3:
        places = 0
    quantum = Decimal(1).scaleb(-places)
    return f"{value.quantize(quantum):,.{places}f}"


def inverse(rate: Rate) -> Decimal:
    """Units of the currency per one unit of the base (1 USD = 87.41 KGS)."""
    return Decimal(1) / rate.value if rate.value else Decimal(0)


def format_change(change: Decimal) -> str:
    """'▲ +0.12%', '▼ −0.28%' or '0%': an arrow and a sign, never '-0%'."""
    change = zero_safe(change)
    if change.is_zero():
        return "0%"
    text = plain(change.copy_abs())
    return f"▲ +{text}%" if change > 0 else f"▼ −{text}%"


# ---- snapshot files ----------------------------------------------------------------------


def snapshot_path(directory: Path, date: dt.date) -> Path:
    return directory / f"{date.isoformat()}.yaml"


def available(directory: Path) -> dict[dt.date, Path]:
    """Snapshot files by date (files whose name is not a date are not snapshots)."""
    if not directory.is_dir():
        return {}
    # A folder's mtime changes when a file is added, removed or renamed in it.
    return yamlfile.memoized(directory, "listing", _list_snapshots)


def _list_snapshots(directory: Path) -> dict[dt.date, Path]:
    out: dict[dt.date, Path] = {}
    for path in directory.glob("*.yaml"):
        try:
            out[dt.date.fromisoformat(path.stem)] = path
        except ValueError:
            continue
    return dict(sorted(out.items()))


def latest_on_or_before(directory: Path, date: dt.date) -> dt.date | None:
    dates = [d for d in available(directory) if d <= date]
    return dates[-1] if dates else None


def history(directory: Path, date: dt.date, days: int = 7) -> tuple[RateSnapshot, ...]:
    """The snapshots of the `days` days ending at `date`, oldest first."""
    start = date - dt.timedelta(days=days - 1)
    return tuple(
        yamlfile.memoized(path, "snapshot", load_snapshot)
        for d, path in available(directory).items()
        if start <= d <= date
    )


def load_snapshot(path: Path) -> RateSnapshot:
    check = yamlfile.Checker(yamlfile.load(path))
    check.mapping((), SNAPSHOT_KEYS)
    base = check.text(("base",)).strip().upper()
    if base and not CURRENCY.fullmatch(base):
        check.problem(("base",), f"'{base}' is not a three-letter currency code.")
    snapshot = RateSnapshot(
        date=check.date(("date",)) or dt.date.min,
        base=base,
        as_of=_as_of(check),
        source=check.text(("source",)),
        rates=_rates(check),
        path=path,
        file_lines=tuple(check.doc.text.splitlines()),
    )
    if snapshot.date != dt.date.min and path.stem != snapshot.date.isoformat():
        check.problem(("date",), f"is {snapshot.date} but the file is named {path.name}.")
    if check.problems:
        raise RatesError("\n".join(str(p) for p in check.problems))
    return snapshot


def _as_of(check: yamlfile.Checker) -> dt.datetime:
    raw = check.get(("as_of",))
    try:
        value = raw if isinstance(raw, dt.datetime) else dt.datetime.fromisoformat(str(raw))
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        example = "2025-12-10T09:00:00+05:00"
        check.problem(("as_of",), f"expected a time with its UTC offset, e.g. {example}.")
        return dt.datetime.min.replace(tzinfo=dt.UTC)
    return value


def _rates(check: yamlfile.Checker) -> tuple[Rate, ...]:
    table = check.mapping(("rates",), set(check.get(("rates",)) or {}))
    if not table:
        check.problem(("rates",), "no rates: list at least one currency.")
    rates = []
    for currency in table:
        field = ("rates", str(currency))
        check.mapping(field, RATE_KEYS)
        if not CURRENCY.fullmatch(str(currency)):
            check.problem(field, f"'{currency}' is not a three-letter currency code.")
        value = _decimal(check, (*field, "value"), positive=True)
        change = _decimal(check, (*field, "change_pct"))
        rates.append(Rate(str(currency), value, zero_safe(change)))
    return tuple(rates)


def _decimal(check: yamlfile.Checker, field: tuple[str, ...], *, positive: bool = False) -> Decimal:
    raw = check.get(field)
    if isinstance(raw, float):
        # A YAML float has already lost the digits as written; ask for a string.
        check.problem(field, f'write the number as a quoted string, e.g. "{raw}".')
        return Decimal(0)
    try:
        value = Decimal(str(raw).replace("−", "-"))
    except InvalidOperation:
        check.problem(field, f"expected a decimal number, got {raw!r}.")
        return Decimal(0)
    if not value.is_finite() or (positive and value <= 0):
        check.problem(field, f"expected a {'positive ' if positive else ''}number, got {raw!r}.")
        return Decimal(0)
    return value


def dump_snapshot(snapshot: RateSnapshot) -> str:
    """The YAML text of a snapshot; every value is a quoted string so no digit is lost."""
    lines = [
        f"date: {snapshot.date.isoformat()}",
        f"base: {snapshot.base}",
        f'as_of: "{snapshot.as_of.isoformat()}"',
        f"source: {_quote(snapshot.source)}",
        "rates:",
    ]
    lines += [
        f'  {r.currency}: {{value: "{plain(r.value)}", change_pct: "{plain(r.change_pct)}"}}'
        for r in snapshot.rates
    ]
    return "\n".join(lines) + "\n"


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


MAX_SOURCE = 200  # one line under the panel, not a paragraph
# A word that is a file path: absolute, home- or dot-relative, a drive letter, a backslash,
# or folders ending in a file name with an extension ("seed/front-page-2025-12-10.txt").
_PATH_WORD = re.compile(r"^(?:[/~]|\.\.?/|[A-Za-z]:[\\/])|\\|/[^/]*\.[A-Za-z][A-Za-z0-9]{0,4}$")
_URL_WORD = re.compile(r"^(?:https?://|www\.)", re.IGNORECASE)
_LINE_BREAKERS = {"Cc", "Cf", "Zl", "Zp"}  # controls, invisible formatting, line breaks


def path_like(source: str) -> str | None:
    """The first word of `source` that reads as a file path (a web address does not)."""
    for word in source.split():
        word = word.strip("()[]{}<>,;:'\"")
        if word and not _URL_WORD.match(word) and _PATH_WORD.search(word):
            return word
    return None


def check_source(source: str, file: Path | None = None) -> str:
    """The source line as readers will see it, or RatesError saying what to write instead.

    It names the source for a reader ("The newsroom's front-page ticker, 10 December
    2025"); a path on the importing machine means nothing to them and leaks a folder name.
    """
    text = source.strip()
    example = 'e.g. --source "The newsroom\'s front-page ticker, 10 December 2025"'
    if not text:
        raise RatesError(f"--source is empty: name the source as readers know it, {example}.")
    if len(text) > MAX_SOURCE:
        raise RatesError(f"--source has {len(text)} characters; keep it to {MAX_SOURCE}.")
    bad = next((c for c in text if unicodedata.category(c) in _LINE_BREAKERS), None)
    if bad is not None:
        raise RatesError(
            f"--source contains the control character U+{ord(bad):04X}; "
            "it is one line of the panel: write it as plain text."
        )
    word = path_like(text)
    # The imported file's own name, when it looks like one ("ticker.txt", not "ticker").
    if word is None and file is not None and "." in file.name and file.name in text:
        word = file.name
    if word is not None:
        raise RatesError(
            f"--source {text!r} names a file ({word!r}); readers see this line under the "
            f"rate panel, so name the source as they know it, {example}."
        )
    return text


def import_ticker(
    text: str,
    file: str,
    date: dt.date,
    directory: Path,
    *,
    source: str,
    force: bool = False,
) -> tuple[Path, RateSnapshot, bool]:
    """Write the snapshot for `date`; returns (path, snapshot, changed).

    `file` names the ticker text in error messages; `source` is the reader-facing line
    (checked by `check_source`). An existing snapshot with other values is never
    overwritten silently: that needs `force`.
    """
    source = check_source(source, Path(file))
    base, rates = parse_ticker(text, file)
    as_of = dt.datetime.combine(date, dt.time(0, 0), tzinfo=dt.UTC)
    snapshot = RateSnapshot(date, base, as_of, source, rates)
    path = snapshot_path(directory, date)
    new_text = dump_snapshot(snapshot)
    if path.exists():
        old = load_snapshot(path)
        if (old.base, old.rates, old.source) == (base, rates, source):
            return path, old, False
        if (old.base, old.rates) != (base, rates) and not force:
            raise RatesError(
                f"{path} already holds other rates for {date}; "
                "pass --force to replace it (the old file is then overwritten)."
            )
    # The old file or the new one, never half; shared through git, so not private.
    write_bytes(path, new_text.encode("utf-8"), private=False)
    return path, snapshot, True
