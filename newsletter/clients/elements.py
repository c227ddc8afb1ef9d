"""Name an element of the final HTML so an editor (and the preview) can find it again."""

from __future__ import annotations

from html import escape

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
        if node.tag == "tr" and parent is not None and parent.tag == "table":
            # The browser wraps rows written straight into <table> in a <tbody> of their own.
            steps.append(f"tr:nth-child({_position(node, 'tr')})")
            steps.append("tbody")
        else:
            steps.append(f"{node.tag!s}:nth-child({_position(node)})")
        node = parent
    else:
        steps.append(str(node.tag) if node is not None else "html")
    return " > ".join(reversed(steps))


def _attribute(value: str) -> str:
    """An attribute value as a snippet shows it: on one line, quoted the HTML way."""
    return escape(" ".join(value.split()), quote=False).replace('"', "&quot;")


def _position(element: HtmlElement, tag: str | None = None) -> int:
    """1 + the element siblings before it (of `tag` only, when given): comments and
    processing instructions are no children for :nth-child."""
    before = element.itersiblings(preceding=True)
    return 1 + sum(1 for s in before if isinstance(s.tag, str) and tag in (None, s.tag))


def _escape_id(value: str) -> str:
    # MJML and our templates use plain ids; anything else is escaped the CSS way.
    return "".join(c if c.isalnum() or c in "-_" else f"\\{ord(c):x} " for c in value)


def snippet(element: HtmlElement) -> str:
    """The element's opening tag, cut to SNIPPET_CHARS: enough to recognise it. Built from
    the tag and attributes, not by serialising the element (the <body> is the whole email)."""
    attributes = "".join(f' {k}="{_attribute(v)}"' for k, v in element.attrib.items())
    opening = f"<{element.tag!s}{attributes}>"
    return opening if len(opening) <= SNIPPET_CHARS else opening[: SNIPPET_CHARS - 1] + "…"
