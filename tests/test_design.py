"""Editorial design: section styles, "In this issue", headings, languages and the brand,
in both parts of a real render (Jinja2 -> MJML -> premailer) of the sample content."""

from __future__ import annotations

import re
from pathlib import Path

import lxml.html
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from newsletter import brand as brand_colours
from newsletter import inert
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError, IssueError, Problem
from newsletter.issues import load_issue
from newsletter.models import RenderedEmail
from newsletter.render import render

LEAD = "kyrgyzstan-dried-apricot-exports-china"
TRAFFICKING = "kazakhstan-134-human-trafficking-cases-first-half-2025"
RUBINA = "dina-rubina-tashkent-event-suspended-gaza-comments"
ISSUE = """\
title: Central Asia Weekly
date: 2025-12-10
subject: A subject
preheader: A preheader
intro: Hello.
{extra}sections:
  - heading: Lead story
    style: {lead_style}
    articles: [{lead}]
  - heading: Trade and diplomacy
    query: {{tags_any: [topic/trade, topic/diplomacy], days: 7}}
  - heading: Quick hits
    style: brief
    articles: [{rubina}, oca-magazine-spotlight-education-eurasia]
  - heading: Rights
    style: cards
    cta: button
    articles: [{trafficking}]
"""


def write_issue(settings: Settings, extra: str = "", lead_style: str = "lead") -> Path:
    path = settings.path("issues_dir") / "2025-12-10.yaml"
    text = ISSUE.format(
        extra=extra, lead_style=lead_style, lead=LEAD, rubina=RUBINA, trafficking=TRAFFICKING
    )
    path.write_text(text, encoding="utf-8")
    return path


def rendered(settings: Settings, extra: str = "", lead_style: str = "lead") -> RenderedEmail:
    return render(load_issue(write_issue(settings, extra, lead_style), settings), settings)


def html_doc(email: RenderedEmail) -> lxml.html.HtmlElement:
    return lxml.html.document_fromstring(email.html)


def block_of(doc: lxml.html.HtmlElement, slug: str) -> lxml.html.HtmlElement:
    """The table row (section) that holds the story whose h3 has id `slug`."""
    title = doc.get_element_by_id(slug)
    return next(a for a in title.iterancestors("table") if "background" in a.get("style", ""))


def words(text: str) -> int:
    return len(text.split())


def body_paragraphs(settings: Settings, slug: str) -> list[str]:
    path = settings.path("content_dir") / "articles" / f"{slug}.md"
    body = path.read_text(encoding="utf-8").split("\n---\n", 1)[1]
    return [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]


# ---- styles ----------------------------------------------------------------------------


def test_lead_shows_whole_paragraphs_within_the_word_budget_then_continue_reading(
    settings: Settings,
) -> None:
    email = rendered(settings)
    block = block_of(html_doc(email), LEAD)
    paragraphs = [" ".join(p.text_content().split()) for p in block.cssselect(".article-body p")]
    source = body_paragraphs(settings, LEAD)
    assert paragraphs == [" ".join(p.split()) for p in source[: len(paragraphs)]]
    assert 1 <= len(paragraphs) < len(source)
    assert sum(map(words, paragraphs)) <= 120  # the default budget
    assert sum(map(words, paragraphs)) + words(source[len(paragraphs)]) > 120  # nothing fits
    link = block.xpath(".//a[contains(., 'Continue reading')]")
    assert len(link) == 1
    assert (
        link[0].get("aria-label")
        == "Continue reading: Kyrgyzstan Begins Dried Apricot Exports to China"
    )
    assert link[0].get("href").startswith("https://news.example.org/2025/12/10/kyrgyzstan")
    assert "Continue reading: https://news.example.org/2025/12/10/kyrgyzstan" in email.text
    assert source[len(paragraphs)][:40] not in email.text  # the text part is cut the same way


def test_a_section_word_budget_changes_the_excerpt(settings: Settings) -> None:
    issue_text = (
        write_issue(settings).read_text().replace("style: lead\n", "style: lead\n    words: 20\n")
    )
    (settings.path("issues_dir") / "2025-12-10.yaml").write_text(issue_text)
    email = render(load_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings), settings)
    paragraphs = block_of(html_doc(email), LEAD).cssselect(".article-body p")
    assert len(paragraphs) == 1  # the first paragraph always shows, even over budget


def test_full_shows_the_whole_story_and_no_continue_reading(settings: Settings) -> None:
    email = rendered(settings, lead_style="full")
    block = block_of(html_doc(email), LEAD)
    last = " ".join(body_paragraphs(settings, LEAD)[-1].split())
    assert last[:60] in " ".join(block.text_content().split())
    assert not block.xpath(".//a[contains(., 'Continue reading')]")
    assert block.xpath(
        ".//a[@aria-label='Read on the website: Kyrgyzstan Begins Dried Apricot Exports to China']"
    )


def test_brief_is_a_headline_and_one_sentence_without_image(settings: Settings) -> None:
    article = settings.path("content_dir") / "articles" / f"{RUBINA}.md"
    article.write_text(
        article.read_text().replace(
            "the Gaza conflict.\n", "the Gaza conflict. Her publisher declined to comment.\n", 1
        )
    )
    email = rendered(settings)
    doc = html_doc(email)
    block = block_of(doc, RUBINA)
    assert block.cssselect("img") == []
    text = " ".join(block.text_content().split())
    assert text.startswith("Uzbek-Born Author Dina Rubina’s Tashkent Event Suspended")
    assert text.endswith(
        "following widespread controversy over her remarks about the Gaza conflict."
    )
    assert "Her publisher declined" not in email.html + email.text  # one sentence only
    assert (
        block.xpath(".//h3/a")[0].get("href").startswith("https://news.example.org/2025/12/10/dina")
    )
    assert "* Uzbek-Born Author Dina Rubina" in email.text


def test_cards_show_credit_and_the_button_the_section_asked_for(settings: Settings) -> None:
    doc = html_doc(rendered(settings))
    card = block_of(doc, TRAFFICKING)
    assert "Photo: @iom.int" in card.text_content()
    assert card.cssselect(".button a")[0].get("aria-label") == (
        "Read more: Kazakhstan Reports 134 Human Trafficking Cases in First Half of 2025"
    )
    trade = block_of(doc, "kazakhstan-turkey-tighten-ties-caspian-dynamics")
    assert trade.cssselect(".button") == []
    assert len(trade.cssselect(".read-more a")) == 1


def test_a_story_dated_before_the_issue_says_when_it_ran(settings: Settings) -> None:
    article = settings.path("content_dir") / "articles" / f"{TRAFFICKING}.md"
    article.write_text(article.read_text().replace("date: 2025-12-10", "date: 2025-12-08"))
    doc = html_doc(rendered(settings))
    assert "8 December 2025 · Photo: @iom.int" in " ".join(
        block_of(doc, TRAFFICKING).text_content().split()
    )
    assert "10 December 2025" not in block_of(doc, LEAD).text_content()


def test_in_this_issue_lists_every_story_with_a_jump_to_it(settings: Settings) -> None:
    email = rendered(settings)
    doc = html_doc(email)
    issue = load_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings)
    links = doc.cssselect(".toc a")
    assert [a.text_content() for a in links] == [a.title for a in issue.articles]
    for link, article in zip(links, issue.articles, strict=True):
        assert link.get("href") == f"#{article.slug}"
        assert doc.get_element_by_id(article.slug).text_content() == article.title
    listed = email.text.split("IN THIS ISSUE\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert listed == [f"- {a.title}" for a in issue.articles]


# ---- validation of the issue file ------------------------------------------------------


def problems(settings: Settings, **kwargs: str) -> list[Problem]:
    with pytest.raises(IssueError) as info:
        load_issue(write_issue(settings, **kwargs), settings)
    return list(info.value.problems)


def test_a_misspelt_style_names_file_line_field_and_the_likely_style(settings: Settings) -> None:
    (found,) = problems(settings, lead_style="leed")
    assert found.field == "sections[0].style"
    assert found.line == 8
    assert found.file is not None
    assert found.file.name == "2025-12-10.yaml"
    assert "'leed' is not one of 'lead', 'full', 'cards', 'brief'." in found.message
    assert "Did you mean 'lead'?" in found.message


def test_bad_cta_words_and_language_are_reported_with_their_fields(settings: Settings) -> None:
    path = write_issue(settings, extra="language: english!\n")
    text = (
        path.read_text()
        .replace("cta: button", "cta: buton")
        .replace("style: lead\n", "style: lead\n    words: 5\n")
    )
    path.write_text(text)
    with pytest.raises(IssueError) as info:
        load_issue(path, settings)
    by_field = {p.field: p for p in info.value.problems}
    assert "Did you mean 'button'?" in by_field["sections[3].cta"].message
    assert "from 20 to 2000" in by_field["sections[0].words"].message
    assert "not a language tag" in by_field["language"].message
    assert by_field["language"].line == 6


# ---- languages -------------------------------------------------------------------------


def test_html_lang_comes_from_the_issue_and_an_article_keeps_its_own(settings: Settings) -> None:
    assert html_doc(rendered(settings)).get("lang") == "en"
    article = settings.path("content_dir") / "articles" / f"{RUBINA}.md"
    article.write_text(article.read_text().replace("tags:", "lang: ru\ntags:", 1))
    doc = html_doc(rendered(settings, extra="language: en-GB\n"))
    assert doc.get("lang") == "en-GB"
    block = block_of(doc, RUBINA)
    assert {e.get("lang") for e in block.iter() if e.get("lang")} == {"ru"}
    assert doc.get_element_by_id(RUBINA).get("lang") == "ru"
    assert block_of(doc, LEAD).xpath(".//*[@lang]") == []  # same language as the issue


def test_dir_follows_the_language_of_the_issue_and_of_an_article(settings: Settings) -> None:
    assert html_doc(rendered(settings)).get("dir") == "ltr"
    for tag in ("ar", "he", "fa-IR", "ur"):
        doc = html_doc(rendered(settings, extra=f"language: {tag}\n"))
        assert (doc.get("lang"), doc.get("dir")) == (tag, "rtl")
    assert html_doc(rendered(settings, extra="language: ru\n")).get("dir") == "ltr"
    article = settings.path("content_dir") / "articles" / f"{RUBINA}.md"
    article.write_text(article.read_text().replace("tags:", "lang: ar\ntags:", 1))
    doc = html_doc(rendered(settings))
    assert doc.get_element_by_id(RUBINA).get("dir") == "rtl"
    assert doc.get_element_by_id(LEAD).get("dir") is None


def test_an_article_lang_that_is_not_a_tag_fails_its_file(settings: Settings) -> None:
    article = settings.path("content_dir") / "articles" / f"{RUBINA}.md"
    article.write_text(article.read_text().replace("tags:", 'lang: "ru\\" onload=x"\ntags:', 1))
    found = [p for p in problems(settings) if p.field == "lang"]
    assert found
    assert found[0].file == article
    assert found[0].line is not None


# ---- brand -----------------------------------------------------------------------------


def brand(project: Path, **env: str) -> Settings:
    return load_settings(project, env={f"NEWSLETTER_{k.upper()}": v for k, v in env.items()})


def test_brand_logo_accent_and_footer_reach_both_parts(project: Path) -> None:
    settings = brand(
        project,
        brand_logo_url="https://news.example.org/logo.png",
        brand_logo_alt="Central Asia Weekly, the logo",
        brand_accent="#8a1c0b",
        footer_why="You asked for this at our Bishkek book fair stand.",
    )
    email = rendered(settings)
    doc = html_doc(email)
    (h1,) = doc.cssselect("h1")
    (logo,) = h1.cssselect("img")
    assert logo.get("src") == "https://news.example.org/logo.png"
    assert logo.get("alt") == "Central Asia Weekly, the logo"
    assert "color:#8a1c0b" in doc.cssselect(".kicker h2")[0].get("style", "").replace(" ", "")
    for part in (email.html, email.text):
        assert "You asked for this at our Bishkek book fair stand." in part
        assert "You receive this because" not in part


def test_default_brand_needs_no_setup(settings: Settings) -> None:
    doc = html_doc(rendered(settings))
    assert [h.text_content() for h in doc.cssselect("h1")] == ["Central Asia Weekly"]
    assert "You receive this because you subscribed to Central Asia Weekly." in doc.text_content()


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("brand_accent", "#f5c518", "contrast of 1.6:1"),
        ("brand_accent", "blue", "#rrggbb"),
        ("brand_logo_url", "http://news.example.org/logo.png", "https address"),
        ("brand_logo_url", 'https://x.org/a.png" onerror="x', "quotes"),
        ("brand_logo_width", "1200", "from 40 to 600"),
        ("footer_why", "line one\nline two", "U+000A"),
    ],
)
def test_bad_brand_settings_are_refused_naming_the_setting(
    project: Path, setting: str, value: str, says: str
) -> None:
    with pytest.raises(ConfigError) as info:
        brand(project, **{setting: value})
    assert f"NEWSLETTER_{setting.upper()}" in str(info.value)
    assert says in str(info.value)


HEX = st.integers(0, 0xFFFFFF).map(lambda n: f"#{n:06x}")


@hypothesis_settings(deadline=None)  # the first example imports coloraide (~0.5 s)
@given(foreground=HEX, background=HEX)
def test_the_contrast_formula_agrees_with_coloraide(foreground: str, background: str) -> None:
    from coloraide import Color

    expected = Color(foreground).contrast(Color(background), method="wcag21")
    # WCAG rounds its coefficients (0.2126...); coloraide derives them through XYZ with more
    # digits: the two agree to 1 part in 1,000, far finer than the 4.5:1 line needs.
    assert brand_colours.contrast(foreground, background) == pytest.approx(expected, rel=1e-3)


@given(accent=HEX)
def test_any_accent_gets_a_dark_variant_readable_on_the_dark_card(accent: str) -> None:
    dark = brand_colours.dark_variant(accent)
    assert brand_colours.contrast(dark, brand_colours.CARD_DARK) >= 4.5


# ---- untrusted titles at the new sinks ---------------------------------------------------

# The characters and shapes that mean something to HTML, Jinja, our placeholders and YAML.
PIECES = [*"<>&\"'`=/\\{}%#-:; aZ", "{{", "}}", "{%", "-email-", "-first_name_html-", "&amp;"]
DANGEROUS = (
    st.lists(st.sampled_from(PIECES), min_size=1, max_size=12)
    .map("".join)
    .filter(lambda s: bool(s.strip()))
)


def as_read(text: str) -> str:
    """Text as a reader sees it: without the invisible joiners, spaces collapsed."""
    return " ".join(text.replace(inert.JOINER, "").split())


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(title=DANGEROUS)
def test_a_hostile_title_stays_text_in_headings_jump_list_and_link_names(
    settings: Settings, title: str
) -> None:
    import yaml

    article = settings.path("content_dir") / "articles" / f"{TRAFFICKING}.md"
    original = article.read_text()
    line = yaml.safe_dump({"title": title}, allow_unicode=True, width=10_000).strip()
    article.write_text(re.sub(r"^title: .*$", lambda _: line, original, count=1, flags=re.M))
    try:
        email = rendered(settings)
    finally:
        article.write_text(original)
    doc = html_doc(email)
    seen = as_read(title)
    assert as_read(doc.get_element_by_id(TRAFFICKING).text_content()) == seen
    toc = [a for a in doc.cssselect(".toc a") if a.get("href") == f"#{TRAFFICKING}"]
    assert [as_read(a.text_content()) for a in toc] == [seen]
    (button,) = block_of(doc, TRAFFICKING).cssselect(".button a")
    assert as_read(button.get("aria-label", "")) == f"Read more: {seen}"
    assert f"- {seen}" in [as_read(line) for line in email.text.splitlines()]


def test_preflight_takes_a_jump_to_a_story_but_not_to_nowhere() -> None:
    from newsletter.preflight import check_links

    doc = lxml.html.document_fromstring(
        '<html><body><a href="#story">Story</a> <a href="#gone">Gone</a>'
        '<h3 id="story">Story</h3></body></html>'
    )
    found = check_links(doc, "")
    assert [p.message for p in found] == ["link '#gone' is not a well-formed https or mailto link."]
