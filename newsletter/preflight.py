"""Preflight: find what a subscriber would notice in a rendered issue, before it is sent."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import lxml.html
from lxml.html import HtmlElement

from newsletter import markdown, placeholders, ratepanel
from newsletter import rates as rates_mod
from newsletter.config import Settings
from newsletter.errors import PreflightError, Problem, Severity
from newsletter.models import Article, Issue, IssueSpec, Query, RateSnapshot, RenderedEmail
from newsletter.placeholders import UNKEYED, Tags

KB = 1024
# Gmail clips an HTML part above ~102 KB behind "View entire message", which also hides the
# footer and its unsubscribe link; the warning leaves room for the tracking Gmail adds.
GMAIL_CLIP_BYTES = 102 * KB
SIZE_WARNING_BYTES = 90 * KB
# What inboxes show before cutting: ~60 characters of subject on desktop (phones show ~40),
# ~100 characters of preheader after it.
SUBJECT_VISIBLE = 60
PREHEADER_VISIBLE = 100

_TEMPLATE_RESIDUE = ("{{", "}}", "{%", "%}", "{#", "#}")
# `None`/`nan` leak from Python values; "None of them" in an article is English, so a word
# followed by a lower-case word is left alone.
_NONE_NAN = re.compile(r"(?<![\w'’])(None|nan|NaN)(?![\w'’])(?![ \t]+[a-z])")
_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|max-height\s*:\s*0(?:px)?\s*(?:[;!]|$)"
    r"|opacity\s*:\s*0(?:\.0*)?\s*(?:[;!]|$)",
    re.IGNORECASE,
)
_FONT_SIZE = re.compile(r"font-size\s*:\s*([\d.]+)", re.IGNORECASE)
_MAILTO = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# Anything spelt like a tag, old style or new (`-first_name-`, `-x_html-`, `-email-<key>-`).
# Content is made inert before it is rendered (see `inert`), so in the output these come
# from a template; only the tags of this build, in their own part, are ever filled.
_TAG_FORM = re.compile(
    rf"(?<![\w-])-(?:{'|'.join(placeholders.FIELDS)}|[a-z][a-z0-9_]*_html)-"
    rf"(?:[0-9a-f]{{{placeholders.KEY_LENGTH}}}-)?"
)


@dataclass(frozen=True)
class BlockSize:
    """How many bytes of the HTML part one block takes (an article card, the rates, ...)."""

    label: str
    size: int


@dataclass(frozen=True)
class PastIssue:
    """An earlier issue, as far as repeats are concerned: which articles it carried."""

    name: str
    date: dt.date
    slugs: frozenset[str]


@dataclass(frozen=True)
class Report:
    issue_name: str
    html_bytes: int
    blocks: tuple[BlockSize, ...]
    problems: tuple[Problem, ...]

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_for_errors(self) -> None:
        """For `send`: errors block (PreflightError lists them), warnings do not."""
        if self.errors:
            lines = "\n".join(f"  {p}" for p in self.errors)
            raise PreflightError(
                f"issue {self.issue_name} has {len(self.errors)} preflight error(s); fix them "
                f"and run `newsletter check` again:\n{lines}"
            )

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, for `newsletter check --json` and the preview."""
        return {
            "issue": self.issue_name,
            "ok": self.ok,
            "html_bytes": self.html_bytes,
            "blocks": [{"label": b.label, "bytes": b.size} for b in self.blocks],
            "problems": [
                {
                    "severity": p.severity,
                    "message": p.message,
                    "file": str(p.file) if p.file else None,
                    "field": p.field,
                    "line": p.line,
                }
                for p in self.problems
            ],
        }


def check(
    issue: Issue,
    email: RenderedEmail,
    settings: Settings,
    *,
    history: Sequence[PastIssue] = (),
) -> Report:
    """Every check over one rendered issue; pure: no files, no network, no printing."""
    doc = _parse(email.html)
    blocks = block_sizes(doc, issue, email.html_bytes)
    problems = [
        *check_size(email.html_bytes, blocks),
        *check_images(doc, email.html),
        *check_links(doc, email.text, email.tags),
        *check_inbox_fields(email.subject, email.preheader),
        *check_content(issue, email),
        *check_dropped_markup(issue),
        *check_residue(doc, email),
        *check_footer(doc, email.text, settings.postal_address, email.tags),
        *check_document(doc),
        *check_article_dates(issue),
        *check_article_languages(issue),
        *check_repeats(issue, history, settings.history_issues),
        *check_rates(issue, settings),
    ]
    located = tuple(_locate(p, issue, settings) for p in problems)
    return Report(email.issue_name, email.html_bytes, tuple(blocks), located)


def _locate(problem: Problem, issue: Issue, settings: Settings) -> Problem:
    """Point a finding about the output at the file an editor would open to fix it."""
    if problem.file is not None:
        return problem
    templates = settings.path("templates_dir")
    sources = {
        "html": templates / f"{issue.spec.template}.mjml.j2",
        "text": templates / f"{issue.spec.template}.txt.j2",
        "subject": issue.spec.path,
        "preheader": issue.spec.path,
    }
    source = sources.get(problem.field or "")
    return replace(problem, file=source) if source else problem


def _parse(html: str) -> HtmlElement:
    if not html.strip():
        # An empty part is reported by the size and footer checks; parse an empty page.
        html = "<html><head></head><body></body></html>"
    return lxml.html.document_fromstring(html)


def _problem(message: str, field: str, severity: Severity = "error") -> Problem:
    return Problem(message, field=field, severity=severity)


def _kb(size: int) -> str:
    return f"{size / KB:.0f} KB" if size >= KB else f"{size} B"


# ---- size ---------------------------------------------------------------------------------


def block_sizes(doc: HtmlElement, issue: Issue, total: int) -> list[BlockSize]:
    """Each article card's share of the HTML part, the head (styles) and the rest."""
    refs = {f"article {slug}": els for slug, els in _article_refs(doc, issue.articles).items()}
    if issue.rates is not None:
        codes = {r.currency for r in issue.rates.rates}
        cells = [el for el in doc.iter() if (el.text or "").strip() in codes]
        if cells:
            refs["rates"] = cells
    blocks = []
    head = doc.find("head")
    if head is not None:
        blocks.append(BlockSize("head (styles)", _size(head)))
    for label, element in _exclusive_blocks(refs).items():
        blocks.append(BlockSize(label, _size(element)))
    rest = total - sum(b.size for b in blocks)
    blocks.append(BlockSize("layout, intro and footer", max(rest, 0)))
    return blocks


def _size(element: HtmlElement) -> int:
    return len(lxml.html.tostring(element, encoding="unicode", with_tail=False).encode("utf-8"))


def _article_refs(doc: HtmlElement, articles: Iterable[Article]) -> dict[str, list[HtmlElement]]:
    """The elements that point at each article: links to it and its image."""
    refs: dict[str, list[HtmlElement]] = {}
    for article in articles:
        base = article.url.split("?")[0].split("#")[0]
        image = article.image.url if article.image else None
        found = [
            el
            for el in doc.iter("a", "img")
            if (el.get("href") or "").startswith(base) or (image and el.get("src") == image)
        ]
        if found:
            refs[article.slug] = found
    return refs


def _exclusive_blocks(refs: Mapping[str, list[HtmlElement]]) -> dict[str, HtmlElement]:
    """For each block, the largest subtree that holds its references and no other block's."""
    # Sets of elements, not of id()s: lxml makes element proxies on demand, and a dropped
    # proxy's id can be reused by another element's; holding them keeps identity sound.
    ancestors = {label: _with_ancestors(els) for label, els in refs.items()}
    blocks = {}
    for label, elements in refs.items():
        others: set[HtmlElement] = set().union(*(a for k, a in ancestors.items() if k != label))
        block = _common_ancestor(elements)
        while True:
            parent = block.getparent()
            if parent is None or parent.tag == "body" or parent in others:
                break
            block = parent
        blocks[label] = block
    return blocks


def _with_ancestors(elements: Iterable[HtmlElement]) -> set[HtmlElement]:
    return {a for el in elements for a in (el, *el.iterancestors())}


def _common_ancestor(elements: Sequence[HtmlElement]) -> HtmlElement:
    shared = set.intersection(*(_with_ancestors([el]) for el in elements))
    return next(a for a in (elements[0], *elements[0].iterancestors()) if a in shared)


def check_size(html_bytes: int, blocks: Sequence[BlockSize]) -> list[Problem]:
    if html_bytes <= SIZE_WARNING_BYTES:
        return []
    largest = sorted(blocks, key=lambda b: b.size, reverse=True)[:4]
    shares = ", ".join(f"{b.label}: {_kb(b.size)}" for b in largest)
    if html_bytes > GMAIL_CLIP_BYTES:
        return [
            _problem(
                f"the HTML part is {_kb(html_bytes)}; Gmail clips messages above ~102 KB and "
                f"hides the rest, footer and unsubscribe link included. Largest blocks: {shares}. "
                "Drop an article or use the 'cards' style for long ones.",
                "html",
            )
        ]
    return [
        _problem(
            f"the HTML part is {_kb(html_bytes)}, close to Gmail's ~102 KB clip. "
            f"Largest blocks: {shares}.",
            "html",
            "warning",
        )
    ]


# ---- images and links -------------------------------------------------------------------


def check_images(doc: HtmlElement, html: str) -> list[Problem]:
    problems = []
    for img in doc.iter("img"):
        src = (img.get("src") or "").strip()
        shown = src if len(src) < 80 else src[:77] + "..."
        if src.startswith("data:"):
            problems.append(
                _problem(
                    f"image {shown} is embedded as base64; Gmail does not show data: images "
                    "and they inflate the message. Host it and link it over https.",
                    "html",
                )
            )
        elif not _is_https(src):
            problems.append(
                _problem(
                    f"image '{shown}' is not an absolute https URL; mail clients cannot load it. "
                    "Use a full https:// address.",
                    "html",
                )
            )
        if not (img.get("alt") or "").strip():
            problems.append(
                _problem(
                    f"image {shown} has no alt text; readers with images off or a screen reader "
                    "see nothing. Set the image's alt in the article's front matter.",
                    "html",
                )
            )
    if "url(data:" in html.replace(" ", "") and not any(
        p.message.find("base64") > 0 for p in problems
    ):
        problems.append(
            _problem(
                "a CSS background is embedded as base64 (url(data:...)); host it over https.",
                "html",
            )
        )
    return problems


def _is_https(url: str) -> bool:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 -- raises on a malformed port
    except ValueError:
        return False
    host = parts.hostname or ""
    return parts.scheme == "https" and "." in host and not re.search(r"\s", url)


def _link_error(href: str, tags: Tags) -> str | None:
    if href in {tags.html(f) for f in placeholders.FIELDS}:
        return None
    if href.startswith("mailto:"):
        address = href[len("mailto:") :].split("?")[0]
        return None if _MAILTO.fullmatch(address) else "is not a well-formed mailto: address"
    if _is_https(href):
        return None
    if href.startswith("http:"):
        return "uses http; use https so mail clients do not warn or rewrite it"
    return "is not a well-formed https or mailto link"


def check_links(doc: HtmlElement, text: str, tags: Tags = UNKEYED) -> list[Problem]:
    problems = []
    seen: set[str] = set()
    for anchor in doc.iter("a"):
        href = (anchor.get("href") or "").strip()
        if href in seen:
            continue
        seen.add(href)
        if href.startswith("#") and doc.get_element_by_id(href[1:], None) is not None:
            continue  # a jump within the email ("In this issue"): no text-part twin needed
        error = _link_error(href, tags)
        if error:
            problems.append(_problem(f"link '{href}' {error}.", "html"))
        elif _as_text_link(href, tags) not in text:
            problems.append(
                _problem(
                    f"link {href} is in the HTML part but not in the text part; readers of the "
                    "text part cannot follow it. Add it to the .txt.j2 template.",
                    "text",
                    "warning",
                )
            )
    return problems


def _as_text_link(href: str, tags: Tags) -> str:
    """How the HTML part's link reads in the text part: per-recipient tags change form."""
    for name in placeholders.FIELDS:
        href = href.replace(tags.html(name), tags.text(name))
    return href


# ---- inbox fields and residue -----------------------------------------------------------


def check_inbox_fields(subject: str, preheader: str) -> list[Problem]:
    problems = []
    if not subject.strip():
        problems.append(_problem("the subject is empty; set `subject` in the issue.", "subject"))
    elif len(subject) > SUBJECT_VISIBLE:
        problems.append(
            _problem(
                f"the subject has {len(subject)} characters; inboxes show about {SUBJECT_VISIBLE} "
                f"(phones ~40), so readers see '{subject[:SUBJECT_VISIBLE]}…'. Shorten it.",
                "subject",
                "warning",
            )
        )
    if not preheader.strip():
        problems.append(
            _problem(
                "the preheader is empty; inboxes will show the first text of the email instead.",
                "preheader",
                "warning",
            )
        )
    elif len(preheader) > PREHEADER_VISIBLE:
        cut = PREHEADER_VISIBLE - 20
        problems.append(
            _problem(
                f"the preheader has {len(preheader)} characters; inboxes show about "
                f"{PREHEADER_VISIBLE}, so the end is cut: '…{preheader[cut:]}'.",
                "preheader",
                "warning",
            )
        )
    return problems


def check_content(issue: Issue, email: RenderedEmail) -> list[Problem]:
    """What the render found in the content and made inert (see `inert.findings`): warnings
    on the article's or the issue's own file and line, never errors against a template."""
    return [p for p in email.warnings if p not in issue.warnings]


def check_dropped_markup(issue: Issue) -> list[Problem]:
    """Raw HTML, links and images in an article body that the email cannot keep (see
    `markdown.dropped`): warnings on the article's file and line, so the editor fixes the
    article instead of readers seeing `<script>` as text."""
    spec = issue.spec
    in_intro = [
        Problem(f"{found.what}.", spec.path, "intro", _intro_line(spec, found.line), "warning")
        for found in markdown.dropped(spec.intro)
    ]
    return in_intro + [
        Problem(
            f"{found.what}.",
            file=article.path,
            field="body",
            line=_body_line(article, found.line),
            severity="warning",
        )
        for article in issue.articles
        for found in markdown.dropped(article.body)
    ]


def _intro_line(spec: IssueSpec, offset: int) -> int | None:
    """The file's line for line `offset` of the intro: counted from the key in a literal
    block (`intro: |`); a folded or quoted value joins lines, so then the key's line."""
    for number, line in enumerate(spec.file_lines, start=1):
        key, colon, value = line.partition(":")
        if colon and key.strip() == "intro" and not line[:1].isspace():
            return number + 1 + offset if value.strip().startswith("|") else number
    return None


def _body_line(article: Article, offset: int) -> int | None:
    """The file's line for line `offset` (0-based) of the body, which starts at the first
    non-blank line after the front matter (the loader strips the body)."""
    lines = article.file_lines
    if article.path is None or not lines:
        return None
    ends = [i for i, line in enumerate(lines) if line.rstrip() == "---"]
    start = ends[1] + 1 if lines[0].strip() == "---" and len(ends) > 1 else 0
    while start < len(lines) and not lines[start].strip():
        start += 1
    return start + 1 + offset


def check_residue(doc: HtmlElement, email: RenderedEmail) -> list[Problem]:
    """Template syntax, misplaced per-recipient tags and Python values left in the output."""
    # Attribute values are joined one per line so a value's end is the end of a "sentence".
    attributes = "\n".join(v.strip() for el in doc.iter() for v in el.attrib.values())
    parts = {
        "subject": (email.subject, "text"),
        "preheader": (email.preheader, "text"),
        "html": (f"{visible_text(doc)}\n{attributes}", "html"),
        "text": (email.text, "text"),
    }
    problems = []
    for field, (content, kind) in parts.items():
        problems += _residue_in(content, field, kind, email.tags)
    return problems


def _residue_in(content: str, field: str, kind: str, tags: Tags) -> list[Problem]:
    problems = []
    for token in _TEMPLATE_RESIDUE:
        if token in content:
            problems.append(
                _problem(
                    f"template syntax '{token}' is left in the {field}; a tag did not render. "
                    "Check the template and the issue for unbalanced or escaped tags.",
                    field,
                )
            )
            break
    problems += _misplaced_tags(content, field, kind, tags)
    match = _NONE_NAN.search(content)
    if match:
        start, end = max(match.start() - 30, 0), match.end() + 10
        problems.append(
            _problem(
                f"'{match.group(1)}' appears in the {field} (…{content[start:end]}…): "
                "a missing value was printed. Fix the content or the template.",
                field,
            )
        )
    return problems


def _misplaced_tags(content: str, field: str, kind: str, tags: Tags) -> list[Problem]:
    problems = []
    for name in placeholders.FIELDS:
        text_tag, html_tag = tags.text(name), tags.html(name)
        if text_tag == html_tag:
            continue  # one tag for both parts: never misplaced
        wrong, right = (text_tag, html_tag) if kind == "html" else (html_tag, text_tag)
        if re.search(rf"(?<![\w-]){re.escape(wrong)}(?![\w-])", content):
            problems.append(
                _problem(
                    f"the placeholder {wrong} is in the {field}, where it is never filled; "
                    f"use {right} there.",
                    field,
                )
            )
    known = tags.all()
    for found in dict.fromkeys(match.group(0) for match in _TAG_FORM.finditer(content)):
        if found not in known:
            problems.append(
                _problem(
                    f"unknown placeholder {found} in the {field}; it is never filled. In a "
                    "template write {{ ph.first_name }}, {{ ph.email }} or "
                    "{{ ph.unsubscribe_url }}: each build spells its own tags.",
                    field,
                )
            )
    return problems


# ---- footer and document ------------------------------------------------------------------


def visible_elements(doc: HtmlElement) -> Iterator[HtmlElement]:
    """Elements a reader can see: not hidden by style, not inside font-size 0, not in <head>."""
    body = doc.find("body")
    if body is not None:
        yield from _walk_visible(body, font_zero=False)


def _walk_visible(element: HtmlElement, *, font_zero: bool) -> Iterator[HtmlElement]:
    if not isinstance(element.tag, str) or element.tag in {"style", "script", "title"}:
        return
    style = element.get("style") or ""
    if _HIDING_STYLE.search(style):
        return
    size = _FONT_SIZE.search(style)
    if size:
        # MJML sets font-size:0 on column wrappers and sizes the text inside again.
        font_zero = float(size.group(1)) == 0
    if not font_zero:
        yield element
    for child in element:
        yield from _walk_visible(child, font_zero=font_zero)


def visible_text(doc: HtmlElement) -> str:
    pieces = []
    for element in visible_elements(doc):
        pieces.append(element.text or "")
        pieces.extend(child.tail or "" for child in element)
    return " ".join(" ".join(pieces).split())


def _squash(text: str) -> str:
    """Letters and digits only: an address split over lines still matches itself."""
    return re.sub(r"\W+", "", text).casefold()


def check_footer(
    doc: HtmlElement, text: str, postal_address: str, tags: Tags = UNKEYED
) -> list[Problem]:
    problems = []
    unsubscribe = tags.html("unsubscribe_url")
    links = [
        a
        for a in doc.iter("a")
        if (a.get("href") or "") == unsubscribe or "unsubscribe" in (a.get("href") or "")
    ]
    visible = set(visible_elements(doc))  # elements, not id()s: see _exclusive_blocks
    if not links:
        problems.append(
            _problem(
                f'there is no unsubscribe link; the footer needs <a href="{unsubscribe}">.', "html"
            )
        )
    elif not any(a in visible and a.text_content().strip() for a in links):
        problems.append(
            _problem(
                "the unsubscribe link is hidden or has no text; readers must be able to see it.",
                "html",
            )
        )
    if _squash(postal_address) not in _squash(visible_text(doc)):
        problems.append(
            _problem(
                f"the postal address '{postal_address}' is not visible in the HTML footer; the law "
                "asks for it in commercial email. Set `postal_address` and keep it in the footer.",
                "html",
            )
        )
    if _squash(postal_address) not in _squash(text):
        problems.append(
            _problem(
                "the postal address is missing from the text part's footer.", "text", "warning"
            )
        )
    return problems


def check_document(doc: HtmlElement) -> list[Problem]:
    problems = []
    if not (doc.get("lang") or "").strip():
        problems.append(
            _problem(
                "<html> has no lang attribute; screen readers guess the language. "
                'Set <mj-head>/<html lang="en">.',
                "html",
                "warning",
            )
        )
    title = doc.find(".//title")
    if title is None or not (title.text or "").strip():
        problems.append(
            _problem(
                "the HTML part has no <title>; some clients show it in the browser tab or a "
                "preview. Set <mj-title>.",
                "html",
                "warning",
            )
        )
    return problems


# ---- editorial ------------------------------------------------------------------------------


def check_article_dates(issue: Issue) -> list[Problem]:
    """Articles outside the window their section's query (or the default) allows."""
    problems = []
    specs = issue.spec.sections if len(issue.spec.sections) == len(issue.sections) else ()
    for i, section in enumerate(issue.sections):
        query = specs[i].query if specs else None
        days = (query or Query()).days
        start = issue.spec.date - dt.timedelta(days=days - 1)
        for article in section.articles:
            if article.date < start:
                problems.append(
                    Problem(
                        f"article '{article.slug}' is from {article.date}, older than the issue's "
                        f"{days}-day window (from {start}); is it still news?",
                        file=article.path,
                        field="date",
                        severity="warning",
                    )
                )
            elif article.date > issue.spec.date:
                problems.append(
                    Problem(
                        f"article '{article.slug}' is dated {article.date}, after the issue "
                        f"({issue.spec.date}); check either date.",
                        file=article.path,
                        field="date",
                        severity="warning",
                    )
                )
    return problems


# Languages written in Cyrillic (primary subtags): an issue in one of them needs no `lang`
# on a Cyrillic article. Only the script is detected: the warning suggests `ru` and names
# the others, since Kazakh, Kyrgyz or Tajik text is Cyrillic too.
CYRILLIC_LANGUAGES = frozenset({"ru", "uk", "be", "bg", "sr", "mk", "kk", "ky", "tg", "mn"})
_CYRILLIC = ((0x0400, 0x052F), (0x1C80, 0x1C8F), (0x2DE0, 0x2DFF), (0xA640, 0xA69F))


def check_article_languages(issue: Issue) -> list[Problem]:
    """A story mostly in Cyrillic letters, with no `lang:`, inside an issue in a language
    not written in Cyrillic: screen readers would read it with the issue's voice."""
    primary = issue.spec.language.split("-", 1)[0].casefold()
    if primary in CYRILLIC_LANGUAGES or "cyrl" in issue.spec.language.casefold():
        return []
    problems = []
    for article in {a.slug: a for s in issue.sections for a in s.articles}.values():
        text = " ".join((article.title, article.summary, article.body))
        if article.lang is None and mostly_cyrillic(text):
            problems.append(
                Problem(
                    f"article '{article.slug}' is written mostly in Cyrillic letters but has "
                    f"no lang: while the issue is in '{issue.spec.language}'; add `lang: ru` "
                    "to its front matter (or its language: kk, ky, tg, uk, ...), so screen "
                    "readers read it in that language.",
                    file=article.path,
                    field="lang",
                    severity="warning",
                )
            )
    return problems


def mostly_cyrillic(text: str) -> bool:
    """More than half of the letters of `text` are Cyrillic."""
    letters = [ord(ch) for ch in text if ch.isalpha()]
    cyrillic = sum(1 for code in letters if any(lo <= code <= hi for lo, hi in _CYRILLIC))
    return bool(letters) and cyrillic * 2 > len(letters)


def check_repeats(issue: Issue, history: Sequence[PastIssue], last: int) -> list[Problem]:
    earlier = sorted((p for p in history if p.date < issue.spec.date), key=lambda p: p.date)
    recent = earlier[-last:] if last > 0 else []
    problems = []
    for article in issue.articles:
        sent = [p.name for p in recent if article.slug in p.slugs]
        if sent:
            problems.append(
                Problem(
                    f"article '{article.slug}' was already in issue {', '.join(sent)}; "
                    "subscribers have seen it.",
                    file=issue.spec.path,
                    field="sections",
                    severity="warning",
                )
            )
    return problems


def check_rates(issue: Issue, settings: Settings) -> list[Problem]:
    snapshot = issue.rates
    if snapshot is None:
        return [
            Problem(
                "the issue has no rate snapshot; the rates panel will be empty.",
                file=issue.spec.path,
                field="rates",
                severity="warning",
            )
        ]
    messages: list[tuple[str, str]] = []  # (field, message)
    age = (issue.spec.date - snapshot.date).days
    if age > settings.stale_after_days:
        messages.append(
            (
                "date",
                f"the rate snapshot is from {snapshot.date}, {age} days before "
                f"the issue (more than {settings.stale_after_days}); "
                "import a fresher one.",
            )
        )
    missing = [c for c in settings.rate_currencies if snapshot.get(c) is None]
    if missing:
        messages.append(
            (
                "rates",
                f"the rate snapshot has no {', '.join(missing)}; the panel will be incomplete.",
            )
        )
    messages += _trend_days(snapshot, issue.rate_history, settings)
    word = rates_mod.path_like(snapshot.source)
    if word is not None:
        messages.append(
            (
                "source",
                f"the source line names a file ({word!r}), which readers see under the rate "
                "panel; name the source as a reader knows it (e.g. the newsroom's front page "
                "and its date).",
            )
        )
    for rate in snapshot.rates:
        digits = significant_digits(rate.value)
        if digits < settings.min_rate_digits:
            messages.append(
                (
                    f"rates.{rate.currency}",
                    (
                        f"{rate.currency}/{snapshot.base} = {rate.value} keeps {digits} "
                        "significant digit(s), so its changes and trend cannot show; quote it "
                        f"with more digits or as {snapshot.base}/{rate.currency}."
                    ),
                )
            )
    return [Problem(m, file=snapshot.path, field=f, severity="warning") for f, m in messages]


def _trend_days(
    snapshot: RateSnapshot, trend: Sequence[RateSnapshot], settings: Settings
) -> list[tuple[str, str]]:
    """A warning when the trend window has days without a snapshot (the chart shows gaps)."""
    wanted = settings.rate_trend_days
    have = {s.date for s in trend}
    missing = [d for d in ratepanel.window(snapshot.date, wanted) if d not in have]
    if not missing:
        return []
    listed = ", ".join(d.isoformat() for d in missing)
    return [
        (
            "date",
            f"the {wanted}-day rate trend has {ratepanel.days_phrase(wanted - len(missing))} "
            f"with a snapshot (none for {listed}); the chart shows the gap. Import those days "
            "with 'newsletter rates import' or lower rate_trend_days.",
        )
    ]


def significant_digits(value: Decimal) -> int:
    """Digits as given, leading zeros excluded: 0.28490 has 5, 0.00008 has 1."""
    digits = value.as_tuple().digits
    stripped = "".join(map(str, digits)).lstrip("0")
    return len(stripped)
