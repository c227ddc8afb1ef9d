"""The accessibility gate: small emails with one known defect each, the email rules and
axe-core in the real Chromium, and the sample issue's report as a golden file."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import lxml.html
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.accessibility import AccessibilityReport, Finding, email_rules, run_axe
from newsletter.build import Gates, check_file, check_gates
from newsletter.config import Settings, load_settings
from newsletter.snapshot import browser
from tests.conftest import run_newsletter

if TYPE_CHECKING:
    from playwright.sync_api import Browser

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "2025-12-10" / "gates.json"
HEAD = '<html lang="en" dir="ltr"><head><title>Weekly</title></head><body>'
STORY = "<h1>Weekly</h1><p>Enough words of text here for the reader to read.</p>"


def email(body: str, *, page: str = HEAD) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(f"{page}{body}</body></html>")


def layout(cells: str) -> str:
    return f'<table role="presentation"><tr><td>{STORY}{cells}</td></tr></table>'


def found(doc: lxml.html.HtmlElement) -> list[Finding]:
    return list(email_rules(doc))


def test_a_clean_small_email_has_no_finding() -> None:
    assert found(email(layout('<a href="https://x.example/a">The Naryn dam opens</a>'))) == []


def test_a_layout_table_without_role_is_a_serious_finding_on_that_table() -> None:
    doc = email(layout('<table width="100%"><tr><td>Inner</td></tr></table>'))
    [finding] = found(doc)
    assert (finding.rule, finding.impact, finding.severity) == (
        "email-layout-table-role",
        "serious",
        "error",
    )
    assert finding.snippet == '<table width="100%">'
    assert finding.selector == (
        "body > table:nth-child(1) > tbody > tr:nth-child(1) > td:nth-child(1) > table:nth-child(3)"
    )
    assert 'Add role="presentation"' in finding.message


def test_a_data_table_keeps_its_semantics_and_never_takes_role_presentation() -> None:
    rates = "<table><caption>Rates</caption><tr><th>KGS</th><td>87.4</td></tr></table>"
    assert found(email(layout(rates))) == []
    hidden = rates.replace("<table>", '<table role="presentation">')
    [finding] = found(email(layout(hidden)))
    assert (finding.rule, finding.impact) == ("email-data-table-role", "serious")
    assert finding.snippet == '<table role="presentation">'


def test_a_chart_table_named_as_an_image_is_not_a_layout_table() -> None:
    bars = '<tr><td height="32"><div style="height:20px">&nbsp;</div></td></tr>'
    named = f'<table role="img" aria-label="KGS over 7 days: up 0.09%.">{bars}</table>'
    assert found(email(layout(named))) == []
    labelled = f'<p id="s">KGS over 7 days.</p><table role="img" aria-labelledby="s">{bars}</table>'
    assert found(email(layout(labelled))) == []
    # Without a name, an image says nothing, and the table is still a layout table.
    for unnamed in (
        f'<table role="img">{bars}</table>',
        f'<table role="img" aria-label="  ">{bars}</table>',
        f'<table role="grid">{bars}</table>',
    ):
        [finding] = found(email(layout(unnamed)))
        assert (finding.rule, finding.impact) == ("email-layout-table-role", "serious")


def test_a_skipped_heading_level_names_the_heading_and_the_level_to_use() -> None:
    [finding] = found(email(layout("<h3>Kyrgyzstan</h3><p>Story</p>")))
    assert (finding.rule, finding.impact, finding.severity) == (
        "email-heading-order",
        "moderate",
        "warning",
    )
    assert finding.snippet == "<h3>"
    assert finding.message.startswith("<h3> follows <h1>: a heading level is skipped")
    assert finding.message.endswith("Use <h2>.")


def test_an_email_without_headings_is_told_to_make_story_titles_headings() -> None:
    doc = email('<table role="presentation"><tr><td><p>Only a paragraph.</p></td></tr></table>')
    [finding] = found(doc)
    assert (finding.rule, finding.impact, finding.selector) == ("email-headings", "moderate", None)


def test_an_image_without_alt_is_critical_and_an_empty_alt_only_for_decoration() -> None:
    [finding] = found(email(layout('<img src="https://x.example/dam.jpg" width="600">')))
    assert (finding.rule, finding.impact, finding.severity) == (
        "email-image-alt",
        "critical",
        "error",
    )
    assert finding.snippet == '<img src="https://x.example/dam.jpg" width="600">'
    decorative = '<img src="https://x.example/rule.png" alt="">'
    assert found(email(layout(decorative))) == []
    linked = f'<a href="https://x.example/a">{decorative}</a>'
    [unnamed] = found(email(layout(linked)))
    assert (unnamed.rule, unnamed.impact) == ("email-image-alt", "critical")
    assert "the link has no name" in unnamed.message


def test_read_more_alone_is_serious_and_passes_with_the_title_in_its_accessible_name() -> None:
    bare = '<a href="https://x.example/dam">Read more</a>'
    no_heading = '<table role="presentation"><tr><td><p>Some text to read.</p>{}</td></tr></table>'
    [_, finding] = found(email(no_heading.format(bare)))  # the first: no heading at all
    assert (finding.rule, finding.impact) == ("email-link-purpose", "serious")
    assert finding.message.startswith(
        "the link text 'Read more' does not say where it goes, and no heading above it does"
    )
    labelled = bare.replace("<a ", '<a aria-label="Read more: The Naryn dam opens" ')
    assert found(email(layout(labelled))) == []
    assert found(email(layout(bare.replace("Read more", "Read more about the dam")))) == []


def test_read_more_under_a_story_heading_is_a_moderate_finding_naming_that_heading() -> None:
    card = '<h2>The Naryn dam opens</h2><a href="https://x.example/dam">Read more…</a>'
    [finding] = found(email(layout(card)))
    assert (finding.rule, finding.impact, finding.severity) == (
        "email-link-purpose",
        "moderate",
        "warning",
    )
    assert "through the heading above it ('The Naryn dam opens')" in finding.message


def test_lang_and_dir_on_html() -> None:
    no_lang = found(email(layout(""), page="<html><head><title>t</title></head><body>"))
    assert [(f.rule, f.impact) for f in no_lang] == [
        ("email-html-lang", "serious"),
        ("email-html-dir", "minor"),
    ]
    rtl = found(email(layout(""), page='<html lang="ar"><head><title>t</title></head><body>'))
    assert [(f.rule, f.impact) for f in rtl] == [("email-html-dir", "serious")]


def test_text_under_the_minimum_size_is_flagged_and_font_size_zero_wrappers_are_not() -> None:
    small = '<p style="font-size:11px">Fine print</p>'
    [finding] = found(email(layout(small)))
    assert (finding.rule, finding.impact) == ("email-text-size", "moderate")
    assert finding.message.startswith("text is set at 11px, under 13px")
    mjml_wrapper = '<div style="font-size:0"><div style="font-size:16px">Body text</div></div>'
    assert found(email(layout(mjml_wrapper))) == []
    nested = '<span style="font-size:12px"><span>1 UZS =</span> <b>0.0000793</b></span>'
    [finding] = found(email(layout(nested)))
    assert finding.snippet == '<span style="font-size:12px">'
    resized = '<span style="font-size:12px"><span style="font-size:14px">Big</span></span>'
    assert found(email(layout(resized))) == []


def test_an_email_whose_words_are_in_images_is_serious() -> None:
    alt = "Big sale today on every carpet in our Bishkek and Osh shops until Sunday night"
    doc = email(
        '<table role="presentation"><tr><td><h1>Sale</h1>'
        f'<img src="https://x.example/s.png" alt="{alt}"></td></tr></table>'
    )
    [finding] = found(doc)
    assert (finding.rule, finding.impact) == ("email-text-in-images", "serious")


# ---- axe-core in Chromium ----------------------------------------------------------------


@pytest.fixture(scope="module")
def desk_settings() -> Settings:
    return load_settings(REPO, env={})


@pytest.fixture(scope="module")
def chromium(desk_settings: Settings) -> Iterator[Browser]:
    if not (desk_settings.chromium_path or shutil.which("chromium")):
        pytest.fail("Chromium is missing: apt-get install chromium (.ci/run installs it).")
    with browser(desk_settings) as launched:
        yield launched


def test_axe_reports_an_image_without_alt_on_the_element_the_email_rules_name(
    chromium: Browser,
) -> None:
    doc = email(layout('<img src="https://x.example/dam.png" width="600" height="300">'))
    findings, version = run_axe(chromium, doc, {})
    assert version.startswith("4.")
    [image_alt] = [f for f in findings if f.rule == "image-alt"]
    assert (image_alt.impact, image_alt.engine, image_alt.severity) == ("critical", "axe", "error")
    [ours] = [f for f in found(doc) if f.rule == "email-image-alt"]
    assert image_alt.selector == ours.selector
    assert image_alt.snippet == ours.snippet
    assert image_alt.views == ("phone-light",)  # structure is checked once


def test_axe_checks_contrast_in_dark_mode_too(chromium: Browser) -> None:
    dark_only = (
        '<html lang="en" dir="ltr"><head><title>t</title><style>'
        "@media (prefers-color-scheme: dark) { body, td { background: #000 !important; }"
        " p { color: #111 !important; } }</style></head><body>"
    )
    doc = email(layout(""), page=dark_only)
    findings, _ = run_axe(chromium, doc, {})
    contrast = [f for f in findings if f.rule == "color-contrast"]
    assert contrast, findings
    assert all(set(f.views) == {"phone-dark", "desktop-dark"} for f in contrast)
    assert all(f.severity == "error" for f in contrast)  # axe rates contrast serious


# ---- the sample issue ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_gates(desk_settings: Settings, chromium: Browser) -> Gates:
    checked = check_file(REPO / "issues" / "2025-12-10.yaml", desk_settings)
    return check_gates(checked, desk_settings, chromium)


def _relative(document: object) -> str:
    """The report as JSON with the checkout's path taken out, so the golden file is the
    same on every machine."""
    return json.dumps(document, indent=2, ensure_ascii=False).replace(f"{REPO}/", "") + "\n"


def test_the_sample_report_matches_its_golden_file(
    sample_gates: Gates, update_golden: bool
) -> None:
    produced = _relative(sample_gates.as_dict())
    if update_golden:
        GOLDEN.write_text(produced, encoding="utf-8")
        return
    assert GOLDEN.exists(), f"{GOLDEN} is missing: run `pytest --update-golden` and review it."
    assert json.loads(produced) == json.loads(GOLDEN.read_text(encoding="utf-8"))


def test_the_sample_has_no_serious_or_critical_finding_and_no_tiny_text(
    sample_gates: Gates,
) -> None:
    findings = sample_gates.accessibility.findings
    assert [f for f in findings if f.impact in ("serious", "critical")] == []
    assert [f for f in findings if f.rule == "email-text-size"] == []
    # What is left is axe's page landmarks, explained in the README's "Preflight gates".
    assert {f.rule for f in findings} <= {"landmark-one-main", "region"}


def test_the_sample_findings_name_the_article_or_template_to_open(sample_gates: Gates) -> None:
    for finding in sample_gates.accessibility.findings:
        assert finding.source is not None
        assert finding.source.suffix in (".md", ".j2"), finding
    links = [f for f in sample_gates.accessibility.findings if f.rule == "email-link-purpose"]
    assert all(f.source is not None and f.source.suffix == ".md" for f in links)


def test_every_element_a_sample_finding_names_is_found_by_its_selector_in_chromium(
    sample_gates: Gates, chromium: Browser, desk_settings: Settings
) -> None:
    """What the preview's desk relies on to outline an element in the email."""
    from newsletter.snapshot import open_email, preview_html

    checked = check_file(REPO / "issues" / "2025-12-10.yaml", desk_settings)
    page = open_email(chromium, preview_html(checked.email, desk_settings), width=640)
    try:
        named = [
            (f.selector, f.snippet)
            for f in sample_gates.accessibility.findings
            if f.selector and f.snippet
        ]
        named += [
            (g.selector, g.snippet) for g in sample_gates.clients.gaps if g.selector and g.snippet
        ]
        assert named
        for selector, snippet in named:
            tag = page.evaluate("s => document.querySelector(s)?.tagName.toLowerCase()", selector)
            assert snippet.startswith(f"<{tag}"), (selector, snippet)
    finally:
        page.context.close()


def test_check_json_carries_both_reports(project: Path) -> None:
    done = run_newsletter(project, "check", "--json", "issues/2025-12-10.yaml")
    [report] = json.loads(done.stdout)
    assert report["accessibility"]["axe"].startswith("4.")
    assert report["accessibility"]["views"] == [
        "phone-light",
        "phone-dark",
        "desktop-light",
        "desktop-dark",
    ]
    assert [c["client"] for c in report["clients"]["clients"]][:3] == [
        "gmail-web",
        "gmail-app",
        "outlook-windows",
    ]
    errors = report["accessibility"]["errors"]
    assert done.returncode == (1 if errors else 0), done.stderr
    gated = [p for p in report["problems"] if p["message"].startswith("accessibility [")]
    assert len([p for p in gated if p["severity"] == "error"]) == errors
    skipped = run_newsletter(project, "check", "--json", "--no-gates", "issues/2025-12-10.yaml")
    assert "accessibility" not in json.loads(skipped.stdout)[0]


# ---- the preview's desk ------------------------------------------------------------------


def test_the_desk_shows_the_gates_and_a_click_outlines_the_finding_in_both_frames(
    project: Path, chromium: Browser
) -> None:
    from newsletter.preview import create_app
    from tests.conftest import uvicorn_port

    app = create_app(load_settings(project, env={}), watch_files=False)
    with uvicorn_port(app) as port:
        page = chromium.new_page()
        try:
            page.goto(f"http://127.0.0.1:{port}/issues/2025-12-10")
            row = page.locator("#gates .accessibility tr[data-selector]").first
            row.wait_for(timeout=60_000)
            selector = row.get_attribute("data-selector")
            snippet = row.locator("code.snippet").inner_text()
            row.click()
            for frame in page.frames[1:]:  # the phone and the desktop frame
                marked = frame.locator("[data-gate-outline]")
                assert marked.count() == 1
                assert marked.evaluate("e => getComputedStyle(e).outlineStyle") == "solid"
                tag = marked.evaluate("e => e.tagName.toLowerCase()")
                assert snippet.startswith(f"<{tag}"), (selector, snippet)
            clients = page.locator("#gates .clients summary").all_inner_texts()
            assert any(text.startswith("Outlook (Windows): ") for text in clients)
        finally:
            page.close()


# ---- untrusted text in findings stays data -------------------------------------------------

# No NUL or C0 controls other than whitespace: lxml, which parses the email, holds none.
DANGEROUS = st.lists(
    st.sampled_from([*"<>&\"'`/=;:{}%#\\\n\r\t\u2028\x85 aZ-", "</td>", "<b>", "&amp;"]),
    min_size=1,
    max_size=20,
).map("".join)


@given(title=DANGEROUS, href_tail=DANGEROUS)
@hsettings(max_examples=60, deadline=None)
def test_a_heading_and_an_address_from_an_article_stay_text_in_the_finding_and_the_desk(
    title: str, href_tail: str
) -> None:
    """A story heading is quoted in a finding and a link's address in its element; on the
    desk both arrive as the exact text, inside the one cell they belong to."""
    from newsletter import pages
    from newsletter.clients import check_clients, families

    doc = email(layout("<h2>x</h2><a>Read more</a>"))
    heading = next(doc.iter("h2"))
    heading.text = title
    link = next(doc.iter("a"))
    link.set("href", "https://x.example/" + href_tail)
    link.set("style", "display:flex")
    [finding] = [f for f in found(doc) if f.rule == "email-link-purpose"]
    gaps = check_clients(doc, families(["outlook-windows"])).for_client("outlook-windows")
    page = pages.render(
        "preview/gates.html",
        failure=None,
        accessibility=AccessibilityReport((finding,), "4.x"),
        findings=[(finding, "content/articles/a.md")],
        clients=[(families(["outlook-windows"])[0], gaps)],
        dataset="test",
    )
    shown = lxml.html.fragment_fromstring(page, create_parent="div")
    [section] = [s for s in shown.iter("section") if s.get("class") == "accessibility"]
    [row] = [tr for tr in section.iter("tr") if tr.get("data-selector") == finding.selector]
    cells = [td for td in row if td.tag == "td"]
    assert len(cells) == 4
    message = cells[2].text or ""
    assert message == finding.message  # the heading as typed, no markup made of it
    assert [c.tag for c in cells[2]] == ["br", "code"]
    assert cells[2][1].text == finding.snippet
    [flex] = [g for g in gaps if g.slug == "css-display-flex"]
    assert flex.snippet is not None
    [clients] = [s for s in shown.iter("section") if s.get("class") == "clients"]
    rows = [tr for tr in clients.iter("tr") if tr.get("data-selector") == flex.selector]
    assert f"{flex.title} ×{flex.count}" in [row[1].text for row in rows]


def test_without_a_browser_the_check_fails_saying_so_instead_of_passing(project: Path) -> None:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env["NEWSLETTER_CHROMIUM_PATH"] = str(project / "no-chromium-here")
    done = run_newsletter(project, "check", "--json", "issues/2025-12-10.yaml", env=env)
    assert done.returncode == 1
    [report] = json.loads(done.stdout)
    [missing] = [p for p in report["problems"] if p["message"].startswith("the gates did not")]
    assert missing["severity"] == "error"
    assert "Chromium is not installed" in missing["message"]
    assert "--no-gates" in missing["message"]
