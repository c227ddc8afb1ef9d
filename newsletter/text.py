"""Plain-text helpers for the text part: Markdown stays Markdown, wrapped for reading."""

from __future__ import annotations

import re
import textwrap
from functools import lru_cache

from newsletter import inert

WIDTH = 72
LIST_ITEM = re.compile(r"^(\s*(?:[-*+]|\d+[.)])\s+)(.*)$")
# What a plain-text client turns into a link: from the scheme to the next space.
URL = re.compile(r"\b(?:https?|mailto):\S+", re.IGNORECASE)


def has_url(text: str) -> bool:
    return URL.search(text) is not None


@lru_cache(maxsize=256)  # pure; a preview re-renders the same bodies on every save
def wrap_markdown(markdown: str, width: int = WIDTH) -> str:
    """Wrap paragraphs and list items at `width`; headings and URLs stay whole.

    Lines break only at spaces, never at a hyphen or inside a word: a URL is never cut (a
    plain-text client would link half of it), and one longer than `width` gets a line of
    its own rather than being moved to the end as a numbered reference, so it is read
    where it is cited.

    Placeholder- and template-shaped text is made inert (see `inert`)."""
    source = inert.markdown(markdown).strip()
    if not source:  # an empty intro or body: nothing to wrap
        return ""
    blocks = re.split(r"\n\s*\n", source)
    return "\n\n".join(_wrap_block(block, width) for block in blocks)


def _wrap_block(block: str, width: int) -> str:
    lines = block.splitlines()
    if lines[0].lstrip().startswith(("#", ">", "```", "    ")):
        return block
    if LIST_ITEM.match(lines[0]):
        return "\n".join(_wrap_item(line, width) for line in lines)
    return textwrap.fill(
        " ".join(line.strip() for line in lines),
        width,
        break_long_words=False,
        break_on_hyphens=False,
    )


def _wrap_item(line: str, width: int) -> str:
    match = LIST_ITEM.match(line)
    if not match:
        return line
    marker, rest = match.groups()
    return textwrap.fill(
        rest,
        width,
        initial_indent=marker,
        subsequent_indent=" " * len(marker),
        break_long_words=False,
        break_on_hyphens=False,
    )
