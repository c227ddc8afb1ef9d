"""A feed entry's HTML to the Markdown an article file holds.

Stored as Markdown, an imported article is an ordinary article: an editor can revise it,
and it reaches the email through the one sanitizer every article goes through
(`newsletter.markdown.to_html`: markdown-it with raw HTML off, then nh3). Before the
conversion the HTML is cut down by nh3 to that sanitizer's own tags, attributes and link
schemes, so scripts, styles, handlers and unknown markup are gone (their text too, for
<script> and <style>), and every character of the feed's text is escaped for Markdown:
text that spells `[x](javascript:...)`, `<b>` or `{{ x }}` in the feed stays those
characters on the page, never a link, a tag or a placeholder.
"""

from __future__ import annotations

import re

import nh3
from markdownify import markdownify

from newsletter import markdown

_BLANK_LINES = re.compile(r"\n{3,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")


def to_markdown(fragment: str) -> str:
    clean = nh3.clean(
        fragment,
        tags=markdown.ALLOWED_TAGS,
        attributes=markdown.ALLOWED_ATTRIBUTES,
        url_schemes=markdown.URL_SCHEMES,
        strip_comments=True,
        link_rel=None,
    )
    text = markdownify(
        clean,
        heading_style="ATX",
        bullets="-",
        escape_asterisks=True,
        escape_underscores=True,
        escape_misc=True,
        autolinks=False,
    )
    text = _TRAILING_SPACE.sub("\n", text.replace("\r", ""))
    return _BLANK_LINES.sub("\n\n", text).strip()
