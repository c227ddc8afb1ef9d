"""`articles import-feed`: a newsroom's RSS or Atom feed into content/articles/.

The stages, one module each: `fetch` (a URL, bounded and refused on private addresses),
`entries` (feedparser: bytes to plain entries), `body` (entry HTML to sanitized Markdown),
`articles` (entries to article files: match, slug, compose, check, write). This module
runs them and returns what happened to each entry; it prints nothing.
"""

from __future__ import annotations

import datetime as dt
import time
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
        max_entries=settings.feed_max_entries,
    )


def import_feed(
    source: str, directory: Path, limits: Limits, tags: TagRules, *, draft: bool = False
) -> ImportResult:
    """Import the newest `limits.max_entries` entries of the feed at `source` (an http(s)
    URL or a file) into `directory`, within `limits.timeout` seconds. A feed that cannot be
    read raises FeedError before any file is written; an entry that cannot become an
    article, is beyond the cap, or is not reached by the deadline is skipped with its reason.
    """
    deadline = time.monotonic() + limits.timeout
    label = shown(source)  # a password in the URL goes into no message and no file
    base = label if _is_url(source) else ""
    feed = entries.parse(read(source, limits), label, base)
    atomic.make_dirs(directory, private=False)
    known = Known.scan(directory)
    seen: dict[str, int] = {}
    chosen = _newest(feed, limits.max_entries)
    outcomes: list[Outcome] = []
    for entry in feed:
        if entry.position not in chosen:
            outcomes.append(_skip(entry, _beyond_cap(limits.max_entries)))
        elif time.monotonic() > deadline:
            # Checked between entries, each written whole (atomically): what was written
            # stands, and the next run carries on, finding those unchanged.
            outcomes.append(_skip(entry, _past_deadline(limits.timeout)))
        else:
            outcomes.append(_one(entry, label, directory, known, tags, draft, seen))
    return ImportResult(label, tuple(outcomes))


def _newest(feed: list[entries.Entry], cap: int) -> set[int]:
    """The positions of the `cap` newest entries (by date; a tie, or no date, goes to the
    earlier in the feed, since feeds list the newest first)."""
    ranked = sorted(feed, key=lambda e: (-(e.published or dt.date.min).toordinal(), e.position))
    return {entry.position for entry in ranked[:cap]}


def _skip(entry: entries.Entry, reason: str) -> Outcome:
    return Outcome(entry.position, entry.title, "skipped", reason)


def _beyond_cap(cap: int) -> str:
    return (
        f"not imported: only the newest {cap} entries are (feed_max_entries); raise it to "
        "import more"
    )


def _past_deadline(timeout: float) -> str:
    return (
        f"not reached within the {timeout:g} s deadline (feed_timeout); run the import again "
        "to continue, or raise feed_timeout"
    )


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
