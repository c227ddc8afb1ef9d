"""Issue definitions: parse issues/<name>.yaml, validate it, resolve it against the content."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

from newsletter import rates as rates_mod
from newsletter import yamlfile
from newsletter.config import Settings
from newsletter.content import language, load_articles
from newsletter.errors import (
    ArticleFileError,
    IssueError,
    NewsletterError,
    Problem,
    UnreadableFileError,
    YamlSyntaxError,
)
from newsletter.models import (
    LEAD_WORDS,
    STYLES,
    Article,
    AudienceSpec,
    Issue,
    IssueSpec,
    Query,
    RateSnapshot,
    Section,
    SectionSpec,
    Style,
)

CTAS = ("link", "button")

ISSUE_KEYS = {
    "title",
    "date",
    "subject",
    "preheader",
    "intro",
    "rates",
    "sections",
    "template",
    "utm",
    "audience",
    "language",
}
SECTION_KEYS = {"heading", "articles", "query", "style", "words", "cta"}
QUERY_KEYS = {"tags_any", "tags_all", "days", "limit", "order"}
UTM_KEYS = {"source", "medium", "campaign", "term", "content"}
AUDIENCE_KEYS = {"list", "where"}
ORDERS = ("newest", "oldest", "title")
TEMPLATE_NAME = re.compile(r"[a-z][a-z0-9_-]*")
# The file name is the issue's name: it goes into Message-IDs, folders and SendGrid fields.
# Always fullmatch: `$` also matches before a final newline, so "x\n.yaml" would pass.
ISSUE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def load_issue(path: Path, settings: Settings) -> Issue:
    """Parse, validate and resolve; every problem of the file is reported in one IssueError."""
    spec, check = parse_issue(path)
    issue = resolve(spec, settings, check) if spec else None
    if issue is None or any(p.severity == "error" for p in check.problems):
        raise IssueError(check.problems)
    return issue


def parse_issue(path: Path) -> tuple[IssueSpec | None, yamlfile.Checker]:
    """The spec as written (None if unreadable) and a checker holding the problems so far."""
    check = yamlfile.Checker(yamlfile.YamlDoc(None, {}, path))
    try:
        doc = yamlfile.memoized(path, "yaml", yamlfile.load)
    except YamlSyntaxError as exc:
        check.problems.append(exc.problem)
        return None, check
    except UnreadableFileError as exc:
        check.problems.append(Problem(f"{exc.reason}.", path))
        return None, check
    except NewsletterError as exc:  # unreadable: the message already names the file
        check.problems.append(Problem(str(exc)))
        return None, check
    check = yamlfile.Checker(doc)
    if not ISSUE_NAME.fullmatch(path.stem):
        check.problems.append(
            Problem(
                f"the file name '{path.stem}' is the issue's name: use letters, digits, '.', "
                "'_' and '-' only (e.g. 2025-12-10.yaml).",
                path,
            )
        )
    if not isinstance(doc.data, dict):
        check.problem((), "an issue definition is a mapping of keys (title, date, sections...).")
        return None, check
    check.mapping((), ISSUE_KEYS)
    date = check.date(("date",))
    spec = IssueSpec(
        name=path.stem,
        path=path,
        title=check.text(("title",)),
        date=date or dt.date.min,
        subject=_one_line(check, ("subject",)),
        preheader=_one_line(check, ("preheader",), required=False),
        intro=check.text(("intro",), required=False),
        rates=_rates_choice(check),
        sections=_sections(check),
        template=check.text(("template",), required=False, default="digest"),
        utm=_utm(check),
        audience=_audience(check),
        language=language(check, ("language",), default="en"),
        file_lines=tuple(doc.text.splitlines()),
    )
    return spec, check


_LINE_SEPARATOR = re.compile("[\u2028\u2029]")


def _one_line(check: yamlfile.Checker, field: tuple[str], *, required: bool = True) -> str:
    value = check.text(field, required=required)
    if "\r" in value or "\n" in value.strip():
        # Subjects reach mail headers, where a line break would inject a header.
        check.problem(field, "must be a single line.")
    elif found := _LINE_SEPARATOR.search(value):
        # C0/C1 controls are refused by check.text for every field; these end a line too.
        check.problem(
            field, f"contains the control character U+{ord(found.group()):04X}; remove it."
        )
    return " ".join(value.split())


def _rates_choice(check: yamlfile.Checker) -> dt.date | Literal["latest"]:
    if check.get(("rates",)) in (None, "latest"):
        return "latest"
    return check.date(("rates",)) or "latest"


def _sections(check: yamlfile.Checker) -> tuple[SectionSpec, ...]:
    raw = check.get(("sections",))
    if not isinstance(raw, list) or not raw:
        check.problem(("sections",), "list at least one section (a heading and its articles).")
        return ()
    return tuple(_section(check, ("sections", i)) for i in range(len(raw)))


def _section(check: yamlfile.Checker, field: tuple[str, int]) -> SectionSpec:
    check.mapping(field, SECTION_KEYS)
    has_list = check.get((*field, "articles")) is not None
    has_query = check.get((*field, "query")) is not None
    if has_list == has_query:
        check.problem(field, "give either 'articles' (a list of slugs) or 'query', not both.")
    style = _choice(check, (*field, "style"), STYLES, "cards")
    return SectionSpec(
        heading=check.text((*field, "heading")),
        articles=check.strings((*field, "articles")) if has_list else None,
        query=_query(check, (*field, "query")) if has_query else None,
        style=cast(Style, style),
        line=check.doc.line(*field),
        words=check.integer((*field, "words"), minimum=20, maximum=2000) or LEAD_WORDS,
        cta=cast(Literal["link", "button"], _choice(check, (*field, "cta"), CTAS, "link")),
    )


def _choice(
    check: yamlfile.Checker, field: tuple[str | int, ...], choices: tuple[str, ...], default: str
) -> str:
    """One of `choices` (the default when absent), or a problem with a did-you-mean."""
    value = check.text(field, required=False, default=default)
    if value not in choices:
        hint = yamlfile.did_you_mean(value, choices)
        names = ", ".join(f"'{c}'" for c in choices)
        check.problem(field, f"'{value}' is not one of {names}.{hint}")
        return default
    return value


def _query(check: yamlfile.Checker, field: tuple[str | int, ...]) -> Query:
    check.mapping(field, QUERY_KEYS)
    order = check.text((*field, "order"), required=False, default="newest")
    if order not in ORDERS:
        check.problem((*field, "order"), f"'{order}' is not an order; use one of {ORDERS}.")
        order = "newest"
    return Query(
        tags_any=check.strings((*field, "tags_any")),
        tags_all=check.strings((*field, "tags_all")),
        days=check.integer((*field, "days"), minimum=1) or 7,
        limit=check.integer((*field, "limit"), minimum=1),
        order=cast(Literal["newest", "oldest", "title"], order),
    )


def _utm(check: yamlfile.Checker) -> tuple[tuple[str, str], ...]:
    table = check.mapping(("utm",), UTM_KEYS)
    return tuple((f"utm_{k}", check.text(("utm", k))) for k in sorted(table) if k in UTM_KEYS)


def _audience(check: yamlfile.Checker) -> AudienceSpec:
    check.mapping(("audience",), AUDIENCE_KEYS)
    name = check.text(("audience", "list"), required=False, default="weekly")
    where = check.get(("audience", "where")) or {}
    if not isinstance(where, dict):
        check.problem(("audience", "where"), "expected a mapping such as {locale: en}.")
        where = {}
    pairs = tuple(sorted((str(k), str(v)) for k, v in where.items()))
    return AudienceSpec(list=name, where=pairs)


# ---- resolution against content, rates and templates --------------------------------------


def resolve(spec: IssueSpec, settings: Settings, check: yamlfile.Checker) -> Issue:
    """Resolve against content, rates and templates; problems are added to `check`."""
    articles = _load_articles(settings, check)
    # With broken article files every section would also "select nothing": say it once.
    sections = _resolve_sections(spec, articles, check) if articles is not None else ()
    snapshot, trend = (
        (None, ()) if spec.date == dt.date.min else (_resolve_rates(spec, settings, check))
    )
    _check_template(spec, settings, check)
    warnings = tuple(p for p in check.problems if p.severity == "warning")
    return Issue(spec, sections, snapshot, trend, warnings)


def _load_articles(settings: Settings, check: yamlfile.Checker) -> dict[str, Article] | None:
    try:
        return load_articles(settings.path("content_dir") / "articles")
    except ArticleFileError as exc:
        check.problems.extend(exc.problems)
    except NewsletterError as exc:
        check.problems.append(Problem(str(exc)))
    return None


def _resolve_sections(
    spec: IssueSpec, articles: Mapping[str, Article], check: yamlfile.Checker
) -> tuple[Section, ...]:
    chosen: dict[str, str] = {}  # slug -> the field that first selected it
    sections = []
    for i, section in enumerate(spec.sections):
        field: tuple[str | int, ...] = ("sections", i)
        if section.articles is not None:
            picked = _by_slug(section.articles, articles, check, (*field, "articles"))
        elif section.query is not None and spec.date != dt.date.min:
            picked = select(articles.values(), section.query, spec.date, exclude=set(chosen))
        else:
            continue  # already reported: no selection, or no date to select against
        for j, article in enumerate(picked):
            where = f"sections[{i}].articles[{j}]" if section.articles else f"sections[{i}].query"
            if article.slug in chosen:
                check.problem(
                    (*field, "articles", j),
                    f"'{article.slug}' is already selected at {chosen[article.slug]}; "
                    "remove one of the two.",
                )
            chosen.setdefault(article.slug, where)
        if not picked:
            check.problem(
                field,
                f"section '{section.heading}' selects no articles; "
                "widen its query or list some slugs.",
            )
        sections.append(
            Section(section.heading, tuple(picked), section.style, section.words, section.cta)
        )
    return tuple(sections)


def _by_slug(
    slugs: tuple[str, ...],
    articles: Mapping[str, Article],
    check: yamlfile.Checker,
    field: tuple[str | int, ...],
) -> list[Article]:
    found = []
    for j, slug in enumerate(slugs):
        if slug in articles and articles[slug].draft:
            check.problem(
                (*field, j),
                f"'{slug}' is a draft ({articles[slug].path}: draft: true) and cannot be sent; "
                "remove it from this list, or publish it by deleting 'draft: true' from its "
                "front matter.",
            )
        elif slug in articles:
            found.append(articles[slug])
        else:
            hint = yamlfile.did_you_mean(slug, articles)
            check.problem((*field, j), f"no article with slug '{slug}' in content/articles.{hint}")
    return found


def select(
    articles: Any, query: Query, issue_date: dt.date, exclude: set[str] | None = None
) -> list[Article]:
    """The articles a query picks: tag filters, a window ending on the issue date, order, limit.

    Never a draft: an article marked `draft: true` is not ready, whatever its date or tags.
    """
    start = issue_date - dt.timedelta(days=query.days - 1)
    picked = [
        a
        for a in articles
        if start <= a.date <= issue_date
        and not a.draft
        and a.slug not in (exclude or set())
        and (not query.tags_any or set(query.tags_any) & set(a.tags))
        and set(query.tags_all) <= set(a.tags)
    ]
    if query.order == "title":
        picked.sort(key=lambda a: (a.title.casefold(), a.slug))
    else:
        picked.sort(key=lambda a: (a.date, a.slug), reverse=query.order == "newest")
    return picked[: query.limit] if query.limit else picked


def _resolve_rates(
    spec: IssueSpec, settings: Settings, check: yamlfile.Checker
) -> tuple[RateSnapshot | None, tuple[RateSnapshot, ...]]:
    directory = settings.path("content_dir") / "rates"
    if spec.rates == "latest":
        date = rates_mod.latest_on_or_before(directory, spec.date)
        if date is None:
            check.problem(
                ("rates",),
                f"no rate snapshot on or before {spec.date} in {directory}; "
                "import one with 'newsletter rates import'.",
            )
            return None, ()
    else:
        date = spec.rates
        if not rates_mod.snapshot_path(directory, date).exists():
            check.problem(
                ("rates",),
                f"no rate snapshot for {date} ({rates_mod.snapshot_path(directory, date)}).",
            )
            return None, ()
    # A stale snapshot is a preflight warning (`preflight.check_rates`), not a load problem.
    try:
        trend = rates_mod.history(directory, date, settings.rate_trend_days)
    except NewsletterError as exc:
        check.problem(("rates",), str(exc))
        return None, ()
    return trend[-1], trend


def _check_template(spec: IssueSpec, settings: Settings, check: yamlfile.Checker) -> None:
    names = available_templates(settings.path("templates_dir"))
    if spec.template not in names:
        hint = yamlfile.did_you_mean(spec.template, names)
        check.problem(
            ("template",),
            f"unknown template '{spec.template}'; available: {', '.join(sorted(names))}.{hint}",
        )


def available_templates(directory: Path) -> set[str]:
    """The allowlist: names with both an HTML and a text template; '_' files are partials."""
    html = {p.name.removesuffix(".mjml.j2") for p in directory.glob("*.mjml.j2")}
    text = {p.name.removesuffix(".txt.j2") for p in directory.glob("*.txt.j2")}
    return {n for n in html & text if TEMPLATE_NAME.fullmatch(n) and not n.startswith("_")}
