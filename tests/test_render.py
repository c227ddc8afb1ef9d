"""Rendering: hostile content stays inert, the inliner keeps what MJML needs, sizes hold."""

from __future__ import annotations

import http.server
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from newsletter import inert, placeholders
from newsletter.build import build_issue
from newsletter.config import Settings
from newsletter.errors import RenderError
from newsletter.inline import inline_css
from newsletter.issues import load_issue
from newsletter.models import Recipient
from newsletter.render import render

GMAIL_CLIP_BYTES = 102 * 1024
HOSTILE = """\
<script>alert('xss')</script>

<img src="x" onerror="alert(1)">

[plain](javascript:alert(1)) [upper](JaVaScRiPt:alert(2)) [entity](javascript&#58;alert(3))
[tab](java\tscript:alert(4)) [data](data:text/html;base64,PHNjcmlwdD4=) [vb](vbscript:msgbox(1))

<a href="javascript:alert(5)" onclick="alert(6)">raw link</a>

{{ settings.sendgrid_api_key }} {% for x in range(3) %}loop{% endfor %} {# comment #}

<mj-section><mj-column><mj-text>injected</mj-text></mj-column></mj-section></mj-text>

<style>body{display:none}</style> <iframe src="https://evil.example"></iframe>

[fine](https://example.org/ok?a=1&b=2)
"""


def hostile_project(settings: Settings) -> Path:
    articles = settings.path("content_dir") / "articles"
    path = articles / "kyrgyzstan-dried-apricot-exports-china.md"
    front, _, _ = path.read_text().partition("\n---\n")
    path.write_text(
        front.replace("title: Kyrgyzstan", "title: <b>{{ 7*7 }}</b> Kyrgyzstan")
        + "\n---\n"
        + HOSTILE,
        encoding="utf-8",
    )
    return settings.path("issues_dir") / "2025-12-10.yaml"


def active_content(html: str) -> list[str]:
    """What a browser would run or load from the markup: scripts, frames, handlers, bad links."""
    import lxml.html

    found = []
    doc = lxml.html.document_fromstring(html)
    ids = {str(e.get("id")) for e in doc.iter() if e.get("id")}
    for element in doc.iter():
        tag = str(element.tag).lower()
        if tag in {"script", "iframe", "object", "embed", "form"}:
            found.append(f"<{tag}>")
        for name, value in element.attrib.items():
            if name.lower().startswith("on"):
                found.append(f"{tag}[{name}]")
            in_page = name.lower() == "href" and value[:1] == "#" and value[1:] in ids
            if (
                name.lower() in {"href", "src"}
                and not in_page
                and not value.startswith(("https://", "http://", "mailto:", "-"))
            ):
                found.append(f"{tag}[{name}={value!r}]")
    return found


def test_hostile_article_is_inert_in_html(settings: Settings) -> None:
    email = build_issue(hostile_project(settings), settings).email
    html = email.html
    assert active_content(html) == []
    import lxml.html

    sheets = [e.text or "" for e in lxml.html.document_fromstring(html).iter("style")]
    assert not [css for css in sheets if "display:none" in css]  # the article's <style> is text
    assert "injected" in html  # MJML tags came out as text ...
    assert "&lt;mj-section&gt;" in html  # ... escaped, not compiled
    # Template syntax is literal text: as typed once the invisible joiners are taken out.
    seen = html.replace(inert.JOINER, "")
    assert "{{ settings.sendgrid_api_key }}" in seen
    assert "{% for x in range(3) %}loop{% endfor %}" in seen
    assert "looplooploop" not in html
    assert "&lt;b&gt;{{ 7*7 }}&lt;/b&gt; Kyrgyzstan" in seen  # the title is escaped, not run
    assert 'href="https://example.org/ok?a=1&amp;b=2"' in html


def test_hostile_article_is_literal_in_text_part(settings: Settings) -> None:
    email = build_issue(hostile_project(settings), settings).email
    assert "{{ settings.sendgrid_api_key }}" in email.text.replace(inert.JOINER, "")
    assert "49" not in email.text.split("Kyrgyzstan")[0]  # {{ 7*7 }} was not evaluated


def test_inliner_keeps_media_rules_with_important_and_the_doctype(settings: Settings) -> None:
    email = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    assert email.html.startswith("<!doctype html>")
    media = re.findall(r"@media[^{]*\{(.*?\})\s*\}", email.html, re.DOTALL)
    assert any("max-width:479px" in m or "!important" in m for m in media)
    assert (
        "@media only screen and (min-width:480px){.mj-column-per-100{width:100% !important;"
        "max-width:100% !important}.mj-column-per-38{width:38% !important;"
    ) in email.html
    assert "@media (prefers-color-scheme:dark)" in email.html
    # class-based rules from <mj-style> were inlined into style attributes
    assert re.search(r'<p style="[^"]*margin:0 0 14px', email.html)


class _Counter(http.server.BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Counter.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"p { color: red; }")

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def css_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Counter.hits = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_inliner_never_touches_the_network(css_server: str) -> None:
    html = (
        f'<html><head><link rel="stylesheet" href="{css_server}/link.css">'
        f'<style>@import url("{css_server}/import.css"); p {{ color: blue; }}</style>'
        "</head><body><p>x</p></body></html>"
    )
    out = inline_css(html)
    assert _Counter.hits == []
    assert 'style="color:blue"' in out


def test_inliner_is_quiet_about_mso_properties(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    html = "<html><head><style>td { mso-line-height-rule: exactly; color: red }</style></head>"
    with caplog.at_level(logging.DEBUG):
        out = inline_css(html + "<body><table><tr><td>x</td></tr></table></body></html>")
    assert "mso-line-height-rule:exactly" in out
    assert [r for r in caplog.records if r.levelno >= logging.INFO] == []
    captured = capfd.readouterr()
    assert captured.out == ""
    assert captured.err == ""


def test_sample_issue_stays_under_gmail_clip(settings: Settings) -> None:
    email = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    assert 20 * 1024 < email.html_bytes < GMAIL_CLIP_BYTES


KGS_WEEK = (
    "Kyrgyz som in US dollars over 7 days: from 0.01143 on 4 December "
    "to 0.01144 on 10 December, up 0.09%."
)


def test_rate_panel_in_both_parts(settings: Settings) -> None:
    email = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    for part in (email.html, email.text):
        assert "87.41" in part  # 1 USD = 87.41 KGS
        assert "0.28490" in part  # the rate as given, trailing zero kept
        assert "▼ −0.28%" in part
        assert "-0%" not in part
        # The trend as a sentence (the chart's accessible name; a list in the text part),
        # never block-character glyphs.
        assert KGS_WEEK in " ".join(part.split())
        assert not set("▁▂▃▄▅▆▇█") & set(part)
    assert "1 USD =     87.41 KGS" in email.text


def test_every_article_link_in_html_is_in_text(settings: Settings) -> None:
    email = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    links = set(re.findall(r'href="(https://news\.example\.org/2025[^"]*)"', email.html))
    assert len(links) == 6
    for link in links:
        assert link.replace("&amp;", "&") in email.text
        assert "utm_campaign=weekly-2025-12-10" in link


def test_placeholders_stay_marked_and_fill_with_escaping(settings: Settings) -> None:
    email = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    tags = email.tags
    assert f"Hello {tags.html('first_name')}," in email.html
    assert f'href="{tags.html("unsubscribe_url")}"' in email.html
    assert f"Hello {tags.text('first_name')}," in email.text
    tom = Recipient("tom@example.org", "<b>Tom & Jerry</b>", "https://news.example.org/u/t?a=1&b=2")
    html = placeholders.fill(email.html, tom, part="html", tags=tags)
    text = placeholders.fill(email.text, tom, part="text", tags=tags)
    assert "Hello &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;," in html
    assert 'href="https://news.example.org/u/t?a=1&amp;b=2"' in html
    assert "Hello <b>Tom & Jerry</b>," in text
    assert "Unsubscribe: https://news.example.org/u/t?a=1&b=2" in text


def test_template_typo_fails_with_file_and_line(settings: Settings) -> None:
    template = settings.path("templates_dir") / "digest.mjml.j2"
    template.write_text(
        template.read_text().replace("{{ section.heading }}", "{{ section.haeding }}")
    )
    issue = load_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings)
    with pytest.raises(RenderError, match=r"digest\.mjml\.j2:\d+: .*haeding"):
        render(issue, settings)


def test_template_syntax_error_names_file_and_line(settings: Settings) -> None:
    template = settings.path("templates_dir") / "digest.txt.j2"
    template.write_text("line one\n{% if %}\n")
    issue = load_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings)
    with pytest.raises(RenderError, match=r"digest\.txt\.j2:2: template syntax error"):
        render(issue, settings)


def test_text_wrapping_keeps_lists_headings_and_words() -> None:
    from newsletter.text import wrap_markdown

    body = (
        "## A heading that is long enough to be wrapped if it were a paragraph, but is not\n\n"
        "- one item that is long enough that it has to wrap onto a second line of text here\n"
        "- two\n\nA paragraph\nsplit oddly https://example.org/a/very/long/url/that/must/stay/whole/x"
    )
    out = wrap_markdown(body, width=40)
    assert out.splitlines()[0].startswith("## A heading that is long enough")
    assert "- one item that is long enough that it\n  has to wrap" in out
    assert "https://example.org/a/very/long/url/that/must/stay/whole/x" in out
    assert max(len(line) for line in out.splitlines()[1:] if "https" not in line) <= 40
