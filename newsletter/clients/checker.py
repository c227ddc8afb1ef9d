"""Client support: which features of the final HTML each chosen client family ignores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lxml.html import HtmlElement

from newsletter.clients.dataset import Dataset, Family, Feature, Verdict, load
from newsletter.clients.elements import selector, snippet
from newsletter.clients.features import Use, uses

# Features whose loss changes the layout, and what the reader sees instead. An unsupported
# one in a chosen client is a warning; the rest of the report is for reading.
FALLBACKS: Mapping[str, str] = {
    "css-display-flex": "the flex items stack one under another as plain blocks",
    "css-display-grid": "the grid items stack one under another as plain blocks",
    "css-flex-direction": "flex layout is ignored: items keep the normal flow",
    "css-flex-wrap": "flex layout is ignored: items keep the normal flow",
    "css-justify-content": "flex layout is ignored: items keep the normal flow",
    "css-align-items": "flex layout is ignored: items keep the normal flow",
    "css-gap": "the space between flex or grid items disappears",
    "css-grid-template": "the grid items stack one under another",
    "css-float": "floated elements stack instead of sitting side by side",
    "css-position": "positioned elements stay where the normal flow puts them",
    "css-left-right-top-bottom": "offsets are ignored: elements stay in the normal flow",
    "css-inset": "offsets are ignored: elements stay in the normal flow",
    "css-at-media": "the desktop layout shows at every width: columns do not stack on phones",
    "css-max-width": "blocks grow to the full width of the reading pane",
    "css-min-width": "blocks may shrink below the intended width",
    "css-width": "widths come from width attributes and the table's own sizing",
    "css-height": "heights come from the content",
    "css-table-layout": "table columns size to their content instead of fixed widths",
    "css-box-sizing": "padding and borders add to widths, so boxes grow wider",
    "css-column-count": "the text runs in one column",
    "css-margin": "the space from margins disappears; padding on table cells survives",
    "css-padding": "the padding disappears and content touches its border",
    "css-display": "elements keep their default display (a div is a block, a td a cell)",
    "css-overflow": "overflowing content is shown instead of clipped or scrolled",
    "css-aspect-ratio": "the element takes the height of its content",
    "css-object-fit": "images stretch to their width and height",
}


@dataclass(frozen=True)
class Gap:
    """One feature that one client family does not fully support, as the email uses it."""

    client: str  # the family key, e.g. outlook-windows
    slug: str
    title: str
    support: str  # "not supported" | "partial"
    notes: tuple[str, ...]
    count: int
    written: tuple[str, ...]  # how the email spells it: "display:flex", "border-radius"...
    selector: str | None  # the first element that uses it (None: only in a <style> rule)
    snippet: str | None
    fallback: str | None  # set when the loss changes the layout
    url: str
    platforms: tuple[str, ...] = ()  # the family's platforms with this verdict (dataset names)

    @property
    def is_warning(self) -> bool:
        return self.support == "not supported" and self.fallback is not None

    def message(self, family_name: str) -> str:
        where = f", first {self.snippet}" if self.snippet else " in a <style> rule"
        on = f" on {', '.join(self.platforms)}" if self.platforms else ""
        text = f"{family_name}: {self.title} is {self.support}{on} (used {self.count}×{where})"
        if self.fallback:
            text += f"; there {self.fallback}"
        return text + "."

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.slug,
            "title": self.title,
            "support": self.support,
            "notes": list(self.notes),
            "count": self.count,
            "written": list(self.written),
            "selector": self.selector,
            "element": self.snippet,
            "layout": self.fallback is not None,
            "fallback": self.fallback,
            "warning": self.is_warning,
            "url": self.url,
            "platforms": list(self.platforms),
        }


@dataclass(frozen=True)
class ClientReport:
    """Per chosen client family, the features it ignores or only partly supports."""

    families: tuple[Family, ...]
    gaps: tuple[Gap, ...]
    features_used: int
    dataset: str  # package and date of the vendored data

    def for_client(self, key: str) -> tuple[Gap, ...]:
        return tuple(g for g in self.gaps if g.client == key)

    @property
    def warnings(self) -> tuple[tuple[Family, Gap], ...]:
        names = {f.key: f for f in self.families}
        return tuple((names[g.client], g) for g in self.gaps if g.is_warning)

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "features_used": self.features_used,
            "clients": [
                {
                    "client": family.key,
                    "name": family.name,
                    "not_supported": [
                        g.as_dict() for g in self.for_client(family.key) if g.support != "partial"
                    ],
                    "partial": [
                        g.as_dict() for g in self.for_client(family.key) if g.support == "partial"
                    ],
                }
                for family in self.families
            ],
        }


def check_clients(
    doc: HtmlElement, families: Sequence[Family], dataset: Dataset | None = None
) -> ClientReport:
    """Every feature `doc` uses, against each family's latest tested support."""
    data = dataset or load()
    used: dict[str, list[Use]] = {}
    for use in uses(doc, data.slugs):
        used.setdefault(use.slug, []).append(use)
    gaps = [
        _gap(family, slug, found, verdict, data)
        for family in families
        for slug, found in sorted(used.items())
        if (verdict := data.features[slug].verdict(family)) is not None
        and verdict.support in ("not supported", "partial")
    ]
    label = f"{data.source.get('package', 'caniemail')}, data of {data.updated[:10]}"
    return ClientReport(tuple(families), tuple(gaps), len(used), label)


def _gap(family: Family, slug: str, found: list[Use], verdict: Verdict, data: Dataset) -> Gap:
    feature = data.features[slug]
    first = next(
        (u.element for u in found if u.element is not None and u.element.tag != "style"), None
    )
    notes = verdict.notes + ((feature.note,) if feature.note else ())
    return Gap(
        client=family.key,
        slug=slug,
        title=feature.title,
        support=verdict.support,
        notes=notes,
        count=len(found),
        written=tuple(dict.fromkeys(u.detail for u in found)),
        selector=selector(first) if first is not None else None,
        snippet=snippet(first) if first is not None else None,
        fallback=FALLBACKS.get(slug),
        url=feature.url,
        platforms=verdict.platforms
        if len(verdict.platforms) < _platform_count(family, feature)
        else (),
    )


def _platform_count(family: Family, feature: Feature) -> int:
    tested = feature.stats.get(family.family, {})
    return len([p for p in (family.platforms or tuple(tested)) if tested.get(p)])
