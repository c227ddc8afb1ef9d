"""The text part never cuts a URL, and it links what the HTML part links.

A plain-text client links from `https://` to the next space or line end: a URL wrapped at a
hyphen sends the reader to half an address. So the URLs a reader can click in the text part
are compared, as a set, with the HTML part's links, for the sample issue and for an issue
whose article has 200-character URLs, and Hypothesis wraps words and URLs of every shape.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage
from pathlib import Path

import jinja2
import lxml.html
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import inert
from newsletter.build import build_issue, write_files
from newsletter.config import load_settings
from newsletter.models import RenderedEmail
from newsletter.render import environment
from newsletter.text import wrap_markdown

REPO = Path(__file__).resolve().parent.parent
# What a plain-text client links: from the scheme up to a space, an angle bracket or a
# parenthesis (Markdown's `[label](url)`), less the sentence's closing punctuation.
TEXT_URL = re.compile(r"https?://[^\s<>()\[\]]+")
TRAILING = ".,;:!?'\""


def text_urls(text: str) -> set[str]:
    return {
        m.group(0).rstrip(TRAILING) for line in text.splitlines() for m in TEXT_URL.finditer(line)
    }


def html_links(html: str) -> set[str]:
    doc = lxml.html.document_fromstring(html)
    hrefs = (str(a.get("href", "")) for a in doc.iter("a"))
    return {href for href in hrefs if href.startswith(("https://", "http://"))}


def build(project: Path) -> RenderedEmail:
    settings = load_settings(project, env={})
    return build_issue(project / "issues" / "2025-12-10.yaml", settings).email


def assert_same_links(rendered: RenderedEmail) -> None:
    in_text, in_html = text_urls(rendered.text), html_links(rendered.html)
    assert in_text == in_html, (
        f"only in the text part: {sorted(in_text - in_html)}\n"
        f"only in the HTML part: {sorted(in_html - in_text)}"
    )


def test_the_sample_links_the_same_urls_in_both_parts(project: Path) -> None:
    assert_same_links(build(project))


LONG = (
    "https://news.example.org/2025/12/10/open-data/"
    + "-".join(["kyrgyzstan-dried-apricot-exports"] * 4)
    + "/report-2025-q3-final-version?lang=en&section=trade-and-diplomacy"
)
BARE = "https://data.example.org/open-" + "data-" * 25 + "set.csv"


def test_200_character_urls_stay_whole_on_one_line(project: Path) -> None:
    assert len(LONG) >= 200
    assert len(BARE) >= 150
    lead = project / "content" / "articles" / "kyrgyzstan-dried-apricot-exports-china.md"
    # First in the body: the lead story shows an excerpt, whose first paragraph always shows.
    front, body = lead.read_text().split("\n---\n", 1)
    lead.write_text(
        f"{front}\n---\nThe customs service published the figures at {BARE} and the "
        f"ministry's own report is [on its open-data portal]({LONG}), with the shipment "
        f"dates.\n\n{body}"
    )
    card = project / "content" / "articles" / "kazakhstan-turkey-tighten-ties-caspian-dynamics.md"
    card.write_text(re.sub(r"(?m)^url: .*$", f"url: {LONG}", card.read_text(), count=1))
    rendered = build(project)
    assert_same_links(rendered)
    lines = rendered.text.splitlines()
    for url in (LONG, BARE):
        assert any(url in line for line in lines), f"{url} is cut across lines"
    # The bare URL is a link in the HTML part too (linkify), and the long one gets its own line.
    assert BARE in html_links(rendered.html)
    assert BARE in lines

    # And so in the message a client gets, once its quoted-printable parts are decoded.
    settings = load_settings(project, env={})
    built = build_issue(project / "issues" / "2025-12-10.yaml", settings)
    eml = write_files(built, project / "out", settings).directory / "message.eml"
    message = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    plain, html = (message.get_body((kind,)) for kind in ("plain", "html"))
    assert plain is not None
    assert html is not None
    assert text_urls(plain.get_content()) == html_links(html.get_content()) >= {LONG, BARE}


# ---- Hypothesis: words, hyphenated words and URLs of any length, wrapped at any width ----

WORD = st.text("abcdefghijklmnopqrstuvwxyz-'.,", min_size=1, max_size=14).filter(
    lambda w: not w.startswith(("http", "mailto"))
)
PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_./~%=&?#", min_size=0, max_size=220)
URLS = st.builds(
    lambda scheme, host, path: f"{scheme}://{host}.example.org/{path}",
    st.sampled_from(["https", "http"]),
    st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=30),
    PATH,
)
TOKENS = st.lists(st.one_of(WORD, URLS), min_size=1, max_size=40)


def assert_whole(wrapped: str, urls: list[str], width: int) -> None:
    lines = wrapped.splitlines()
    for url in urls:
        assert any(url in line.split() for line in lines), f"{url!r} was cut:\n{wrapped}"
    for line in lines:
        # Over the width only when one word alone does not fit: a long URL's own line.
        assert len(line) <= width or " " not in line.strip(), line


@settings(max_examples=200, deadline=None)
@given(TOKENS, st.integers(min_value=20, max_value=100))
def test_markdown_wrapping_never_cuts_a_url(tokens: list[str], width: int) -> None:
    source = " ".join(tokens)
    urls = [t for t in tokens if t.startswith("http")]
    wrapped = wrap_markdown(source, width)
    # Content made inert percent-encodes a tag-shaped run in a URL: the same URL to a server.
    expected = [inert.url(u) for u in urls] if inert.SHAPES.search(source) else urls
    assert_whole(wrapped, expected, width)


TEMPLATES = environment(REPO / "templates")
PLAIN = jinja2.Environment(autoescape=False)  # the text part is not HTML
PLAIN.filters["wordwrap"] = TEMPLATES.filters["wordwrap"]


@settings(max_examples=200, deadline=None)
@given(TOKENS, st.integers(min_value=20, max_value=100), st.booleans(), st.booleans())
def test_the_wordwrap_filter_never_cuts_a_url(
    tokens: list[str], width: int, break_long: bool, break_hyphens: bool
) -> None:
    """Whatever a template asks for (`wordwrap(72, true)`), a URL comes out whole."""
    template = PLAIN.from_string("{{ t | wordwrap(w, bl, break_on_hyphens=bh) }}")
    wrapped = template.render(t=" ".join(tokens), w=width, bl=break_long, bh=break_hyphens)
    urls = [t for t in tokens if t.startswith("http")]
    if urls:
        assert_whole(wrapped, urls, width)
