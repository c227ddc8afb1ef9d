"""The rate panel: bar heights and sentences from the data, gaps, the preflight warning, and
the rendered panel in a real headless Chromium at phone width, light and dark."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import re
import shutil
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hypothesis
import pytest
from hypothesis import strategies as st

from newsletter import ratepanel, rates
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.inert import JOINER
from newsletter.issues import load_issue
from newsletter.models import Issue
from newsletter.preflight import check_rates
from newsletter.render import long_date, render
from newsletter.snapshot import browser, image_sizes, open_email, preview_html

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path("issues") / "2025-12-10.yaml"
END = dt.date(2025, 12, 10)
WEEK = ratepanel.window(END, 7)
PHONE = 375
MID = ratepanel.MIN_BAR + (ratepanel.CHART_HEIGHT - ratepanel.MIN_BAR) // 2  # 18 px


def points(*values: str | None) -> list[tuple[dt.date, Decimal | None]]:
    """The week ending 10 December with these values (None: no quote that day)."""
    days = ratepanel.window(END, len(values))
    return [(d, None if v is None else Decimal(v)) for d, v in zip(days, values, strict=True)]


def heights(*values: str | None) -> list[int]:
    return [bar.height for bar in ratepanel.bars(points(*values))]


def short(day: dt.date) -> str:
    return long_date(day).removesuffix(f" {day.year}")


# ---- chart data ---------------------------------------------------------------------------


def test_bars_span_the_weeks_low_to_high() -> None:
    low, top = ratepanel.MIN_BAR, ratepanel.CHART_HEIGHT
    assert heights("1.00", "2.00", "3.00") == [low, MID, top]
    assert heights("3.00", "1.00", "2.00") == [top, low, MID]


def test_a_flat_week_is_a_row_of_equal_mid_height_bars() -> None:
    assert heights(*["0.28490"] * 7) == [MID] * 7


def test_a_tiny_wobble_stays_near_the_middle_instead_of_filling_the_chart() -> None:
    # 0.1 % apart, under the 0.5 % floor: a step of a few pixels, not floor to ceiling.
    assert heights("100.0", "100.1") == [15, 21]
    # 1 % apart, over the floor: the full height.
    assert heights("100", "101") == [ratepanel.MIN_BAR, ratepanel.CHART_HEIGHT]


def test_a_missing_day_is_a_gap_with_no_bar() -> None:
    bars = ratepanel.bars(points("1.00", None, None, "3.00", "2.00"))
    assert [b.gap for b in bars] == [False, True, True, False, False]
    assert [b.height for b in bars] == [ratepanel.MIN_BAR, 0, 0, ratepanel.CHART_HEIGHT, MID]


def test_one_day_is_one_mid_height_bar_and_gaps() -> None:
    assert heights(None, None, None, None, None, None, "0.01144") == [0] * 6 + [MID]
    assert heights(*[None] * 7) == [0] * 7


@hypothesis.given(
    st.lists(
        st.one_of(
            st.none(),
            st.decimals(min_value=Decimal("0.00001"), max_value=Decimal("99999"), places=5),
        ),
        min_size=1,
        max_size=31,
    )
)
def test_bars_keep_the_order_of_the_values_within_the_chart(
    values: list[Decimal | None],
) -> None:
    days = ratepanel.window(END, len(values))
    bars = ratepanel.bars(list(zip(days, values, strict=True)))
    for bar, value in zip(bars, values, strict=True):
        assert bar.gap == (value is None)
        if value is None:
            assert bar.height == 0
        else:
            assert ratepanel.MIN_BAR <= bar.height <= ratepanel.CHART_HEIGHT
    drawn = sorted((v, b.height) for v, b in zip(values, bars, strict=True) if v is not None)
    assert [h for _, h in drawn] == sorted(h for _, h in drawn)  # a higher value never lower


def test_the_base_currency_reads_in_the_plural() -> None:
    names = [ratepanel.plural(ratepanel.name(c)) for c in ("USD", "EUR", "CNY", "KGS", "XAU")]
    assert names == ["US dollars", "euros", "Chinese yuan", "Kyrgyz som", "XAU"]


def test_days_are_counted_grammatically() -> None:
    assert [ratepanel.days_phrase(n) for n in (0, 1, 2, 5)] == [
        "0 days",
        "1 day",
        "2 days",
        "5 days",
    ]


def test_series_follows_the_calendar_not_the_files() -> None:
    directory = REPO / "content" / "rates"
    trend = rates.history(directory, END)
    kept = tuple(s for s in trend if s.date.day not in (6, 7))
    series = ratepanel.series("KGS", kept, WEEK)
    assert [d.day for d, _ in series] == [4, 5, 6, 7, 8, 9, 10]
    assert [v for _, v in series][2:4] == [None, None]
    assert series[-1][1] == Decimal("0.01144")


# ---- the sentence -------------------------------------------------------------------------


def test_the_sentence_reads_the_week() -> None:
    sentence = ratepanel.describe(
        "Kyrgyz som in US dollars",
        points("0.01143", "0.01146", "0.01146", "0.01146", "0.01147", "0.01144", "0.01144"),
        short,
    )
    assert sentence == (
        "Kyrgyz som in US dollars over 7 days: from 0.01143 on 4 December "
        "to 0.01144 on 10 December, up 0.09%."
    )


def test_the_sentence_names_the_missing_days() -> None:
    sentence = ratepanel.describe(
        "Tajik somoni in US dollars",
        points("0.10819", "0.10847", None, None, "0.10858", "0.10841", "0.10811"),
        short,
    )
    assert sentence == (
        "Tajik somoni in US dollars over 5 of 7 days (no quote on 6 December and "
        "7 December): from 0.10819 on 4 December to 0.10811 on 10 December, down 0.07%."
    )


def test_the_sentence_of_a_flat_a_single_and_an_empty_week() -> None:
    assert ratepanel.describe("X", points(*["0.28490"] * 7), short) == (
        "X over 7 days: unchanged at 0.28490 from 4 December to 10 December."
    )
    assert ratepanel.describe("X", points(*[None] * 6, "0.01144"), short) == (
        "X: 0.01144 on 10 December, the only quote in the last 7 days."
    )
    assert ratepanel.describe("X", points(*[None] * 7), short) == (
        "X: no quote in the last 7 days."
    )
    assert ratepanel.describe("X", points("1.00", "1.50", "1.00"), short) == (
        "X over 3 days: from 1.00 on 8 December to 1.00 on 10 December, back where it started."
    )
    assert ratepanel.describe("X", points("1.00000", "1.00001"), short) == (
        "X over 2 days: from 1.00000 on 9 December to 1.00001 on 10 December, "
        "a change of less than 0.01%."
    )


# ---- the panel in the built issue, with days missing ---------------------------------------


def drop_days(project: Path, *days: int) -> None:
    for day in days:
        (project / "content" / "rates" / f"2025-12-{day:02d}.yaml").unlink()


def built(project: Path, **overrides: Any) -> tuple[Issue, Settings, str, str]:
    settings = load_settings(project, env={}, overrides=overrides)
    issue = load_issue(project / SAMPLE, settings)
    email = render(issue, settings)
    return issue, settings, email.html, email.text


def test_the_sample_panel_covers_seven_days_without_a_gap(project: Path) -> None:
    issue, settings, html, _ = built(project)
    assert "10 December 2025 · trend over 7 days" in html
    assert html.count('class="bar"') == 5 * 7
    assert 'class="gap"' not in html
    found = check_rates(issue, settings)
    assert [p for p in found if p.field in ("date", "source")] == []  # UZS's precision aside
    assert "Source: The newsroom's front-page ticker, 10 December 2025" in html.replace(
        "&#x27;", "'"
    ).replace("&#39;", "'")
    assert ".txt" not in html.split("Currencies against")[1].split("Lead story")[0]


def test_missing_days_show_as_gaps_and_the_panel_says_how_many_days(project: Path) -> None:
    drop_days(project, 6, 7)
    issue, settings, html, text = built(project)
    assert "trend over 5 of 7 days" in html
    assert html.count('class="gap"') == 5 * 2
    assert "a grey line marks a day without a quote" in html
    assert "Trend over 5 of 7 days:" in text
    assert "over 5 of 7 days (no quote on 6 December and 7 December)" in " ".join(text.split())
    [warning] = [p for p in check_rates(issue, settings) if "rate trend" in p.message]
    assert warning.file == project / "content" / "rates" / "2025-12-10.yaml"
    assert warning.severity == "warning"
    assert "has 5 days with a snapshot (none for 2025-12-06, 2025-12-07)" in warning.message


def test_the_sub_line_and_the_charts_count_the_same_days(project: Path) -> None:
    drop_days(project, 4, 5)  # missing at the window's start: the chart still has 7 columns
    _, _, html, text = built(project)
    assert "trend over 5 of 7 days<" in html
    assert html.count('class="gap"') == 5 * 2
    flat = " ".join(text.split())
    assert "Trend over 5 of 7 days:" in flat
    assert "over 5 of 7 days (no quote on 4 December and 5 December)" in flat
    assert "over 5 days" not in flat


def test_one_day_reads_one_day(project: Path) -> None:
    drop_days(project, 4, 5, 6, 7, 8, 9)
    issue, settings, html, text = built(project)
    assert "trend over 1 of 7 days<" in html
    assert "Trend over 1 of 7 days:" in text
    assert "1 days" not in html + text
    [warning] = [p for p in check_rates(issue, settings) if "rate trend" in p.message]
    assert "has 1 day with a snapshot" in warning.message


def test_the_trend_window_is_a_setting(project: Path) -> None:
    drop_days(project, 4, 5)
    issue, settings, html, _ = built(project, rate_trend_days=5)
    assert "trend over 5 days" in html
    assert 'class="gap"' not in html
    assert not [p for p in check_rates(issue, settings) if "rate trend" in p.message]
    with pytest.raises(ConfigError, match="rate_trend_days must be a whole number of days"):
        load_settings(project, env={"NEWSLETTER_RATE_TREND_DAYS": "0"})


def test_preflight_warns_when_a_snapshots_source_is_a_file_path(project: Path) -> None:
    snapshot = project / "content" / "rates" / "2025-12-10.yaml"
    snapshot.write_text(
        snapshot.read_text().replace(
            'source: "The newsroom\'s front-page ticker, 10 December 2025"',
            'source: "Imported from /home/editor/seed/front-page-2025-12-10.txt"',
        )
    )
    issue, settings, _, _ = built(project)
    [warning] = [p for p in check_rates(issue, settings) if p.field == "source"]
    assert warning.file == snapshot
    assert "'/home/editor/seed/front-page-2025-12-10.txt'" in warning.message


# ---- in a real browser ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, dict[str, Any], dict[str, tuple[int, int]]]:
    """The sample issue, with KGS up 0.09 % on the day so both change colours show."""
    root = tmp_path_factory.mktemp("rates-panel")
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    snapshot = root / "content" / "rates" / "2025-12-10.yaml"
    text = snapshot.read_text()
    up = text.replace(
        'KGS: {value: "0.01144", change_pct: "0"}', 'KGS: {value: "0.01144", change_pct: "0.09"}'
    )
    assert up != text
    snapshot.write_text(up)
    settings = load_settings(root, env={})
    issue = load_issue(root / SAMPLE, settings)
    panel = ratepanel.panel(issue.rates, issue.rate_history, 7, long_date)
    assert panel is not None
    return preview_html(render(issue, settings), settings), panel, dict(image_sizes(issue))


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    settings = load_settings(REPO, env={})
    if not (settings.chromium_path or shutil.which("chromium")):
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run installs it).")
    with browser(settings) as launched:
        yield launched


@pytest.fixture(scope="module", params=["light", "dark"])
def phone(request: pytest.FixtureRequest, chromium: Browser, sample: Any) -> Iterator[Page]:
    html, _, images = sample
    page = open_email(chromium, html, width=PHONE, scheme=request.param, images=images)
    yield page
    page.context.close()


# Each text node of the panel's header and value cells, and of the sub-line: how many lines
# it takes on screen (a Range's rects each sit on one line).
_LINES = """() => {
  const cells = [...document.querySelectorAll('.rates th'),
                 ...document.querySelectorAll('.rates tr > td:not(.trend):not(.trend td)'),
                 ...document.querySelectorAll('.rates-sub')];
  const out = [];
  // A currency's sub-line as a whole: it may wrap after its "=" only when it must.
  for (const line of document.querySelectorAll('.rates .rate-line')) {
    const range = document.createRange();
    range.selectNodeContents(line);
    const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
    out.push({text: line.textContent.replace(/\u00a0/g, ' ').trim(), lines: tops.size});
  }
  for (const cell of cells) {
    const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      if (!node.textContent.trim() || node.parentElement.closest('.rate-line')) continue;
      const range = document.createRange();
      range.selectNodeContents(node);
      const tops = new Set([...range.getClientRects()].map(r => Math.round(r.top)));
      out.push({text: node.textContent.trim(), lines: tops.size});
    }
  }
  return out;
}"""


def test_no_header_or_value_cell_wraps_on_a_phone(phone: Page) -> None:
    found = phone.evaluate(_LINES)
    texts = [f["text"] for f in found]
    assert "Per 1 USD" in texts
    assert "10 December 2025 · trend over 7 days" in texts
    assert "▼ −0.28%" in texts
    assert "1 TMT = 0.28490 USD" in texts
    assert [f for f in found if f["lines"] != 1] == []
    table = phone.evaluate(
        "(() => { const r = document.querySelector('.rates table').getBoundingClientRect();"
        " return [r.left, r.right]; })()"
    )
    assert table[0] >= 24 - 0.5  # lined up with the text above it
    assert table[1] <= PHONE - 24 + 0.5  # and inside the phone's width


# Long values that preflight accepts, for every currency at once: the reviewer's UZS
# (0.0000793 and a change of -0.05 once widened the page to 392 px), and a value given to
# eighteen decimals with a two-digit change.
LONG_VALUES = {
    "realistic": ("0.0000793", "-0.05"),
    "many digits": ("0.000079312345678901", "-12.3456"),
}


@pytest.mark.parametrize("values", sorted(LONG_VALUES))
def test_long_values_for_every_currency_fit_a_phone(
    values: str, tmp_path: Path, chromium: Browser
) -> None:
    value, change = LONG_VALUES[values]
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, tmp_path / name)
    snapshot = tmp_path / "content" / "rates" / "2025-12-10.yaml"
    text = re.sub(
        r"\{value: \"[0-9.]+\", change_pct: \"[-0-9.]+\"\}",
        f'{{value: "{value}", change_pct: "{change}"}}',
        snapshot.read_text(),
    )
    assert text.count(value) == 5
    snapshot.write_text(text)
    settings = load_settings(tmp_path, env={})
    issue = load_issue(tmp_path / SAMPLE, settings)
    html = preview_html(render(issue, settings), settings)
    for scheme in ("light", "dark"):
        page = open_email(
            chromium, html, width=PHONE, scheme=scheme, images=dict(image_sizes(issue))
        )
        try:
            widths = page.evaluate(
                "[document.documentElement.scrollWidth,"
                " document.querySelector('.rates table').getBoundingClientRect().right]"
            )
            lines = [f for f in page.evaluate(_LINES) if f["lines"] != 1]
        finally:
            page.context.close()
        assert widths[0] <= PHONE, (scheme, widths)
        assert widths[1] <= PHONE - 24 + 0.5, (scheme, widths)
        # Only a currency's sub-line may take a second line; headers and figures never do.
        assert all(f["text"].startswith("1 ") for f in lines), lines


_BARS = """() => [...document.querySelectorAll('.rates table.chart')].map(chart =>
  [...chart.querySelectorAll('div.bar, div.gap')].map(cell => ({
    gap: cell.classList.contains('gap'),
    height: cell.getBoundingClientRect().height,
    bottom: cell.getBoundingClientRect().bottom,
    color: getComputedStyle(cell).backgroundColor,
    behind: getComputedStyle(cell.closest('td.trend')).backgroundColor,
  })))"""


def test_bars_have_the_heights_the_data_implies(phone: Page, sample: Any) -> None:
    _, panel, _ = sample
    drawn = phone.evaluate(_BARS)
    expected = [[bar["height"] for bar in row["bars"]] for row in panel["rows"]]
    assert [[round(b["height"]) for b in row] for row in drawn] == expected
    assert expected[0] == [8, 23, 23, 23, 28, 13, 13]  # KGS, 4 to 10 December
    assert expected[4] == [MID] * 7  # TMT's flat week: flat
    for row in drawn:
        assert len({round(b["bottom"]) for b in row}) == 1  # on one baseline
        assert all(b["color"] != b["behind"] for b in row)  # visible in both schemes


def test_each_chart_is_an_image_named_by_its_sentence(phone: Page, sample: Any) -> None:
    _, panel, _ = sample
    for row in panel["rows"]:
        chart = phone.get_by_role("img", name=row["description"], exact=True)
        assert chart.count() == 1
    assert panel["rows"][0]["description"].startswith("Kyrgyz som in US dollars over 7 days")


def rgb(css: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", css)[:3])


def contrast(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    def luminance(color: tuple[int, ...]) -> float:
        linear = [c / 255 / 12.92 if c <= 10 else ((c / 255 + 0.055) / 1.055) ** 2.4 for c in color]
        return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]

    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


# The colour of the change, of a plain value beside it, and of what is behind them (the
# first ancestor with a background that is not transparent).
_COLOURS = """(direction) => {
  const behind = el => {
    for (; el; el = el.parentElement) {
      const bg = getComputedStyle(el).backgroundColor;
      if (bg !== 'rgba(0, 0, 0, 0)') return bg;
    }
    return 'rgb(255, 255, 255)';
  };
  const change = document.querySelector('.rates td.change.' + direction);
  const value = change.previousElementSibling.querySelector('strong');
  return {change: getComputedStyle(change).color, text: getComputedStyle(value).color,
          behind: behind(change), shown: change.innerText};
}"""


@pytest.mark.parametrize(("direction", "shown"), [("up", "▲ +0.09%"), ("down", "▼ −0.28%")])
def test_the_change_keeps_its_own_colour_and_contrast(
    phone: Page, direction: str, shown: str
) -> None:
    colours = phone.evaluate(_COLOURS, direction)
    assert colours["shown"] == shown  # the sign and arrow kept
    assert colours["change"] != colours["text"]  # not turned grey like the body text
    assert contrast(rgb(colours["change"]), rgb(colours["behind"])) >= 4.5
    assert contrast(rgb(colours["text"]), rgb(colours["behind"])) >= 4.5


# ---- the source line is data in both parts -----------------------------------------------

# What means something to HTML, MJML, Jinja, our placeholders, YAML and a terminal.
HOSTILE = "<>&\"'`{}%#-_=/\\:;!|*?$()[] aZé\u0436\U0001f600"


@functools.cache
def sample_issue() -> tuple[Issue, Settings]:
    settings = load_settings(REPO, env={})
    return load_issue(REPO / SAMPLE, settings), settings


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(
    source=st.text(alphabet=HOSTILE, min_size=1, max_size=40).filter(lambda s: s.strip())
)
def test_any_source_reaches_the_reader_as_typed(source: str) -> None:
    import lxml.html

    issue, settings = sample_issue()
    assert issue.rates is not None
    changed = dataclasses.replace(issue, rates=dataclasses.replace(issue.rates, source=source))
    email = render(changed, settings)
    shown = lxml.html.fromstring(email.html).xpath(
        "string(//div[starts-with(normalize-space(.), 'Change on the day and bars')])"
    )
    seen = shown.replace(JOINER, "").split("Source: ", 1)[1]
    assert seen.strip() == source.strip()  # as typed: no tag, entity or markup took effect
    lines = email.text.replace(JOINER, "").splitlines()
    assert f"Source: {source}".rstrip() in [line.rstrip() for line in lines]
