"""The built sample issue in a real headless Chromium at phone and desktop widths."""

from __future__ import annotations

import itertools
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from newsletter.config import Settings, load_settings
from newsletter.issues import load_issue
from newsletter.render import render
from newsletter.snapshot import Scheme, browser, image_sizes, open_email, preview_html, take

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parent.parent
PHONE, DESKTOP, WIDE = 375, 640, 1024


@dataclass(frozen=True)
class Sample:
    html: str
    images: dict[str, tuple[int, int]]
    intro: str
    summaries: tuple[str, ...]


@pytest.fixture(scope="module")
def desk_settings() -> Settings:
    return load_settings(REPO, env={})


@pytest.fixture(scope="module")
def chromium(desk_settings: Settings) -> Iterator[Browser]:
    if not (desk_settings.chromium_path or shutil.which("chromium")):
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run installs it).")
    with browser(desk_settings) as launched:
        yield launched


@pytest.fixture(scope="module")
def sample(desk_settings: Settings) -> Sample:
    issue = load_issue(REPO / "issues" / "2025-12-10.yaml", desk_settings)
    email = render(issue, desk_settings)
    cards = [a.summary for s in issue.sections if s.style == "cards" for a in s.articles]
    return Sample(
        preview_html(email, desk_settings), image_sizes(issue), issue.spec.intro, tuple(cards)
    )


@pytest.fixture(scope="module")
def page_at(chromium: Browser, sample: Sample) -> Iterator[Any]:
    """The sample email opened once per width, shared by the tests that only read it."""
    pages: dict[int, Page] = {}

    def open_at(width: int) -> Page:
        if width not in pages:
            pages[width] = open_email(chromium, sample.html, width=width, images=sample.images)
        return pages[width]

    yield open_at
    for page in pages.values():
        page.context.close()


def test_phone_width_has_no_horizontal_scroll(page_at: Any) -> None:
    page = page_at(PHONE)
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth]")
    assert max(widths) <= PHONE


# Each multi-column row: the left, top and width of its columns, and the row's own width.
_ROWS = """() => {
  const rows = new Map();
  for (const col of document.querySelectorAll('[class*="mj-column-per-"]')) {
    const row = col.parentElement;
    if (!rows.has(row)) rows.set(row, []);
    const r = col.getBoundingClientRect();
    rows.get(row).push({left: r.left, top: r.top, width: r.width});
  }
  return [...rows].filter(([, cols]) => cols.length > 1)
    .map(([row, cols]) => ({width: row.getBoundingClientRect().width, cols}));
}"""


def test_multi_column_rows_stack_on_a_phone_and_sit_side_by_side_on_desktop(
    page_at: Any,
) -> None:
    phone_rows = page_at(PHONE).evaluate(_ROWS)
    assert phone_rows, "the sample issue should have a multi-column row (image beside text)"
    for row in phone_rows:
        tops = [c["top"] for c in row["cols"]]
        assert tops == sorted(tops)
        assert len(set(tops)) == len(tops)  # one above the other
        assert all(c["width"] >= row["width"] - 1 for c in row["cols"])
    for row in page_at(DESKTOP).evaluate(_ROWS):
        assert len({round(c["top"]) for c in row["cols"]}) == 1  # side by side


_IMAGES = """() => [...document.images].map(img => {
  const r = img.getBoundingClientRect(), p = img.parentElement.getBoundingClientRect();
  return {src: img.src, loaded: img.complete && img.naturalWidth > 0, left: r.left,
          right: r.right, width: r.width, parentLeft: p.left, parentRight: p.right};
})"""


@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_images_load_and_fit_their_container(page_at: Any, width: int) -> None:
    images = page_at(width).evaluate(_IMAGES)
    assert len(images) == 6
    for image in images:
        assert image["loaded"], image["src"]
        assert image["left"] >= image["parentLeft"] - 0.5, image["src"]
        assert image["right"] <= image["parentRight"] + 0.5, image["src"]
        assert image["right"] <= width


_FONT_SIZE_OF = """(snippets) => snippets.map(snippet => {
  const candidates = [...document.querySelectorAll('body *')]
    .filter(el => el.textContent.includes(snippet));
  const innermost = candidates[candidates.length - 1];
  return innermost ? parseFloat(getComputedStyle(innermost).fontSize) : null;
})"""
_ARTICLE_BODY = """() => [...document.querySelectorAll('.article-body p, .article-body li')]
  .map(el => parseFloat(getComputedStyle(el).fontSize))"""


def test_body_text_is_at_least_14px_on_a_phone(page_at: Any, sample: Sample) -> None:
    page = page_at(PHONE)
    snippets = [" ".join(t.split())[:40] for t in (sample.intro, *sample.summaries)]
    sizes = page.evaluate(_FONT_SIZE_OF, snippets)
    assert None not in sizes, "every intro and summary is on the page"
    body = page.evaluate(_ARTICLE_BODY)
    assert body, "the lead story is shown in full"
    assert min(sizes + body) >= 14


_CONTAINER = """() => {
  const box = [...document.querySelectorAll('body div')]
    .find(el => el.style.maxWidth === '600px').getBoundingClientRect();
  return {left: box.left, right: innerWidth - box.right, width: box.width};
}"""


@pytest.mark.parametrize("width", [DESKTOP, WIDE])
def test_desktop_content_is_centered_at_its_maximum_width(page_at: Any, width: int) -> None:
    box = page_at(width).evaluate(_CONTAINER)
    assert box["width"] == 600
    assert abs(box["left"] - box["right"]) <= 1
    assert box["left"] > 0


def test_snapshots_are_four_pngs_at_phone_and_desktop_widths(
    chromium: Browser, sample: Sample, tmp_path: Path
) -> None:
    paths = take(chromium, sample.html, tmp_path, sample.images)
    assert [p.name for p in paths] == [
        "phone-light.png",
        "phone-dark.png",
        "desktop-light.png",
        "desktop-dark.png",
    ]
    widths = [struct.unpack(">I", p.read_bytes()[16:20])[0] for p in paths]
    assert widths == [PHONE, PHONE, DESKTOP, DESKTOP]
    assert paths[0].read_bytes() != paths[1].read_bytes()  # dark mode changes the picture


# ---- editorial design: one left edge, readable colours, a walkable outline ------------------

SCHEMES = ("light", "dark")


@pytest.fixture(scope="module")
def scheme_page(chromium: Browser, sample: Sample) -> Iterator[Any]:
    """The sample email per (width, colour scheme), opened once."""
    pages: dict[tuple[int, str], Page] = {}

    def open_at(width: int, scheme: Scheme) -> Page:
        if (width, scheme) not in pages:
            pages[width, scheme] = open_email(
                chromium, sample.html, width=width, scheme=scheme, images=sample.images
            )
        return pages[width, scheme]

    yield open_at
    for page in pages.values():
        page.context.close()


# Where the first line of an element's text starts on screen (its own text, not its box).
_TEXT_LEFT = """(selector) => [...document.querySelectorAll(selector)].map(el => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const rect = [...range.getClientRects()].find(r => r.width > 0);
  return {text: el.textContent.trim().slice(0, 40), left: rect ? rect.left : null};
})"""
# Text blocks that open each part: the greeting and intro, the section headings, every
# story's title, meta line, summary and call to action, and the footer.
_EDGE_SELECTORS = {
    "intro": ".intro p",
    "rate panel": ".rates-title h2",
    "section heading": ".kicker h2",
    "story title": "h3",
    "card summary": ".card-summary",
    "call to action": ".read-more a",
    "footer": ".footer-text",
}


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_intro_cards_and_footer_text_share_one_left_edge(
    scheme_page: Any, width: int, scheme: Scheme
) -> None:
    page = scheme_page(width, scheme)
    edges: dict[str, list[dict[str, Any]]] = {
        name: page.evaluate(_TEXT_LEFT, selector) for name, selector in _EDGE_SELECTORS.items()
    }
    for name, found in edges.items():
        assert found, f"no {name} on the page"
    intro = edges["intro"][0]["left"]
    margin = (width - 600) / 2 + 24 if width > 600 else 24  # the column's 24 px inset
    assert intro == pytest.approx(margin, abs=0.5)
    misaligned = [
        (name, item["text"], item["left"])
        for name, found in edges.items()
        for item in found
        if item["left"] is None or abs(item["left"] - intro) > 0.5
    ]
    assert misaligned == [], f"text not on the intro's left edge ({intro}px)"


_CARD_IMAGES = """() => [...document.querySelectorAll('.card-image img')].map(img => {
  const r = img.getBoundingClientRect(); return {left: r.left, right: r.right, width: r.width};
})"""


def test_card_images_span_the_text_column_on_a_phone(scheme_page: Any) -> None:
    images = scheme_page(PHONE, "light").evaluate(_CARD_IMAGES)
    assert len(images) == 5
    for image in images:
        assert image["left"] == pytest.approx(24, abs=0.5)
        assert image["right"] == pytest.approx(PHONE - 24, abs=0.5)


# Every visible text node: its colour, and the first opaque background behind it.
_TEXT_COLOURS = r"""() => {
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const opaque = c => c && c !== 'transparent' && !/rgba\(.*, 0\)$/.test(c);
  while (walker.nextNode()) {
    const node = walker.currentNode, el = node.parentElement;
    if (!node.textContent.trim() || !el) continue;
    if (!el.checkVisibility({opacityProperty: true, visibilityProperty: true})) continue;
    const range = document.createRange();
    range.selectNodeContents(node);
    if (![...range.getClientRects()].some(r => r.width > 0 && r.height > 0)) continue;
    let bg = null;
    for (let p = el; p && !bg; p = p.parentElement) {
      const c = getComputedStyle(p).backgroundColor;
      if (opaque(c)) bg = c;
    }
    out.push({text: node.textContent.trim().slice(0, 30), color: getComputedStyle(el).color,
              background: bg || 'rgb(255, 255, 255)'});
  }
  return out;
}"""


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_every_visible_text_has_aa_contrast(scheme_page: Any, width: int, scheme: Scheme) -> None:
    from coloraide import Color

    texts = scheme_page(width, scheme).evaluate(_TEXT_COLOURS)
    assert len(texts) > 50  # the whole email was measured, not an empty page
    low = [
        (t["text"], t["color"], t["background"], round(ratio, 2))
        for t in texts
        if (ratio := Color(t["color"]).contrast(Color(t["background"]), method="wcag21")) < 4.5
    ]
    assert low == [], f"text below 4.5:1 in the {scheme} scheme"


def test_dark_mode_keeps_rules_visible_and_titles_not_link_blue(scheme_page: Any) -> None:
    from coloraide import Color

    page = scheme_page(PHONE, "dark")
    rules = page.evaluate(
        "[...document.querySelectorAll('.rule p')].map(p => getComputedStyle(p).borderTopColor)"
    )
    assert rules
    for rule in rules:  # a rule is a non-text graphic: WCAG asks 3:1 against the card
        assert Color(rule).contrast(Color("#1c2127"), method="wcag21") >= 3
    titles = page.evaluate(
        "[...document.querySelectorAll('h3 a')].map(a => getComputedStyle(a).color)"
    )
    links = page.evaluate("getComputedStyle(document.querySelector('.read-more a')).color")
    assert titles
    assert set(titles) == {"rgb(245, 247, 250)"}
    assert links not in titles


VARIANT = """\
title: Central Asia Weekly
date: 2025-12-10
subject: A subject
preheader: A preheader
intro: Every style at once, and a card without an image.
sections:
  - heading: Lead story
    style: full
    articles: [kyrgyzstan-dried-apricot-exports-china]
  - heading: Trade
    style: cards
    cta: button
    articles: [tajikistan-export-support-program-small-producers-farmers]
  - heading: Quick hits
    style: brief
    query: {tags_any: [topic/culture, topic/education, topic/diplomacy], days: 7}
"""


@pytest.fixture(scope="module")
def variant_html(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    """An issue with every style and an image-less card, from a copy of the sample."""
    root = tmp_path_factory.mktemp("variant")
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    card = root / "content/articles/tajikistan-export-support-program-small-producers-farmers.md"
    front, rest = card.read_text().split("\nimage:\n", 1)
    card.write_text(front + "\n" + rest.split("\n", 4)[4])  # the image's four lines go
    (root / "issues/2025-12-10.yaml").write_text(VARIANT)
    settings = load_settings(root, env={})
    issue = load_issue(root / "issues/2025-12-10.yaml", settings)
    assert issue.sections[1].articles[0].image is None
    return preview_html(render(issue, settings), settings), image_sizes(issue)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", [PHONE, DESKTOP])
def test_every_style_and_an_imageless_card_keep_the_edge_and_the_contrast(
    chromium: Browser, variant_html: tuple[str, Any], width: int, scheme: Scheme
) -> None:
    from coloraide import Color

    html, images = variant_html
    page = open_email(chromium, html, width=width, scheme=scheme, images=images)
    try:
        selectors = {**_EDGE_SELECTORS, "button": ".button a", "brief": ".brief-text"}
        edges = {name: page.evaluate(_TEXT_LEFT, sel) for name, sel in selectors.items()}
        intro = edges["intro"][0]["left"]
        assert edges["story title"], "the variant has stories"
        assert edges["button"], "the card asked for a button"
        assert len(edges["brief"]) >= 2, "the quick hits are briefs"
        off = [(n, i["text"], i["left"]) for n, f in edges.items() for i in f if i["left"] != intro]
        # A button's text sits inside its padding; its box is on the edge.
        off = [o for o in off if o[0] != "button"]
        box = page.evaluate("document.querySelector('.button a').getBoundingClientRect().left")
        assert box == pytest.approx(intro, abs=0.5)
        assert off == [], f"text not on the intro's left edge ({intro}px)"
        texts = page.evaluate(_TEXT_COLOURS)
        low = [
            (t["text"], t["color"], t["background"])
            for t in texts
            if Color(t["color"]).contrast(Color(t["background"]), method="wcag21") < 4.5
        ]
        assert low == []
    finally:
        page.context.close()


_HEADINGS = """() => [...document.querySelectorAll('h1, h2, h3, h4, h5, h6')]
  .filter(h => h.checkVisibility())
  .map(h => ({level: Number(h.tagName[1]), text: h.textContent.trim()}))"""


def test_headings_walk_from_masthead_to_sections_to_stories(
    scheme_page: Any, desk_settings: Settings
) -> None:
    page = scheme_page(PHONE, "light")
    headings = page.evaluate(_HEADINGS)
    issue = load_issue(REPO / "issues" / "2025-12-10.yaml", desk_settings)
    assert headings[0] == {"level": 1, "text": issue.spec.title}
    assert [h["level"] for h in headings].count(1) == 1
    for before, after in itertools.pairwise(headings):
        assert after["level"] <= before["level"] + 1, (before, after)  # no level skipped
    assert [h["text"] for h in headings if h["level"] == 2] == [
        "In this issue",
        "Currencies against the US dollar",  # the rate panel is a section too
        *(s.heading for s in issue.sections),
    ]
    titles = [a.title for a in issue.articles]
    assert [h["text"] for h in headings if h["level"] == 3] == titles
    # The same outline as Chromium's accessibility tree exposes it to a screen reader.
    for title in titles:
        assert page.get_by_role("heading", level=3, name=title, exact=True).count() == 1


def test_every_read_more_names_its_story(scheme_page: Any, desk_settings: Settings) -> None:
    import re

    page = scheme_page(DESKTOP, "light")
    issue = load_issue(REPO / "issues" / "2025-12-10.yaml", desk_settings)
    vague = page.get_by_role("link", name=re.compile(r"^(Read more|Continue reading)$"))
    assert vague.count() == 0
    for article in issue.articles:
        label = re.compile(rf"^(Read more|Continue reading): {re.escape(article.title)}$")
        assert page.get_by_role("link", name=label).count() == 1, article.title


def test_in_this_issue_links_jump_to_each_story(scheme_page: Any) -> None:
    page = scheme_page(PHONE, "light")
    targets = page.evaluate(
        """() => [...document.querySelectorAll('.toc a')].map(a => {
          const target = document.getElementById(a.getAttribute('href').slice(1));
          const top = el => el.getBoundingClientRect().top;
          return {text: a.textContent.trim(), target: target && target.textContent.trim(),
                  below: target && top(target) > top(a)};
        })"""
    )
    assert len(targets) == 6
    for link in targets:
        assert link["target"] == link["text"], link
        assert link["below"], link


# ---- the preview page itself ---------------------------------------------------------------


def test_preview_page_shows_both_widths_and_reloads_itself_on_save(
    chromium: Browser, preview_url: str, project: Path
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{preview_url}/issues/2025-12-10")
        widths = page.evaluate("[...document.querySelectorAll('iframe')].map(f => f.clientWidth)")
        assert widths == [PHONE, DESKTOP]
        page.evaluate("window.notReloaded = true")
        article = project / "content/articles/kyrgyzstan-dried-apricot-exports-china.md"
        edited = article.read_text().replace(
            "title: Kyrgyzstan Begins Dried Apricot Exports to China", "title: Apricots Go East"
        )
        for _ in range(20):  # the watcher starts with the server: save until it sees a save
            article.write_text(edited)
            try:
                page.wait_for_function("() => !window.notReloaded", timeout=500)
                break
            except PlaywrightTimeout:
                continue
        else:
            raise AssertionError("the preview page did not reload after the article was saved")
        title = page.frame_locator("iframe").first.get_by_text("Apricots Go East").first
        title.wait_for(state="visible", timeout=5000)
    finally:
        context.close()


def test_preview_dark_mode_toggle_darkens_the_email(chromium: Browser, preview_url: str) -> None:
    context = chromium.new_context(viewport={"width": 1400, "height": 900})
    background = "getComputedStyle(document.querySelector('.bg-page')).backgroundColor"
    try:
        page = context.new_page()
        page.goto(f"{preview_url}/issues/2025-12-10")
        assert page.frames[1].evaluate(background) == "rgb(238, 241, 244)"
        with page.expect_navigation():
            page.get_by_label("Dark mode").check()
        page.wait_for_load_state("load")
        assert "dark=1" in page.url
        assert page.frames[1].evaluate(background) == "rgb(17, 20, 24)"
    finally:
        context.close()


def test_placeholder_images_keep_their_shape_within_a_size_cap() -> None:
    import struct

    from newsletter.snapshot import MAX_SIDE, placeholder_png

    def size(png: bytes) -> tuple[int, int]:
        width, height = struct.unpack(">II", png[16:24])
        return width, height

    assert size(placeholder_png(1200, 675)) == (1200, 675)
    assert size(placeholder_png(100_000, 50_000)) == (MAX_SIDE, MAX_SIDE // 2)
