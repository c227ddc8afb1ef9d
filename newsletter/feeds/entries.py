"""RSS and Atom bytes to plain entries (feedparser), every field still untrusted text."""

from __future__ import annotations

import calendar
import datetime as dt
import html
import io
import re

# bandit B406: only for its exception class. A feed declaring entities is refused before
# parsing (ENTITY_DECLARATION), and feedparser's expat has external entities off.
import xml.sax  # nosec B406
from dataclasses import dataclass
from typing import Any

import feedparser
import nh3
from lxml import etree
from lxml import html as lxml_html

from newsletter.errors import FeedError

HTML_TYPES = {"text/html", "application/xhtml+xml"}
_SPACE = re.compile(r"\s+")
ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)


@dataclass(frozen=True)
class ImageCandidate:
    url: str
    alt: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Entry:
    position: int  # 1-based, in feed order: how the report names an entry without a title
    guid: str
    link: str
    title: str
    published: dt.date | None
    summary_html: str
    body_html: str
    categories: tuple[str, ...]
    images: tuple[ImageCandidate, ...]  # in order of preference
    author: str


def parse(data: bytes, source: str, base: str = "") -> list[Entry]:
    """The entries of an RSS or Atom document; FeedError when it is neither, or broken.

    `base`, the feed's own URL, resolves relative links and image sources in it (an article
    file needs absolute ones)."""
    if ENTITY_DECLARATION.search(data):
        # No feed needs its own entities; refusing them up front stops an external entity
        # (a local file) and an expansion bomb, which expat would stop only after seconds.
        raise FeedError(
            f"{source}: the feed declares XML entities (<!ENTITY>), which feeds never need; "
            "refused. Check that it is the newsroom's feed."
        )
    # A file object, never bytes or str: feedparser treats a string as a URL or a file
    # name to open, so a feed whose whole body is "/etc/passwd" would read that file.
    parsed = feedparser.parse(
        io.BytesIO(data),
        sanitize_html=True,
        resolve_relative_uris=True,
        response_headers={"content-location": base} if base else None,
    )
    problem = parsed.get("bozo_exception")
    if isinstance(problem, xml.sax.SAXParseException) or not parsed.get("version"):
        # feedparser would fall back to guessing through broken XML; a truncated download
        # would then import its last entry cut short. Refuse it whole instead.
        where = (
            f" at line {problem.getLineNumber()}"
            if isinstance(problem, xml.sax.SAXParseException)
            else ""
        )
        reason = (
            f": {problem.getMessage()}{where}"
            if isinstance(problem, xml.sax.SAXParseException)
            else ""
        )
        raise FeedError(
            f"{source}: not a well-formed RSS or Atom feed{reason}. Check that the address "
            "or file is the feed itself, not a web page."
        )
    return [_entry(position, raw) for position, raw in enumerate(parsed.entries, 1)]


def _entry(position: int, raw: Any) -> Entry:
    body = _body_html(raw)
    summary = _field(raw, "summary")
    return Entry(
        position=position,
        guid=one_line(str(raw.get("id") or "")),
        link=one_line(str(raw.get("link") or "")),
        title=one_line(_plain(raw, "title")),
        published=_date(raw),
        summary_html=summary if summary != body else "",
        body_html=body,
        categories=tuple(
            one_line(str(tag.get("term") or tag.get("label") or ""))
            for tag in raw.get("tags") or ()
            if (tag.get("term") or tag.get("label"))
        ),
        images=_images(raw, body or summary),
        author=one_line(str(raw.get("author") or "")),
    )


def one_line(text: str) -> str:
    return _SPACE.sub(" ", text).strip()


def plain_text(markup: str) -> str:
    """The text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    return one_line(html.unescape(nh3.clean(markup, tags=set())))


def _field(raw: Any, name: str) -> str:
    value = raw.get(name)
    return value if isinstance(value, str) else ""


def _plain(raw: Any, name: str) -> str:
    detail = raw.get(f"{name}_detail") or {}
    value = _field(raw, name)
    return plain_text(value) if detail.get("type") in HTML_TYPES else value


def _body_html(raw: Any) -> str:
    """`content:encoded` or Atom's content when it is HTML; else the description/summary."""
    for content in raw.get("content") or ():
        # feedparser files media:description under `content` too, as text/plain.
        if content.get("type") in HTML_TYPES and content.get("value"):
            return str(content["value"])
    summary = _field(raw, "summary")
    detail = raw.get("summary_detail") or {}
    return summary if detail.get("type") in HTML_TYPES else html.escape(summary)


def _date(raw: Any) -> dt.date | None:
    for name in ("published_parsed", "updated_parsed"):
        value = raw.get(name)
        if value:
            return dt.datetime.fromtimestamp(calendar.timegm(value), dt.UTC).date()
    return None


def _images(raw: Any, body: str) -> tuple[ImageCandidate, ...]:
    """media:content, then an image enclosure, then the body's first <img>."""
    in_body = _body_images(body)
    alt_of = {image.url: image.alt for image in in_body}
    media_alt = next(
        (
            one_line(str(c.get("value") or ""))
            for c in raw.get("content") or ()
            if c.get("type") == "text/plain"
        ),
        "",
    )
    found: list[ImageCandidate] = []
    for media in raw.get("media_content") or ():
        url = str(media.get("url") or "")
        if url and (
            media.get("medium") == "image" or str(media.get("type", "")).startswith("image/")
        ):
            alt = alt_of.get(url) or media_alt
            found.append(
                ImageCandidate(url, alt, _size(media.get("width")), _size(media.get("height")))
            )
    for link in raw.get("links") or ():
        if link.get("rel") == "enclosure" and str(link.get("type", "")).startswith("image/"):
            url = str(link.get("href") or "")
            found.append(ImageCandidate(url, alt_of.get(url, "")))
    return (*found, *in_body[:1])


def _body_images(body: str) -> list[ImageCandidate]:
    if "<img" not in body.lower():
        return []
    try:
        tree = lxml_html.fragment_fromstring(body, create_parent="div")
    except (ValueError, etree.ParserError):
        return []
    return [
        ImageCandidate(
            one_line(img.get("src") or ""),
            one_line(img.get("alt") or ""),
            _size(img.get("width")),
            _size(img.get("height")),
        )
        for img in tree.iter("img")
        if img.get("src")
    ]


def _size(value: object) -> int | None:
    text = str(value or "").strip()
    return int(text) if text.isdigit() and 1 <= int(text) <= 10_000 else None
