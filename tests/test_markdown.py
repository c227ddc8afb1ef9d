"""Article Markdown to HTML: bare URLs become links, hostile markup never does."""

from __future__ import annotations

from urllib.parse import unquote

import lxml.html
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.markdown import to_html


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
