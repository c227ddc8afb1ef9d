"""Untrusted Markdown (articles, intros) to sanitized HTML: markdown-it-py, then nh3."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

import nh3
from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from newsletter import inert

ALLOWED_TAGS = {
    "p",
    "br",
    "h2",
    "h3",
    "h4",
    "ul",
    "ol",
    "li",
    "blockquote",
    "em",
    "strong",
    "a",
    "code",
    "pre",
    "hr",
}
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}}
URL_SCHEMES = {"https", "http", "mailto"}
ABSOLUTE = ("https://", "http://", "mailto:")
# An <a> as nh3 writes it once it has dropped the href: title (quoted, `"` escaped) and rel.
_NO_HREF = re.compile(r'<a (?:title="[^"]*" )?rel="noopener noreferrer">(.*?)</a>', re.DOTALL)


class SchemeLinkify(LinkifyIt):  # type: ignore[misc]  # linkify-it-py has no type hints
    """linkify-it for URLs with a scheme only (see `_parser`), with a pretest to match.

    The stock pretest searches for fuzzy hosts and emails as well, even when they are off:
    with it the six sample bodies render 3.7 times slower than without linkify, with ours
    1.4 times (benchmarks/bench_linkify.py). With fuzzy links off, nothing without `http:`,
    `https:` or `mailto:` can be a link."""

    _MAY_LINK = re.compile(r"(?:https?|mailto):", re.IGNORECASE)

    def __init__(self) -> None:
        super().__init__(
            schemas={"ftp:": None, "//": None},
            options={"fuzzy_link": False, "fuzzy_email": False, "fuzzy_ip": False},
        )

    def pretest(self, text: str) -> bool:
        return self._MAY_LINK.search(text) is not None


class _Parser(MarkdownIt):
    def normalizeLinkText(self, link: str) -> str:  # markdown-it's hook name
        """A link's text as the editor typed it, as the text part shows it: the default
        percent-decodes it, so `%01` became a control character and `%20` a space."""
        return link

    def validateLink(self, url: str) -> bool:  # markdown-it's hook name
        """Only a full https/http/mailto address makes a link; any other stays Markdown text,
        as in the text part (nh3 would keep an `<a>` that leads nowhere)."""
        return url.lower().startswith(ABSOLUTE) and super().validateLink(url)


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # html=False: raw HTML, MJML tags and template syntax in an article stay literal text.
    # linkify: a bare https://... in the text is a link in the HTML part, as a plain-text
    # client makes it one in the text part. Only URLs with a scheme: a fuzzy "example.org" or
    # "ed@example.org" would be a link in one part and plain words in the other.
    parser = _Parser("commonmark", {"html": False, "linkify": True, "typographer": False})
    parser.enable("linkify")
    # Nor ftp: or a scheme-less //host, which nh3 would leave as a link to nowhere.
    parser.linkify = SchemeLinkify()
    return parser


@lru_cache(maxsize=256)  # pure; a preview re-renders the same bodies on every save
def to_html(markdown: str) -> Markup:
    """Safe HTML for a template: only https/http/mailto links, no scripts, styles or handlers,
    and no text shaped like a placeholder or template syntax (see `inert`)."""
    rendered = _parser().render(inert.markdown(markdown))
    clean = nh3.clean(
        rendered,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer",
        strip_comments=True,
        attribute_filter=_absolute_links_only,
    )
    # nh3 drops an href it cannot parse (`https://xn--zn7c`) but keeps the <a>: a link to
    # nowhere, which preflight would blame on the template. Its text is what remains.
    clean = _NO_HREF.sub(r"\1", clean)
    # Again after rendering: entities and backslash escapes (`&#95;`, `\\{`) are decoded by
    # the parser, so the source alone cannot tell what the HTML will spell.
    # bandit B704: the HTML was sanitized by nh3 just above.
    return Markup(inert.text(clean))  # noqa: S704  # nosec B704


def _absolute_links_only(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        # A relative link means nothing in an inbox, and nh3 lets scheme-less ones through.
        return inert.url(value) if value.lower().startswith(ABSOLUTE) else None
    return inert.text(value)


# ---- what the email drops, so preflight can tell the editor (see `dropped`) ---------------

# Names only, never the markup itself: a finding quotes these, and they cannot hold anything
# a terminal would act on.
_TAG = re.compile(r"<\s*([A-Za-z][A-Za-z0-9-]{0,20})")
_HANDLER = re.compile(r"[\s/\"'](on[A-Za-z]{1,20})\s*=", re.IGNORECASE)
_TEXT_TAG = re.compile(r"<[A-Za-z][A-Za-z0-9-]{0,20}[\s/>]")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]{0,20}):")


@dataclass(frozen=True)
class Dropped:
    """One piece of an article's Markdown that readers do not get as written."""

    line: int  # 0-based, in the Markdown source
    what: str  # what it was and what readers see instead, in words


class _Finder(MarkdownIt):
    """Sees what the email's parser refuses: raw HTML as HTML, any link as a link."""

    def validateLink(self, url: str) -> bool:  # markdown-it's hook name
        return True


@lru_cache(maxsize=1)
def _finder() -> MarkdownIt:
    return _Finder("commonmark", {"html": True, "linkify": False, "typographer": False})


@lru_cache(maxsize=256)
def dropped(markdown: str) -> tuple[Dropped, ...]:
    """Raw HTML, links the email cannot keep, and images in `markdown`, where they are.

    The email shows raw HTML (a `<script>`, an `onerror`) as literal text, a `javascript:`
    link as its Markdown source, a relative or other-scheme link as plain text, and no
    image at all: an editor should hear of each, on its line, rather than a reader.
    """
    found: list[Dropped] = []
    for block in _finder().parse(markdown):
        if block.type == "html_block" and block.map:
            found += _html(block.map[0], block.content)
        elif block.type == "inline" and block.map:
            found += _inline(block.map[0], block.children or [])
    return tuple(found)


def _inline(start: int, children: list[Token]) -> Iterator[Dropped]:
    line = start
    for token in children:
        if token.type in ("softbreak", "hardbreak"):
            line += 1
        elif token.type == "html_inline":
            yield from _html(line, token.content)
        elif token.type == "text" and (tag := _TEXT_TAG.search(token.content)):
            # Not HTML to CommonMark (`<img/onerror=...>`), but to a reader just as much.
            yield from _html(line, token.content[tag.start() :])
        elif token.type == "link_open":
            yield from _link(line, str(token.attrGet("href") or ""))
        elif token.type == "image":
            yield Dropped(
                line,
                "an image in the body is not shown in the email (readers see nothing there); "
                "give the article its picture with the `image:` field instead",
            )
        line += token.content.count("\n") if token.type == "html_inline" else 0


def _html(line: int, markup: str) -> Iterator[Dropped]:
    tag = _TAG.search(markup)
    if tag is None:  # a closing tag or a comment: reported with its opening tag, if any
        return
    handlers = " ".join(dict.fromkeys(h.lower() for h in _HANDLER.findall(markup)))
    shown = f"<{tag.group(1).lower()}{' ' + handlers if handlers else ''}>"
    yield Dropped(
        line,
        f"the raw HTML `{shown}` is not allowed in an email: readers see it as literal text; "
        "remove it or write it in Markdown",
    )


def _link(line: int, href: str) -> Iterator[Dropped]:
    if href.lower().startswith(ABSOLUTE):
        return
    scheme = _SCHEME.match(href)
    target = f"a `{scheme.group(1).lower()}:` address" if scheme else "a relative address"
    yield Dropped(
        line,
        f"a link to {target} is not kept in an email (only full https, http and mailto "
        "addresses are): readers see its Markdown as literal text; use a full https:// address",
    )
