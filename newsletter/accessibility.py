"""Accessibility of the final HTML: axe-core in Chromium, plus the rules email needs."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lxml.html
from lxml.html import HtmlElement

from newsletter.clients.elements import selector, snippet
from newsletter.config import Settings
from newsletter.errors import PreviewError
from newsletter.models import Issue, RenderedEmail
from newsletter.preflight import _article_refs, _exclusive_blocks, visible_elements, visible_text

if TYPE_CHECKING:
    from playwright.sync_api import Browser

Impact = Literal["critical", "serious", "moderate", "minor"]
IMPACTS: tuple[Impact, ...] = ("critical", "serious", "moderate", "minor")
ERROR_IMPACTS = frozenset({"critical", "serious"})

# Link text that does not say where it goes once read out of context (a screen reader's
# list of links reads "Read more, Read more, Read more").
GENERIC_LINK_TEXT = frozenset(
    {
        "read more",
        "more",
        "read",
        "click here",
        "here",
        "continue",
        "continue reading",
        "learn more",
        "details",
        "more details",
        "link",
        "full story",
        "read the story",
        "read the full story",
        "this",
    }
)
# iOS Mail enlarges text under 13 px on its own and Gmail's app keeps it tiny; WCAG sets no
# minimum, so this is the clients' floor, not a standard's.
MIN_TEXT_PX = 13.0
_PT_TO_PX = 4 / 3
_FONT_SIZE = re.compile(r"font-size\s*:\s*([\d.]+)\s*(px|pt)", re.IGNORECASE)
_RTL_LANGUAGES = frozenset({"ar", "he", "fa", "ur", "ps", "sd", "ug", "yi", "dv", "ckb"})
_GATE_ATTRIBUTE = "data-gate-node"
_HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})


@dataclass(frozen=True)
class Finding:
    """One accessibility problem: the rule, how bad, which element, which file to open."""

    rule: str
    impact: Impact
    message: str
    selector: str | None
    snippet: str | None
    source: Path | None = None
    views: tuple[str, ...] = ()  # axe: where it was seen ("phone-light", ...)
    engine: Literal["axe", "email"] = "email"
    help_url: str | None = None

    @property
    def severity(self) -> Literal["error", "warning"]:
        return "error" if self.impact in ERROR_IMPACTS else "warning"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "impact": self.impact,
            "severity": self.severity,
            "engine": self.engine,
            "message": self.message,
            "selector": self.selector,
            "element": self.snippet,
            "source": str(self.source) if self.source else None,
            "views": list(self.views),
            "help": self.help_url,
        }


@dataclass(frozen=True)
class AccessibilityReport:
    findings: tuple[Finding, ...]
    axe_version: str
    views: tuple[str, ...] = ()

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    def as_dict(self) -> dict[str, Any]:
        return {
            "axe": self.axe_version,
            "views": list(self.views),
            "errors": len(self.errors),
            "findings": [f.as_dict() for f in self.findings],
        }


def check_accessibility(
    issue: Issue, email: RenderedEmail, settings: Settings, chromium: Browser | None = None
) -> AccessibilityReport:
    """The email rules, then axe-core in Chromium (launched here unless one is given)."""
    from newsletter import snapshot

    html = snapshot.preview_html(email, settings)
    doc = lxml.html.document_fromstring(html)
    sources = Sources(doc, issue, settings)
    found = list(email_rules(doc))
    if chromium is None:
        with snapshot.browser(settings) as launched:
            axe_findings, version = run_axe(launched, doc, snapshot.image_sizes(issue))
    else:
        axe_findings, version = run_axe(chromium, doc, snapshot.image_sizes(issue))
    found += axe_findings
    located = tuple(sources.locate(f) for f in _ordered(found))
    return AccessibilityReport(located, version, tuple(VIEWS))


def _ordered(findings: Iterable[Finding]) -> list[Finding]:
    return sorted(findings, key=lambda f: (IMPACTS.index(f.impact), f.engine, f.rule))


class Sources:
    """Which file an editor opens to fix an element: the article whose card holds it, else
    the issue's template."""

    def __init__(self, doc: HtmlElement, issue: Issue, settings: Settings) -> None:
        refs = _article_refs(doc, issue.articles)
        paths = {a.slug: a.path for a in issue.articles}
        self.blocks = {block: paths[slug] for slug, block in _exclusive_blocks(refs).items()}
        self.template = settings.path("templates_dir") / f"{issue.spec.template}.mjml.j2"
        self.by_selector = {selector(el): el for el in doc.iter() if isinstance(el.tag, str)}

    def locate(self, finding: Finding) -> Finding:
        element = self.by_selector.get(finding.selector or "")
        if element is None:
            return replace(finding, source=self.template)
        for node in (element, *element.iterancestors()):
            if node in self.blocks and self.blocks[node] is not None:
                return replace(finding, source=self.blocks[node])
        return replace(finding, source=self.template)


# ---- the email rules (axe has none of these) ---------------------------------------------


def email_rules(doc: HtmlElement) -> Iterator[Finding]:
    yield from check_lang(doc)
    yield from check_tables(doc)
    yield from check_headings(doc)
    yield from check_links(doc)
    yield from check_images(doc)
    yield from check_text_size(doc)


def _finding(rule: str, impact: Impact, message: str, element: HtmlElement | None) -> Finding:
    if element is None:
        return Finding(rule, impact, message, None, None)
    return Finding(rule, impact, message, selector(element), snippet(element))


def check_lang(doc: HtmlElement) -> Iterator[Finding]:
    lang = (doc.get("lang") or "").strip()
    direction = (doc.get("dir") or "").strip().lower()
    if not lang:
        yield _finding(
            "email-html-lang",
            "serious",
            "<html> has no lang: screen readers guess the language and mispronounce the "
            'email. Set <mjml lang="…"> in the template.',
            doc,
        )
    primary = lang.split("-")[0].lower()
    if primary in _RTL_LANGUAGES and direction != "rtl":
        yield _finding(
            "email-html-dir",
            "serious",
            f'<html lang="{lang}"> is a right-to-left language but dir is not "rtl": the text '
            'runs the wrong way. Set <mjml dir="rtl">.',
            doc,
        )
    elif not direction:
        yield _finding(
            "email-html-dir",
            "minor",
            "<html> has no dir: clients that restyle the email may guess the direction. "
            'Set <mjml dir="ltr"> (or "rtl").',
            doc,
        )


def _is_data_table(table: HtmlElement) -> bool:
    """A table that holds data: it has header cells or a caption of its own."""
    own = [el for el in table.iter("th", "caption") if _owner_table(el) is table]
    return bool(own)


def _owner_table(element: HtmlElement) -> HtmlElement | None:
    return next(element.iterancestors("table"), None)


def _not_a_table(table: HtmlElement, role: str, doc: HtmlElement) -> bool:
    """A table a screen reader does not announce as one: role presentation/none, or an
    image with a name (a chart drawn with cells, read as its one sentence). An unnamed
    img is still read cell by cell in some readers, so it counts as a layout table."""
    if role in ("presentation", "none"):
        return True
    return role == "img" and bool(accessible_name(table, doc))


def check_tables(doc: HtmlElement) -> Iterator[Finding]:
    for table in doc.iter("table"):
        role = (table.get("role") or "").strip().lower()
        presentational = _not_a_table(table, role, doc)
        if _is_data_table(table) and presentational:
            yield _finding(
                "email-data-table-role",
                "serious",
                f'a data table (it has header cells or a caption) has role="{role}": screen '
                "readers drop its headers, so the numbers lose their labels. Remove the role.",
                table,
            )
        elif not _is_data_table(table) and not presentational:
            yield _finding(
                "email-layout-table-role",
                "serious",
                'a layout table has no role="presentation": screen readers announce its rows '
                'and columns before the content. Add role="presentation" to the <table>.',
                table,
            )


def check_headings(doc: HtmlElement) -> Iterator[Finding]:
    headings = [el for el in doc.iter("h1", "h2", "h3", "h4", "h5", "h6")]
    if not headings:
        yield _finding(
            "email-headings",
            "moderate",
            "the email has no heading: screen reader users cannot jump from story to story. "
            "Make each story title a heading (<h2>, under an <h1> for the issue).",
            None,
        )
        return
    previous = 1  # the first heading may be an <h1> or an <h2> under the subject
    for heading in headings:
        tag = str(heading.tag)
        level = int(tag[1])
        if level > previous + 1:
            yield _finding(
                "email-heading-order",
                "moderate",
                f"<{tag}> follows <h{previous}>: a heading level is skipped, so the "
                f"outline reads as if a section were missing. Use <h{previous + 1}>.",
                heading,
            )
        previous = level


def accessible_name(element: HtmlElement, doc: HtmlElement) -> str:
    """The name a screen reader reads for a link: aria-labelledby, aria-label, else content
    (an image counts by its alt)."""
    labelled = (element.get("aria-labelledby") or "").split()
    if labelled:
        parts = [doc.get_element_by_id(i, None) for i in labelled]
        return _squash(" ".join(p.text_content() for p in parts if p is not None))
    if (element.get("aria-label") or "").strip():
        return _squash(element.get("aria-label") or "")
    pieces = [element.text or ""]
    for child in element.iterdescendants():
        if child.tag == "img":
            pieces.append(child.get("alt") or "")
        elif isinstance(child.tag, str):
            pieces.append(child.text or "")
        pieces.append(child.tail or "")
    return _squash(" ".join(pieces))


def _squash(text: str) -> str:
    return " ".join(text.split())


def _generic(name: str) -> bool:
    return name.casefold().strip(" .…:→›»>!") in GENERIC_LINK_TEXT


def check_links(doc: HtmlElement) -> Iterator[Finding]:
    """Link text that names no destination. WCAG 2.4.4 (level A) lets a link's context
    explain it, and for a link under a heading the heading is that context: then it is the
    AAA criterion 2.4.9 that fails (moderate); with no heading above it, 2.4.4 (serious)."""
    heading: HtmlElement | None = None
    for element in doc.iter():
        if element.tag in _HEADINGS:
            heading = element
        if element.tag != "a":
            continue
        name = accessible_name(element, doc)
        if not name or not _generic(name):
            continue  # a link without a name is axe's link-name
        yield _link_finding(element, name, heading)


def _link_finding(link: HtmlElement, name: str, heading: HtmlElement | None) -> Finding:
    advice = f'Name the story: visible text, or an aria-label such as "{name}: <story title>".'
    if heading is None:
        return _finding(
            "email-link-purpose",
            "serious",
            f"the link text '{name}' does not say where it goes, and no heading above it "
            f"does: read out in a list of links it is one of many. {advice}",
            link,
        )
    title = _squash(heading.text_content())
    return _finding(
        "email-link-purpose",
        "moderate",
        f"the link text '{name}' says where it goes only through the heading above it "
        f"('{title}'); in a list of links it is one of many. {advice}",
        link,
    )


def check_images(doc: HtmlElement) -> Iterator[Finding]:
    alt_words = 0
    for img in doc.iter("img"):
        alt = img.get("alt")
        alt_words += len((alt or "").split())
        link = next(img.iterancestors("a"), None)
        if alt is None:
            yield _finding(
                "email-image-alt",
                "critical",
                "an image has no alt attribute: screen readers read its file name, and with "
                'images off nothing shows. Describe it in alt, or alt="" if it is decoration.',
                img,
            )
        elif not alt.strip() and link is not None and not accessible_name(link, doc):
            yield _finding(
                "email-image-alt",
                "critical",
                "a linked image has an empty alt and the link has no other text: the link "
                "has no name. Say where it goes in the image's alt.",
                img,
            )
    text_words = len(visible_text(doc).split())
    if alt_words > text_words:
        yield _finding(
            "email-text-in-images",
            "serious",
            f"the images' alt texts hold {alt_words} words and the email's text only "
            f"{text_words}: the message is in images, which many readers never load and "
            "screen readers cannot read. Put the text in the HTML.",
            None,
        )


def check_text_size(doc: HtmlElement) -> Iterator[Finding]:
    for element in visible_elements(doc):
        match = _FONT_SIZE.search(element.get("style") or "")
        if not match or not _own_text(element):
            continue
        size = float(match.group(1)) * (_PT_TO_PX if match.group(2).lower() == "pt" else 1)
        if 0 < size < MIN_TEXT_PX:
            yield _finding(
                "email-text-size",
                "moderate",
                f"text is set at {match.group(1)}{match.group(2)}, under {MIN_TEXT_PX:.0f}px: "
                "hard to read on a phone, and iOS Mail enlarges it on its own. Use at least "
                f"{MIN_TEXT_PX:.0f}px.",
                element,
            )


# Inline elements whose text takes the size of the element around them.
_INLINE = frozenset({"span", "strong", "b", "em", "i", "a", "small", "u", "code", "abbr"})


def _own_text(element: HtmlElement) -> bool:
    """The element carries text at its own size: directly, after a child, or inside inline
    children that set no size of their own (a 12 px span whose text sits in unsized inner
    spans is 12 px text), not only in nested blocks."""
    if (element.text or "").strip():
        return True
    for child in element:
        if (child.tail or "").strip():
            return True
        sized = _FONT_SIZE.search(child.get("style") or "")
        if child.tag in _INLINE and not sized and _own_text(child):
            return True
    return False


# ---- axe-core in Chromium ----------------------------------------------------------------

VIEWS: Mapping[str, tuple[int, Literal["light", "dark"]]] = {
    "phone-light": (375, "light"),
    "phone-dark": (375, "dark"),
    "desktop-light": (640, "light"),
    "desktop-dark": (640, "dark"),
}
# The first view runs every rule. The page's structure (roles, names, headings) is the same
# in the others; what width and colour scheme change is how it is drawn, so they run the
# rules that read rendered colours and sizes: a third of the time of a full run.
FULL_VIEW = "phone-light"
RENDERED_RULES = (
    "color-contrast",
    "link-in-text-block",
    "target-size",
    "scrollable-region-focusable",
)
_NODE_IDS = f"""targets => targets.map(t => {{
    const el = document.querySelector(t);
    return el ? el.getAttribute("{_GATE_ATTRIBUTE}") : null;
}})"""


def _options(view: str) -> dict[str, Any]:
    if view == FULL_VIEW:
        return {"resultTypes": ["violations"]}
    return {"resultTypes": ["violations"], "runOnly": {"type": "rule", "values": RENDERED_RULES}}


def run_axe(
    chromium: Browser, doc: HtmlElement, images: Mapping[str, tuple[int, int]]
) -> tuple[list[Finding], str]:
    """axe-core's violations in every view, one finding per rule and element."""
    from newsletter.snapshot import open_email

    try:
        from axe_playwright_python.sync_playwright import Axe
    except ImportError as exc:
        raise PreviewError(
            "The accessibility check needs axe-core: pip install 'newsletter[browser]'."
        ) from exc
    elements = [el for el in doc.iter() if isinstance(el.tag, str)]
    width, scheme = VIEWS[FULL_VIEW]
    page = open_email(chromium, _marked(doc), width=width, scheme=scheme, images=images)
    merged: dict[tuple[str, str | None], Finding] = {}
    version = ""
    try:
        page.evaluate(Axe().axe_script)
        for view, (width, scheme) in VIEWS.items():
            page.set_viewport_size({"width": width, "height": 800})
            page.emulate_media(color_scheme=scheme)
            response = page.evaluate("options => axe.run(document, options)", _options(view))
            version = response.get("testEngine", {}).get("version", "")
            for violation in response["violations"]:
                targets = [_first_target(n) for n in violation["nodes"]]
                ids = page.evaluate(_NODE_IDS, targets)
                for node, node_id in zip(violation["nodes"], ids, strict=True):
                    element = elements[int(node_id)] if node_id is not None else None
                    finding = _axe_finding(violation, node, element)
                    key = (finding.rule, finding.selector)
                    seen = merged.get(key, finding)
                    merged[key] = replace(seen, views=(*seen.views, view))
    finally:
        page.context.close()
    return list(merged.values()), version


def _marked(doc: HtmlElement) -> str:
    """The HTML with each element numbered in document order, so that axe's targets map
    back to the element the rules and the preview name (data-* changes no axe result)."""
    twin = copy.deepcopy(doc)
    for index, element in enumerate(el for el in twin.iter() if isinstance(el.tag, str)):
        element.set(_GATE_ATTRIBUTE, str(index))
    doctype = doc.getroottree().docinfo.doctype
    body = lxml.html.tostring(twin, encoding="unicode")
    return f"{doctype}\n{body}" if doctype else body


def _first_target(node: Mapping[str, Any]) -> str:
    target = node["target"][0]
    # A target inside a frame is a list of selectors; emails have no frames.
    return target if isinstance(target, str) else target[-1]


def _axe_finding(
    violation: Mapping[str, Any], node: Mapping[str, Any], element: HtmlElement | None
) -> Finding:
    given = node.get("impact") or violation.get("impact")
    impact: Impact = next((i for i in IMPACTS if i == given), "minor")
    summary = node.get("failureSummary") or ""
    detail = " ".join(line.strip() for line in summary.splitlines()[1:2])
    message = f"{violation['help']}." + (f" {detail}" if detail else "")
    return Finding(
        rule=violation["id"],
        impact=impact,
        message=message,
        selector=selector(element) if element is not None else _first_target(node),
        snippet=snippet(element) if element is not None else None,
        engine="axe",
        help_url=violation.get("helpUrl"),
    )
