"""Untrusted Markdown (articles, intros) to sanitized HTML: markdown-it-py, then nh3."""

from __future__ import annotations

from functools import lru_cache

import nh3
from linkify_it import LinkifyIt
from markdown_it import MarkdownIt
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


class _Parser(MarkdownIt):
    def normalizeLinkText(self, link: str) -> str:  # markdown-it's hook name
        """A link's text as the editor typed it, as the text part shows it: the default
        percent-decodes it, so `%01` became a control character and `%20` a space."""
        return link


@lru_cache(maxsize=1)
def _parser() -> MarkdownIt:
    # html=False: raw HTML, MJML tags and template syntax in an article stay literal text.
    # linkify: a bare https://... in the text is a link in the HTML part, as a plain-text
    # client makes it one in the text part. Only URLs with a scheme: a fuzzy "example.org" or
    # "ed@example.org" would be a link in one part and plain words in the other.
    parser = _Parser("commonmark", {"html": False, "linkify": True, "typographer": False})
    parser.enable("linkify")
    # Nor ftp: or a scheme-less //host, which nh3 would leave as a link to nowhere.
    parser.linkify = LinkifyIt(
        schemas={"ftp:": None, "//": None},
        options={"fuzzy_link": False, "fuzzy_email": False, "fuzzy_ip": False},
    )
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
    # Again after rendering: entities and backslash escapes (`&#95;`, `\\{`) are decoded by
    # the parser, so the source alone cannot tell what the HTML will spell.
    # bandit B704: the HTML was sanitized by nh3 just above.
    return Markup(inert.text(clean))  # noqa: S704  # nosec B704


def _absolute_links_only(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "href":
        # A relative link means nothing in an inbox, and nh3 lets scheme-less ones through.
        return inert.url(value) if value.lower().startswith(ABSOLUTE) else None
    return inert.text(value)
