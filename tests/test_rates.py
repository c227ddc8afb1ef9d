"""Ticker parsing, snapshot files and the numbers a reader sees."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from newsletter import rates
from newsletter.errors import RatesError
from newsletter.models import Rate
from tests.conftest import run_newsletter

# A frozen copy of shared/seed/front-page-2025-12-10.txt: the newsroom's real front page.
SEED = Path(__file__).parent / "data" / "front-page-2025-12-10.txt"


SAMPLE_SOURCE = "The newsroom's front-page ticker, 10 December 2025"


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


def test_import_writes_snapshot_equal_to_the_sample(tmp_path: Path) -> None:
    path, snapshot, changed = rates.import_ticker(
        seed_text(), "seed.txt", dt.date(2025, 12, 10), tmp_path, source=SAMPLE_SOURCE
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
    assert reread.source == sample.source == SAMPLE_SOURCE  # as given, no "Imported from"


def test_import_never_silently_replaces_different_rates(tmp_path: Path) -> None:
    day = dt.date(2025, 12, 10)
    rates.import_ticker("KGS/USD = 0.01144 0%\n", "t.txt", day, tmp_path, source="S a")
    before = (tmp_path / "2025-12-10.yaml").read_text()
    with pytest.raises(RatesError, match="--force"):
        rates.import_ticker("KGS/USD = 0.01145 0%\n", "t.txt", day, tmp_path, source="S b")
    assert (tmp_path / "2025-12-10.yaml").read_text() == before
    _, _, changed = rates.import_ticker(
        "KGS/USD = 0.01144 -0%\n", "t.txt", day, tmp_path, source="S a"
    )
    assert not changed  # same rates: nothing to do
    rates.import_ticker("KGS/USD = 0.01145 0%\n", "t.txt", day, tmp_path, source="S d", force=True)
    assert "0.01145" in (tmp_path / "2025-12-10.yaml").read_text()


@pytest.mark.parametrize(
    ("source", "word"),
    [
        ("seed/front-page-2025-12-10.txt", "seed/front-page-2025-12-10.txt"),
        ("Front page (seed/front-page-2025-12-10.txt)", "seed/front-page-2025-12-10.txt"),
        ("/home/editor/ticker", "/home/editor/ticker"),
        ("~/Downloads/ticker", "~/Downloads/ticker"),
        ("../ticker", "../ticker"),
        ("C:\\Users\\editor\\ticker", "C:\\Users\\editor\\ticker"),
        ("Ticker of t.txt", "t.txt"),  # the imported file's own name
    ],
)
def test_import_refuses_a_source_that_is_a_file_path(
    tmp_path: Path, source: str, word: str
) -> None:
    with pytest.raises(RatesError) as info:
        rates.import_ticker(
            "KGS/USD = 0.01144 0%\n", "in/t.txt", dt.date(2025, 12, 10), tmp_path, source=source
        )
    assert f"names a file ({word!r})" in str(info.value)
    assert "e.g. --source" in str(info.value)  # says what to write instead
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "source",
    [
        SAMPLE_SOURCE,
        "National Bank of the Kyrgyz Republic, https://www.nbkr.kg/index1.jsp?item=1562",
        "www.nbkr.kg, official KGS/USD rate",
        "Reuters/Refinitiv close",
        "Ticker, USD/KGS=87.5",
        "Newsroom ticker",  # the file is named "ticker": a word, not a file name
    ],
)
def test_import_keeps_a_readers_source_as_given(tmp_path: Path, source: str) -> None:
    day = dt.date(2025, 12, 10)
    path, _, _ = rates.import_ticker(
        "KGS/USD = 0.01144 0%\n", "in/ticker", day, tmp_path, source=source
    )
    assert rates.load_snapshot(path).source == source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("   ", "--source is empty"),
        ("Front page\nBcc: x", "control character U\\+000A"),
        ("Front\u2028page", "control character U\\+2028"),
        ("x" * 201, "201 characters"),
    ],
)
def test_import_refuses_a_source_that_is_not_one_line(
    tmp_path: Path, source: str, message: str
) -> None:
    with pytest.raises(RatesError, match=message):
        rates.import_ticker(
            "KGS/USD = 0.01144 0%\n", "t.txt", dt.date(2025, 12, 10), tmp_path, source=source
        )
    assert not list(tmp_path.iterdir())


def test_a_new_source_for_the_same_rates_corrects_the_line_without_force(tmp_path: Path) -> None:
    day = dt.date(2025, 12, 10)
    rates.import_ticker("KGS/USD = 0.01144 0%\n", "t.txt", day, tmp_path, source="Old name")
    path, _, changed = rates.import_ticker(
        "KGS/USD = 0.01144 0%\n", "t.txt", day, tmp_path, source="New name"
    )
    assert changed
    assert rates.load_snapshot(path).source == "New name"


def test_rates_import_command_writes_the_source_readers_see(project: Path) -> None:
    ticker = project / "ticker.txt"
    ticker.write_text("KGS/USD = 0.01150 0.52%\n")
    done = run_newsletter(
        project,
        "rates",
        "import",
        "ticker.txt",
        "--date",
        "2025-12-11",
        "--source",
        "The newsroom's front-page ticker, 11 December 2025",
    )
    assert done.returncode == 0, done.stderr
    assert "source (shown to readers): The newsroom's front-page ticker, 11 December" in done.stdout
    written = rates.load_snapshot(project / "content/rates/2025-12-11.yaml")
    assert written.source == "The newsroom's front-page ticker, 11 December 2025"
    assert str(project) not in (project / "content/rates/2025-12-11.yaml").read_text()


def test_rates_import_command_without_a_readers_source_writes_nothing(project: Path) -> None:
    (project / "ticker.txt").write_text("KGS/USD = 0.01150 0.52%\n")
    args = ("rates", "import", "ticker.txt", "--date", "2025-12-11")
    missing = run_newsletter(project, *args)
    assert missing.returncode == 2
    assert "--source" in missing.stderr
    as_path = run_newsletter(project, *args, "--source", str(project / "ticker.txt"))
    assert as_path.returncode == 1
    assert "names a file" in as_path.stderr
    assert "Traceback" not in as_path.stderr
    assert not (project / "content/rates/2025-12-11.yaml").exists()


# Characters that mean something to YAML, HTML, a terminal or a template, and letters.
DANGEROUS = "\"'\\:#{}[]&*!|>%@`<>=-?,$;() aZ\u00e9\u0436\U0001f600"


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(source=st.text(alphabet=DANGEROUS, min_size=1, max_size=60))
def test_any_readers_source_round_trips_through_the_snapshot_file(
    tmp_path: Path, source: str
) -> None:
    assume(source.strip() and rates.path_like(source) is None and "t.txt" not in source)
    day = dt.date(2025, 12, 10)
    path, _, _ = rates.import_ticker(
        "KGS/USD = 0.01144 0%\n", "t.txt", day, tmp_path, source=source, force=True
    )
    assert rates.load_snapshot(path).source == source.strip()


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
