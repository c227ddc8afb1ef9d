"""Feed entries to article files: which are new, changed or already here, and their text.

An imported article records where it came from under `feed:` in its front matter: the
entry's guid, the feed it was read from, and a digest of what the entry gave. The guid (or,
for an entry without one, the canonical URL) finds the file again on the next import; the
digest tells whether the entry changed since. A file is rewritten only when the entry
changed, so an unchanged feed leaves every file byte for byte as it was, and an editor's
edit to an imported article stands until the newsroom changes that article.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import yaml
from slugify import slugify

from newsletter import atomic, content, yamlfile
from newsletter.errors import ArticleFileError, ContentError
from newsletter.feeds import body
from newsletter.feeds.entries import Entry, ImageCandidate, plain_text

Action = Literal["imported", "updated", "skipped"]
SUMMARY_CHARS = 300
SLUG_CHARS = 80


@dataclass(frozen=True)
class Outcome:
    """What happened to one feed entry, and why."""

    position: int
    title: str
    action: Action
    reason: str
    path: Path | None = None


@dataclass(frozen=True)
class TagRules:
    """Categories to tags: `mapping` (casefolded category to its tags; none drops it) first,
    else `prefix/<slugified category>` (the bare slug when the prefix is empty)."""

    prefix: str = "topic"
    mapping: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def tags(self, categories: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for category in categories:
            key = category.casefold()
            for tag in self.mapping[key] if key in self.mapping else self._default(category):
                if tag not in out:
                    out.append(tag)
        return tuple(out)

    def _default(self, category: str) -> tuple[str, ...]:
        slug = slugify(category)
        if not slug:
            return ()
        prefix = self.prefix.strip().strip("/")
        return (f"{prefix}/{slug}" if prefix else slug,)


@dataclass
class Known:
    """The articles already in the folder, indexed the ways an entry can match them."""

    by_guid: dict[str, Path] = field(default_factory=dict)
    by_url: dict[str, Path] = field(default_factory=dict)
    digests: dict[Path, str | None] = field(default_factory=dict)  # None: written by hand
    drafts: dict[Path, bool] = field(default_factory=dict)
    slug_of: dict[Path, str] = field(default_factory=dict)
    slugs: set[str] = field(default_factory=set)

    @classmethod
    def scan(cls, directory: Path) -> Known:
        known = cls()
        for path in sorted(directory.glob("*.md")):
            known.slugs.add(path.stem)
            known._add(path, _front_matter(path))
        return known

    def _add(self, path: Path, front: dict[str, Any]) -> None:
        slug = front.get("slug")
        self.slug_of[path] = slug if isinstance(slug, str) else path.stem
        self.slugs.add(self.slug_of[path])
        feed = front.get("feed") if isinstance(front.get("feed"), dict) else None
        digest = feed.get("digest") if feed else None
        self.digests[path] = str(digest) if digest else None
        self.drafts[path] = front.get("draft") is True
        if feed and isinstance(feed.get("guid"), str):
            self.by_guid.setdefault(feed["guid"], path)
        if isinstance(front.get("url"), str):
            self.by_url.setdefault(canonical_url(front["url"]), path)

    def find(self, entry: Entry) -> Path | None:
        if entry.guid and entry.guid in self.by_guid:
            return self.by_guid[entry.guid]
        return self.by_url.get(canonical_url(entry.link))

    def new_slug(self, title: str) -> str:
        base = slugify(title, max_length=SLUG_CHARS, word_boundary=True) or "article"
        if not content.SLUG.fullmatch(base):  # slugify's alphabet is the loader's; be sure
            base = "article"
        slug, number = base, 2
        while slug in self.slugs:
            slug, number = f"{base}-{number}", number + 1
        self.slugs.add(slug)
        return slug


def _front_matter(path: Path) -> dict[str, Any]:
    """The front matter of an existing file, or {} when it cannot be read (the loader will
    report that file; here it only keeps its name taken)."""
    try:
        match = content.FRONT_MATTER.match(yamlfile.read_text(path))
        data = yamlfile.parse(match.group(1), path).data if match else None
    except ContentError:
        return {}
    return data if isinstance(data, dict) else {}


def canonical_url(url: str) -> str:
    """The same page however the link is spelled: case of scheme and host, default port,
    fragment and utm_* tracking parameters do not count."""
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return url.strip()
    scheme = parts.scheme.lower()
    if port and (scheme, port) not in {("http", 80), ("https", 443)}:
        host = f"{host}:{port}"
    query = [
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_")
    ]
    return urlunsplit((scheme, host, parts.path or "/", urlencode(query), ""))


@dataclass(frozen=True)
class Draft:
    """An article file's content, before it is checked and written."""

    front: dict[str, Any]
    body: str
    digest: str

    def text(self, slug: str, source: str, guid: str, draft: bool) -> str:
        front = {"slug": slug, **self.front}
        if draft:
            front["draft"] = True
        front["feed"] = {
            **({"guid": guid} if guid else {}),
            "source": source,
            "digest": self.digest,
        }
        dumped = yaml.safe_dump(
            front, allow_unicode=True, sort_keys=False, width=1_000_000, default_flow_style=False
        )
        return f"---\n{dumped}---\n\n{self.body}\n"


def compose(entry: Entry, tags: TagRules) -> tuple[Draft | None, str]:
    """The article an entry makes, or None and why it cannot make one; and a note."""
    missing = _missing(entry)
    if missing:
        return None, missing
    text = body.to_markdown(entry.body_html or entry.summary_html)
    summary = _summary(entry.summary_html or entry.body_html)
    if not text or not summary:
        return None, "the entry has no text (neither a description nor content)"
    image, note = _image(entry.images)
    front: dict[str, Any] = {
        "title": _clean(entry.title),
        "date": entry.published,
        "url": entry.link,
        "summary": _clean(summary),
    }
    if image is not None:
        front["image"] = image
    tag_list = tags.tags(entry.categories)
    if tag_list:
        front["tags"] = [_clean(tag) for tag in tag_list]
    if entry.author:
        front["author"] = _clean(entry.author)
    body_text = _clean(text)
    digest = hashlib.sha256(
        json.dumps([front, body_text], default=str, ensure_ascii=False).encode()
    ).hexdigest()
    return Draft(front, body_text, digest), note


def _missing(entry: Entry) -> str:
    if not entry.title:
        return "the entry has no title"
    if not entry.link:
        return "the entry has no link"
    if not content.SAFE_URL.fullmatch(entry.link):
        return f"the entry's link {entry.link!r} is not an absolute http(s) URL"
    if entry.published is None:
        return "the entry has no published or updated date"
    return ""


def _clean(text: str) -> str:
    """Without control characters: the loader refuses them, and no reader could see them."""
    return yamlfile.INVISIBLE_CONTROL.sub("", text)


def _summary(markup: str) -> str:
    text = plain_text(markup)
    if len(text) <= SUMMARY_CHARS:
        return text
    cut = text[:SUMMARY_CHARS].rsplit(" ", 1)[0]
    return f"{cut}…"


def _image(candidates: tuple[ImageCandidate, ...]) -> tuple[dict[str, Any] | None, str]:
    """The first https image (mail clients block http ones) that has alt text, which the
    loader requires; an image without one is left out and the editor told."""
    usable = [c for c in candidates if c.url.lower().startswith("https://")]
    usable = [c for c in usable if content.SAFE_URL.fullmatch(c.url)]
    for candidate in usable:
        alt = _clean(candidate.alt)
        if alt:
            image: dict[str, Any] = {"url": candidate.url, "alt": alt}
            if candidate.width and candidate.height:
                image |= {"width": candidate.width, "height": candidate.height}
            return image, ""
    if usable:
        return None, f"image {usable[0].url} left out: the feed gives no alt text for it"
    if candidates:
        return None, "image left out: the feed's images are not https"
    return None, ""


def write_checked(path: Path, text: str) -> str:
    """Write `text` to `path` in one step if the article loader accepts it; else why not."""
    with tempfile.TemporaryDirectory(prefix="newsletter-feed-") as scratch:
        trial = Path(scratch) / path.name
        trial.write_text(text, encoding="utf-8")
        try:
            content.parse_article(trial)
        except ArticleFileError as exc:
            return "; ".join(f"{p.field or 'file'}: {p.message}" for p in exc.problems)
    atomic.write_bytes(path, text.encode("utf-8"), private=False)
    return ""
