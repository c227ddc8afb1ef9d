"""Make content inert: text shaped like a placeholder or template syntax shows as typed.

Content (articles, the issue's own text, the rate source) may quote `{{ }}` or a tag such
as `-email_html-`; a reader must see it as typed, and nothing may ever fill it or take it
for template residue. Text gets an invisible WORD JOINER (U+2060) inside each such shape,
so the characters a reader sees are unchanged but the byte sequence is no longer a tag or a
template delimiter. A URL gets the equivalent percent-encoding (`-` as `%2D`, braces as
`%7B`/`%7D`), which a server decodes to the same characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from newsletter import yamlfile
from newsletter.errors import NewsletterError, Problem
from newsletter.models import Article, Issue
from newsletter.placeholders import FIELDS

JOINER = "\u2060"  # WORD JOINER: invisible, no line break, not whitespace

_FIELD = "|".join(FIELDS)
# A tag of our syntax, old or new style (the new one only adds `<key>-`), or any HTML tag.
_TAG_BODY = rf"(?:(?:{_FIELD})(?:_html)?|[a-z][a-z0-9_]*_html)-"
# Not after a letter or '-': "how-to-email-your-mp" is a slug, and no build's tag is spelt so.
SHAPES = re.compile(rf"\{{[{{%#]|[}}%#]\}}|(?<![\w-])-{_TAG_BODY}", re.IGNORECASE)
# Where a joiner goes: between the two characters of a delimiter, after a tag's first '-'.
_JOINS = re.compile(
    rf"(?<=\{{)(?=[{{%#])|(?<=[}}%#])(?=\}})|(?<=(?<![\w-])-)(?={_TAG_BODY})", re.IGNORECASE
)
_URL_DASH = re.compile(rf"(?<![\w-])-(?={_TAG_BODY})", re.IGNORECASE)
_URL_RUN = re.compile(r"\b(?:https?|mailto):[^\s<>()\[\]]*", re.IGNORECASE)


def shapes(text: str) -> list[str]:
    """The placeholder- or template-shaped pieces of `text`, each once, as typed."""
    return list(dict.fromkeys(match.group(0) for match in SHAPES.finditer(text)))


def text(value: str) -> str:
    """`value` as a reader sees it, with no tag or template delimiter left in its bytes."""
    return _JOINS.sub(JOINER, value) if SHAPES.search(value) else value


def url(value: str) -> str:
    """`value` with tag shapes and braces percent-encoded: the same URL to a server."""
    if not SHAPES.search(value) and "{" not in value and "}" not in value:
        return value
    value = _URL_DASH.sub("%2D", value)
    return value.replace("{", "%7B").replace("}", "%7D")


def markdown(source: str) -> str:
    """Markdown source made inert: URLs percent-encoded (so the text part's links match the
    HTML part's), everything else joined."""
    if not SHAPES.search(source):
        return source
    out, end = [], 0
    for match in _URL_RUN.finditer(source):
        out += [text(source[end : match.start()]), url(match.group(0))]
        end = match.end()
    out.append(text(source[end:]))
    return "".join(out)


# ---- findings, as warnings on the file and line an editor would open --------------------


Field = tuple[str | int, ...]


def findings(issue: Issue) -> tuple[Problem, ...]:
    """A warning for each content field that had to be made inert."""
    return tuple(
        _warning(source, field, value, found)
        for source, field, value in _content(issue)
        if (found := shapes(value))
    )


@dataclass(frozen=True)
class _Source:
    """The file a value came from, with its lines as they were parsed."""

    path: Path | None
    lines: tuple[str, ...]


def _content(issue: Issue) -> Iterator[tuple[_Source, Field, str]]:
    spec = issue.spec
    source = _Source(spec.path, spec.file_lines)
    for key in ("title", "subject", "preheader", "intro"):
        yield source, (key,), getattr(spec, key)
    for i, section in enumerate(spec.sections):
        yield source, ("sections", i, "heading"), section.heading
    for name, value in spec.utm:
        yield source, ("utm", name.removeprefix("utm_")), value
    for article in issue.articles:
        yield from _article(article)
    if issue.rates is not None:
        yield _Source(issue.rates.path, issue.rates.file_lines), ("source",), issue.rates.source


def _article(article: Article) -> Iterator[tuple[_Source, Field, str]]:
    fields: dict[Field, str] = {
        ("title",): article.title,
        ("url",): article.url,
        ("summary",): article.summary,
        ("author",): article.author or "",
        ("credit",): article.credit or "",
        ("body",): article.body,
    }
    if article.image is not None:
        fields |= {("image", "url"): article.image.url, ("image", "alt"): article.image.alt}
    source = _Source(article.path, article.file_lines)
    for field, value in fields.items():
        yield source, field, value


def _warning(source: _Source, field: Field, value: str, found: list[str]) -> Problem:
    quoted = ", ".join(f"'{shape}'" for shape in found[:5])
    return Problem(
        f"{quoted} looks like a per-recipient placeholder or template syntax; it is shown to "
        "readers exactly as typed and is never filled in. Nothing to do if that is what you "
        "meant.",
        file=source.path,
        field=_name(field),
        line=_line_of(source, field, found[0]),
        severity="warning",
    )


def _name(field: Field) -> str:
    """`sections[0].heading`, as the YAML checker names fields."""
    name = ".".join(part if isinstance(part, str) else f"[{part}]" for part in field)
    return name.replace(".[", "[")


def _line_of(origin: _Source, field: Field, needle: str) -> int | None:
    """The line of `needle` in the file, at or after the line where `field` starts.

    From the lines recorded when the file was parsed: the render reads no files.
    """
    if origin.path is None or not origin.lines:
        return None
    source = list(origin.lines)
    start = _field_line(source, field) or 1
    for number in range(start, len(source) + 1):
        if needle in source[number - 1]:
            return number
    return start


def _field_line(source: list[str], field: Field) -> int | None:
    """Where `field` starts: a YAML key (an article's keys are in its front matter), or,
    for an article's body, the line after the front matter."""
    front = bool(source) and source[0].strip() == "---"
    ends = [i for i, line in enumerate(source) if line.rstrip() == "---"]
    if field == ("body",):
        return ends[1] + 2 if front and len(ends) > 1 else None
    if front:
        end = ends[1] if len(ends) > 1 else len(source)
        text, offset = "\n".join(source[1:end]) + "\n", 1
    else:
        text, offset = "\n".join(source) + "\n", 0
    try:
        return yamlfile.parse(text, line_offset=offset).line(*field)
    except NewsletterError:
        return None
