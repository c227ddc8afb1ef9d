"""Ticker parsing, snapshot files and the numbers a reader sees."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import rates
from newsletter.errors import RatesError
from newsletter.models import Rate

# A frozen copy of shared/seed/front-page-2025-12-10.txt: the newsroom's real front page.
SEED = Path(__file__).parent / "data" / "front-page-2025-12-10.txt"


def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


def test_seed_front_page_parses_to_five_rates_with_every_digit() -> None:
    base, parsed = rates.parse_ticker(seed_text())
    assert base == "USD"
    assert [(r.currency, rates.plain(r.value), rates.plain(r.change_pct)) for r in parsed] == [
        ("KGS", "0.01144", "0"),
        ("KZT", "0.00193", "0"),  # the seed says -0%: a zero change
        ("TJS", "0.10811", "-0.28"),
        ("UZS", "0.00008", "0"),
        ("TMT", "0.28490", "0"),  # the trailing zero is kept
    ]


def test_malformed_line_is_reported_with_its_number() -> None:
    text = "• KGS/USD = 0.01144 0%\n• KZT/USD = 0,00193 -0%\n"
    with pytest.raises(RatesError, match=r"ticker\.txt:2: cannot read ticker line"):
        rates.parse_ticker(text, "ticker.txt")


def test_repeated_block_that_disagrees_names_both_lines() -> None:
    text = "• KGS/USD = 0.01144 0%\n• KGS/USD = 0.01145 0%\n"
    with pytest.raises(RatesError, match=r":2: KGS .* line 1"):
        rates.parse_ticker(text, "t")


def test_text_without_ticker_lines_is_an_error() -> None:
    with pytest.raises(RatesError, match="no ticker lines"):
        rates.parse_ticker("10 December 2025\n\nSome article.\n", "page.txt")


def test_reading_stops_at_the_articles() -> None:
    text = "• KGS/USD = 0.01144 0%\n\nHeadline\nKZT/USD = nonsense in an article\n"
    _, parsed = rates.parse_ticker(text)
    assert [r.currency for r in parsed] == ["KGS"]


@pytest.mark.parametrize(
    ("change", "shown"),
    [("0", "0%"), ("-0", "0%"), ("-0.00", "0%"), ("0.12", "▲ +0.12%"), ("-0.28", "▼ −0.28%")],
)
def test_change_has_arrow_and_sign_and_never_minus_zero(change: str, shown: str) -> None:
    assert rates.format_change(Decimal(change)) == shown


@pytest.mark.parametrize(
    ("value", "inverse"),
    [
        ("0.01144", "87.41"),
        ("0.00193", "518.13"),
        ("0.10811", "9.25"),
        ("0.00008", "12,500"),
        ("0.28490", "3.51"),
        ("1.5", "0.667"),
        ("250", "0.00400"),
    ],
)
def test_inverse_is_what_a_reader_wants_with_three_significant_digits(
    value: str, inverse: str
) -> None:
    rate = Rate("XXX", Decimal(value), Decimal(0))
    assert rates.significant(rates.inverse(rate)) == inverse


def test_sparkline_spans_the_range_and_flat_series_sit_mid() -> None:
    assert rates.sparkline([Decimal(1), Decimal(2), Decimal(3)]) == "▁▅█"
    assert rates.sparkline([Decimal(5)] * 4) == "▄▄▄▄"
    assert rates.sparkline([]) == ""


def test_import_writes_snapshot_equal_to_the_sample(tmp_path: Path) -> None:
    path, snapshot, changed = rates.import_ticker(
        seed_text(), "seed.txt", dt.date(2025, 12, 10), tmp_path
    )
    assert changed
    assert path == tmp_path / "2025-12-10.yaml"
    reread = rates.load_snapshot(path)
    sample = rates.load_snapshot(Path(__file__).parents[1] / "content/rates/2025-12-10.yaml")
    assert reread.rates == sample.rates
    assert [rates.plain(r.value) for r in reread.rates] == [
        rates.plain(r.value) for r in sample.rates
    ]
    assert snapshot.base == "USD"


def test_import_never_silently_replaces_different_rates(tmp_path: Path) -> None:
    day = dt.date(2025, 12, 10)
    rates.import_ticker("KGS/USD = 0.01144 0%\n", "a", day, tmp_path)
    before = (tmp_path / "2025-12-10.yaml").read_text()
    with pytest.raises(RatesError, match="--force"):
        rates.import_ticker("KGS/USD = 0.01145 0%\n", "b", day, tmp_path)
    assert (tmp_path / "2025-12-10.yaml").read_text() == before
    _, _, changed = rates.import_ticker("KGS/USD = 0.01144 -0%\n", "c", day, tmp_path)
    assert not changed  # same rates: nothing to do
    rates.import_ticker("KGS/USD = 0.01145 0%\n", "d", day, tmp_path, force=True)
    assert "0.01145" in (tmp_path / "2025-12-10.yaml").read_text()


def test_snapshot_with_float_value_asks_for_a_string(tmp_path: Path) -> None:
    path = tmp_path / "2025-12-10.yaml"
    path.write_text(
        "date: 2025-12-10\nbase: USD\nas_of: '2025-12-10T09:00:00+05:00'\nsource: x\n"
        "rates:\n  KGS: {value: 0.01140, change_pct: '0'}\n"
    )
    with pytest.raises(RatesError, match=r"2025-12-10\.yaml:6 \[rates\.KGS\.value\].*quoted"):
        rates.load_snapshot(path)


def test_latest_on_or_before_and_history(repo: Path) -> None:
    directory = repo / "content" / "rates"
    assert rates.latest_on_or_before(directory, dt.date(2025, 12, 31)) == dt.date(2025, 12, 10)
    assert rates.latest_on_or_before(directory, dt.date(2025, 12, 9)) == dt.date(2025, 12, 9)
    assert rates.latest_on_or_before(directory, dt.date(2025, 1, 1)) is None
    week = rates.history(directory, dt.date(2025, 12, 10))
    assert [s.date.day for s in week] == [4, 5, 6, 7, 8, 9, 10]


def test_sample_snapshots_change_is_consistent_with_previous_day(repo: Path) -> None:
    snaps = [rates.load_snapshot(p) for p in rates.available(repo / "content/rates").values()]
    for prev, cur in itertools.pairwise(snaps):
        for rate in cur.rates:
            before = prev.get(rate.currency)
            assert before is not None
            computed = (rate.value - before.value) / before.value * 100
            assert abs(computed - rate.change_pct) <= Decimal("0.005"), (cur.date, rate)


# ---- properties ---------------------------------------------------------------------------

currencies = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=3, max_size=3)
values = st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("99999"), places=5)
changes = st.decimals(min_value=Decimal("-99.99"), max_value=Decimal("99.99"), places=2)


@given(st.dictionaries(currencies, st.tuples(values, changes), min_size=1, max_size=8))
def test_format_then_parse_round_trips_every_digit(
    table: dict[str, tuple[Decimal, Decimal]],
) -> None:
    given_rates = [Rate(c, v, rates.zero_safe(ch)) for c, (v, ch) in table.items() if c != "USD"]
    if not given_rates:
        return
    text = rates.format_ticker("USD", given_rates) * 3  # the scrape repeats the block
    base, parsed = rates.parse_ticker(text)
    assert base == "USD"
    assert [(r.currency, str(r.value), str(r.change_pct)) for r in parsed] == [
        (r.currency, str(r.value), str(r.change_pct)) for r in given_rates
    ]


@given(changes)
def test_formatted_change_never_shows_minus_zero(change: Decimal) -> None:
    shown = rates.format_change(change)
    assert "-0%" not in shown
    assert "−0%" not in shown
    if change.is_zero():
        assert shown == "0%"
    else:
        assert shown.startswith("▲ +" if change > 0 else "▼ −")


@given(values)
def test_formatted_numbers_keep_three_significant_digits(value: Decimal) -> None:
    shown = rates.significant(value)
    digits = shown.replace(",", "").replace(".", "").lstrip("0")
    assert len(digits) >= 3
    assert abs(Decimal(shown.replace(",", "")) - value) <= value * Decimal("0.005")


@given(values)
def test_plain_keeps_every_digit_given(value: Decimal) -> None:
    assert Decimal(rates.plain(value)) == value
    assert len(rates.plain(value).split(".")[-1]) == 5
