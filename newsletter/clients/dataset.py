"""The vendored Can I Email dataset: features, and how each client family supports them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from newsletter.errors import ConfigError

DATA_DIR = Path(str(resources.files("newsletter.clients") / "data"))

Support = Literal["supported", "partial", "not supported", "unknown"]


@dataclass(frozen=True)
class Family:
    """A client family as an editor names it: one dataset family on some of its platforms."""

    key: str
    name: str
    family: str
    platforms: tuple[str, ...]  # empty: every platform the dataset has for `family`


# Keys are what the `client_families` setting lists. Outlook on Windows is the classic Word
# engine ("windows") and Windows Mail, which renders like it.
FAMILIES: Mapping[str, Family] = {
    f.key: f
    for f in (
        Family("gmail-web", "Gmail (web)", "gmail", ("desktop-webmail", "mobile-webmail")),
        Family("gmail-app", "Gmail (app)", "gmail", ("ios", "android")),
        Family("outlook-windows", "Outlook (Windows)", "outlook", ("windows", "windows-mail")),
        Family("outlook-macos", "Outlook (macOS)", "outlook", ("macos",)),
        Family("outlook-web", "Outlook (web)", "outlook", ("outlook-com",)),
        Family("apple-mail-macos", "Apple Mail (macOS)", "apple-mail", ("macos",)),
        Family("apple-mail-ios", "Apple Mail (iOS)", "apple-mail", ("ios",)),
        Family("yahoo", "Yahoo Mail", "yahoo", ()),
        Family("mail-ru", "Mail.ru", "mail-ru", ()),
        Family("samsung-email", "Samsung Email", "samsung-email", ()),
    )
}

_ENTRY = re.compile(r"^\s*([ynau])\b((?:\s*#\d+)*)\s*$")
# Worst first: a family is as good as its worst platform's latest test.
_RANK: Mapping[str, int] = {"n": 0, "a": 1, "u": 2, "y": 3}
_SUPPORT: Mapping[str, Support] = {
    "n": "not supported",
    "a": "partial",
    "u": "unknown",
    "y": "supported",
}


@dataclass(frozen=True)
class Verdict:
    """How one client family supports one feature, with the dataset's notes for it."""

    support: Support
    notes: tuple[str, ...]
    platforms: tuple[str, ...]  # the platforms whose latest test gave this verdict


@dataclass(frozen=True)
class Feature:
    slug: str
    title: str
    category: str
    url: str
    stats: Mapping[str, Mapping[str, Mapping[str, str]]]
    notes_by_num: Mapping[str, str]
    note: str | None

    def verdict(self, family: Family) -> Verdict | None:
        """The family's support (None when the dataset never tested it there)."""
        platforms = self.stats.get(family.family, {})
        chosen = family.platforms or tuple(platforms)
        latest = {p: _parse(list(platforms[p].values())[-1]) for p in chosen if platforms.get(p)}
        if not latest:
            return None
        worst = min(code for code, _ in latest.values())
        code = next(c for c, r in _RANK.items() if r == worst)
        hit = tuple(p for p, (rank, _) in latest.items() if rank == worst)
        numbers = dict.fromkeys(n for p in hit for n in latest[p][1])
        notes = tuple(self.notes_by_num[n] for n in numbers if n in self.notes_by_num)
        return Verdict(_SUPPORT[code], notes, hit)


def _parse(entry: str) -> tuple[int, tuple[str, ...]]:
    """'a #1 #3' -> (rank of partial, ('1', '3')); anything unreadable counts as unknown."""
    match = _ENTRY.match(entry)
    if not match:
        return _RANK["u"], ()
    return _RANK[match.group(1)], tuple(re.findall(r"\d+", match.group(2)))


@dataclass(frozen=True)
class Dataset:
    features: Mapping[str, Feature]
    updated: str
    source: Mapping[str, str]

    slugs: frozenset[str]  # the features' keys, hashable (the parse caches key on it)


@cache
def load() -> Dataset:
    """The vendored dataset (parsed once per process)."""
    raw = json.loads((DATA_DIR / "caniemail.json").read_text(encoding="utf-8"))
    source = json.loads((DATA_DIR / "SOURCE.json").read_text(encoding="utf-8"))
    features = {item["slug"]: _feature(item) for item in raw["data"]}
    return Dataset(features, raw["last_update_date"], source, frozenset(features))


def _feature(item: Mapping[str, Any]) -> Feature:
    return Feature(
        slug=item["slug"],
        title=item["title"],
        category=item["category"],
        url=item["url"],
        stats=item["stats"],
        notes_by_num=item.get("notes_by_num") or {},
        note=item.get("notes"),
    )


def families(keys: Iterable[str], origin: str = "setting client_families") -> tuple[Family, ...]:
    """The families a `client_families` setting names, in its order."""
    chosen = []
    for key in keys:
        if key not in FAMILIES:
            raise ConfigError(
                f"{origin}: unknown client family {key!r}; choose from {', '.join(FAMILIES)}."
            )
        chosen.append(FAMILIES[key])
    return tuple(chosen)
