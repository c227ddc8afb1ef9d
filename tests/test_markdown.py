"""Article Markdown to HTML: bare URLs become links, hostile markup never does."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import lxml.html
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.markdown import SchemeLinkify, _parser, dropped, to_html
from tests.conftest import run_newsletter


def links(html: str) -> list[tuple[str, str]]:
    """(href, visible text) of every link, as a mail client sees them."""
    doc = lxml.html.fragment_fromstring(html, create_parent="div")
    return [(str(a.get("href")), a.text_content()) for a in doc.iter("a")]


def test_a_bare_url_in_an_article_is_a_link() -> None:
    url = "https://data.example.org/open-data/exports-2025.csv?year=2025&month=7"
    html = to_html(f"The figures are at {url}. More next week.")
    assert links(html) == [(url, url)]  # the sentence's full stop is not part of it


def test_http_and_mailto_urls_are_linked_but_only_with_a_scheme() -> None:
    html = to_html(
        "Write to mailto:desk@example.org or see http://archive.example.org/2019, "
        "not example.org nor desk@example.org nor 192.168.0.1."
    )
    assert [href for href, _ in links(html)] == [
        "mailto:desk@example.org",
        "http://archive.example.org/2019",
    ]


def test_a_javascript_or_relative_url_is_never_linked() -> None:
    html = to_html(
        "Click javascript:alert(1) or data:text/html,x or /relative/path or ftp://x.org/f"
    )
    assert links(html) == []
    assert "javascript:alert(1)" in lxml.html.fragment_fromstring(html).text_content()


SAFE_PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_/~%=&?#", max_size=80)


@settings(max_examples=100, deadline=None)
@given(SAFE_PATH, st.sampled_from(["https", "http"]))
def test_any_bare_url_is_one_link_to_itself(path: str, scheme: str) -> None:
    url = f"{scheme}://news.example.org/{path}".rstrip("?#&=%")
    found = links(to_html(f"See {url} today"))
    assert len(found) == 1
    href, label = found[0]
    assert href.startswith(f"{scheme}://news.example.org/")
    # The link goes where it says (a stray `%` is escaped as %25 in the href, as a browser does).
    assert unquote(href) == unquote(label)
    assert url.startswith(label)  # and never further than the text names


# ---- what the email drops is reported to the editor, on the article's file and line ----

HOSTILE = """
A note <img src=x onerror=alert(1)> for you.

<script>alert(1)</script>

See [the form](javascript:alert(1)) or [our page](/about) and ![map](https://x.org/m.png).

Quoting `<script>` in code, and https://example.org/a, are fine.
"""


def test_dropped_markup_is_found_on_its_line() -> None:
    found = [(d.line, d.what.split(" is ")[0]) for d in dropped(HOSTILE.strip())]
    assert found == [
        (0, "the raw HTML `<img onerror>`"),
        (2, "the raw HTML `<script>`"),
        (4, "a link to a `javascript:` address"),
        (4, "a link to a relative address"),
        (4, "an image in the body"),
    ]


def test_a_link_the_email_cannot_keep_stays_markdown_text_in_both_parts() -> None:
    """Not an `<a>` that leads nowhere: the reader sees what the text part shows."""
    for target in ("javascript:alert(1)", "/about", "ftp://x.org/f", "data:text/html,x"):
        html = to_html(f"See [our page]({target}) now.")
        assert links(html) == []
        assert f"[our page]({target})" in lxml.html.fragment_fromstring(html).text_content()
    assert links(to_html("See [our page](https://x.org/about).")) == [
        ("https://x.org/about", "our page")
    ]


def test_event_handlers_are_named_however_they_are_separated() -> None:
    for source in (
        "<img/onerror=alert(1)>",
        '<img src="a"onerror=alert(1)>',
        "<img ONERROR = f()>",
    ):
        assert dropped(f"x {source} y")[0].what.startswith("the raw HTML `<img onerror>`")


def test_clean_markdown_drops_nothing(repo: Path) -> None:
    for article in sorted((repo / "content" / "articles").glob("*.md")):
        assert dropped(article.read_text().split("---", 2)[2]) == (), article.name


def test_check_warns_on_the_article_file_and_line(project: Path) -> None:
    article = project / "content" / "articles" / "kyrgyzstan-dried-apricot-exports-china.md"
    article.write_text(article.read_text() + HOSTILE)
    lines = article.read_text().splitlines()
    done = run_newsletter(project, "check", "issues/2025-12-10.yaml", "--json")
    assert done.returncode == 0, done.stderr  # warnings: the issue can still go out
    [report] = json.loads(done.stdout)
    found = [p for p in report["problems"] if p["field"] == "body"]
    assert {Path(p["file"]).name for p in found} == {article.name}
    assert {p["severity"] for p in found} == {"warning"}
    where = {p["message"].split(" is ")[0]: lines[p["line"] - 1] for p in found}
    assert "onerror" in where["the raw HTML `<img onerror>`"]
    assert "<script>" in where["the raw HTML `<script>`"]
    assert "javascript:" in where["a link to a `javascript:` address"]
    assert "(/about)" in where["a link to a relative address"]
    assert "![map]" in where["an image in the body"]


def test_check_warns_on_the_intro_line_in_the_issue_file(project: Path) -> None:
    issue = project / "issues" / "2025-12-10.yaml"
    issue.write_text(
        issue.read_text().replace("small farmers export,", "small <b>farmers</b> export,")
    )
    lines = issue.read_text().splitlines()
    done = run_newsletter(project, "check", "issues/2025-12-10.yaml", "--json")
    [report] = json.loads(done.stdout)
    [found] = [p for p in report["problems"] if p["field"] == "intro"]
    assert Path(found["file"]).name == issue.name
    assert found["message"].startswith("the raw HTML `<b>` is not allowed in an email")
    assert "<b>farmers</b>" in lines[found["line"] - 1]


PIECES = [
    *"<>\"'&=/:;()[]!#`\\ \n\r\t\x1b\x00\u2028\u202e{}%-_.ab",
    *["javascript:", "onerror", "<script", "<img ", "https://", "mailto:", "data:", "]("],
]
DANGEROUS = st.lists(st.sampled_from(PIECES), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(DANGEROUS)
def test_any_source_gives_only_full_links_and_findings_that_quote_no_markup(source: str) -> None:
    """Whatever an article holds: every link the HTML has goes to a full https/http/mailto
    address, and a finding names tags and schemes in plain letters, never a control
    character or the markup itself (it is printed on the editor's terminal)."""
    html = to_html(source)
    for href, _label in links(html) if html.strip() else []:
        assert href.startswith(("https://", "http://", "mailto:")), href
    for found in dropped(source):
        assert found.line >= 0
        assert found.line <= source.count("\n") + source.count("\r")
        assert re.fullmatch(r"[ -~]+", found.what), found.what  # printable ASCII only
        assert "javascript:alert" not in found.what


class StockPretest(SchemeLinkify):
    """linkify-it's own (slow) pretest: the reference for ours."""

    def pretest(self, text: str) -> bool:
        return bool(super(SchemeLinkify, self).pretest(text))


LINKY = st.lists(
    st.sampled_from(
        [*PIECES, "HTTPS://X.ORG/a", "http://y.org", "Mailto:e@x.org", " ", "\n", "ftp://f.org"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(LINKY)
def test_our_quick_pretest_links_exactly_what_the_stock_one_does(source: str) -> None:
    ours = _parser()
    stock = type(ours)("commonmark", {"html": False, "linkify": True, "typographer": False})
    stock.enable("linkify")
    stock.linkify = StockPretest()
    assert ours.render(source) == stock.render(source)
