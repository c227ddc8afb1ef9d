"""Name an element of the final HTML so an editor (and the preview) can find it again."""

from __future__ import annotations

import lxml.html
from lxml.html import HtmlElement

SNIPPET_CHARS = 120


def selector(element: HtmlElement) -> str:
    """A CSS selector that finds this element in the browser's DOM of the same HTML: its
    id when it has one, else the path of `tag:nth-child(n)` steps from <body>."""
    steps = []
    node: HtmlElement | None = element
    while node is not None and node.tag not in ("html", "body", "head"):
        if node.get("id"):
            steps.append(f"#{_escape_id(node.get('id') or '')}")
            break
        parent = node.getparent()
        siblings = [c for c in parent if isinstance(c.tag, str)] if parent is not None else [node]
        if node.tag == "tr" and parent is not None and parent.tag == "table":
            # The browser wraps rows written straight into <table> in a <tbody> of their own.
            rows = [c for c in siblings if c.tag == "tr"]
            steps.append(f"tr:nth-child({rows.index(node) + 1})")
            steps.append("tbody")
        else:
            steps.append(f"{node.tag!s}:nth-child({siblings.index(node) + 1})")
        node = parent
    else:
        steps.append(str(node.tag) if node is not None else "html")
    return " > ".join(reversed(steps))


def _escape_id(value: str) -> str:
    # MJML and our templates use plain ids; anything else is escaped the CSS way.
    return "".join(c if c.isalnum() or c in "-_" else f"\\{ord(c):x} " for c in value)


def snippet(element: HtmlElement) -> str:
    """The element's opening tag, cut to SNIPPET_CHARS: enough to recognise it."""
    html = lxml.html.tostring(element, encoding="unicode", with_tail=False)
    opening = html.split(">", 1)[0] + ">"
    return opening if len(opening) <= SNIPPET_CHARS else opening[: SNIPPET_CHARS - 1] + "…"
