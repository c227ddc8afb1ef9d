"""`articles import-feed`: a newsroom's RSS or Atom feed into content/articles/.

The stages, one module each: `fetch` (a URL, bounded and refused on private addresses),
`entries` (feedparser: bytes to plain entries), `body` (entry HTML to sanitized Markdown),
`articles` (entries to article files: match, slug, compose, check, write). This module
runs them and returns what happened to each entry; it prints nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from newsletter import atomic, inputfile
from newsletter.errors import FeedError
from newsletter.feeds import entries
from newsletter.feeds.articles import (
    Action,
    Known,
    Outcome,
    TagRules,
    canonical_url,
    compose,
    write_checked,
)
from newsletter.feeds.fetch import Limits, fetch, networks, shown

if TYPE_CHECKING:
    from newsletter.config import Settings

__all__ = ["ImportResult", "Limits", "Outcome", "TagRules", "import_feed", "limits"]


@dataclass(frozen=True)
class ImportResult:
    source: str
    outcomes: tuple[Outcome, ...]

    def count(self, action: Action) -> int:
        return sum(1 for outcome in self.outcomes if outcome.action == action)


def limits(settings: Settings) -> Limits:
    """The fetch limits the settings give (`feed_*`)."""
    allowed = networks(settings.feed_allow_networks, "setting feed_allow_networks")
    return Limits(
        settings.feed_max_bytes,
        settings.feed_timeout,
        settings.feed_allow_private,
        allowed,
        settings.feed_ca_file,
    )


def import_feed(
    source: str, directory: Path, limits: Limits, tags: TagRules, *, draft: bool = False
) -> ImportResult:
    """Import every entry of the feed at `source` (an http(s) URL or a file) into
    `directory`. A feed that cannot be read raises FeedError before any file is written;
    an entry that cannot become an article is skipped with its reason."""
    label = shown(source)  # a password in the URL goes into no message and no file
    base = label if _is_url(source) else ""
    feed = entries.parse(read(source, limits), label, base)
    atomic.make_dirs(directory, private=False)
    known = Known.scan(directory)
    seen: dict[str, int] = {}
    outcomes = [_one(entry, label, directory, known, tags, draft, seen) for entry in feed]
    return ImportResult(label, tuple(outcomes))


def _is_url(source: str) -> bool:
    return source.lower().startswith(("http://", "https://"))


def read(source: str, limits: Limits) -> bytes:
    if _is_url(source):
        return fetch(source, limits)
    if "://" in source:
        raise FeedError(
            f"{shown(source)}: only http and https feeds are fetched; give an http(s) URL "
            "or a file."
        )
    return inputfile.read_capped(Path(source), limits.max_bytes)


def _one(
    entry: entries.Entry,
    source: str,
    directory: Path,
    known: Known,
    tags: TagRules,
    draft: bool,
    seen: dict[str, int],
) -> Outcome:
    def outcome(action: Action, reason: str, path: Path | None = None) -> Outcome:
        return Outcome(entry.position, entry.title, action, reason, path)

    made, note = compose(entry, tags)
    if made is None:
        return outcome("skipped", note)
    keys = [key for key in (entry.guid, canonical_url(entry.link)) if key]
    earlier = next((seen[key] for key in keys if key in seen), None)
    if earlier is not None:
        return outcome("skipped", f"the same article as entry {earlier} of this feed")
    seen.update(dict.fromkeys(keys, entry.position))
    path = known.find(entry)
    if path is not None and known.digests.get(path) is None:
        return outcome(
            "skipped", f"{path.name} has this URL and was not imported; left as is", path
        )
    if path is not None and known.digests[path] == made.digest:
        return outcome("skipped", "unchanged since the last import", path)
    action: Action
    if path is None:
        slug = known.new_slug(entry.title)
        target, action, keep_draft = directory / f"{slug}.md", "imported", draft
    else:
        slug, target, action, keep_draft = known.slug_of[path], path, "updated", known.drafts[path]
    refused = write_checked(target, made.text(slug, source, entry.guid, keep_draft))
    if refused:
        return outcome("skipped", f"would not load as an article: {refused}")
    return outcome(action, note, target)
