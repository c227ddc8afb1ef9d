"""Every web page is a template under newsletter/pages/, and no value can add markup to one.

The attack is on the class: each value a page shows (list name, form fields echoed back,
error messages that quote input, the preview's issue names, subjects and notices) is drawn
from the dangerous alphabet, and the parsed page must have exactly the elements and
attributes the template wrote, as it has for a harmless value.
"""

from __future__ import annotations

import ast
import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote

import httpx
import lxml.html
import pytest
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.testclient import TestClient

import newsletter
from newsletter import pages
from newsletter.config import Settings, load_settings
from newsletter.models import Recipient
from newsletter.preview import Failure
from newsletter.preview import create_app as create_preview
from newsletter.web import create_app as create_web

PACKAGE = Path(newsletter.__file__).parent
ATOMS = [
    "<", ">", "&", '"', "'", "`", "=", "/", " ", "a", "é",
    "</script>", "<script>alert(1)</script>", "javascript:", "JaVaScRiPt:alert(1)",
    "<!--", "-->", "<img src=x onerror=alert(1)>", "</textarea>", "</title>", "<b>", "</p>",
    "<form action=//evil>", "&amp;", "&lt;", "{{ 7 * 7 }}", "{% raw %}",
]  # fmt: skip
DANGEROUS = st.lists(st.sampled_from(ATOMS), min_size=1, max_size=10).map("".join)
URL_ATTRIBUTES = ("href", "src", "action", "formaction")


def skeleton(document: str) -> list[tuple[str, tuple[str, ...]]]:
    """The elements (and comments) of a page with their attribute names, in order."""
    return skeleton_of(lxml.html.document_fromstring(document))


def skeleton_of(root: lxml.html.HtmlElement) -> list[tuple[str, tuple[str, ...]]]:
    return [
        (el.tag if isinstance(el.tag, str) else "#comment", tuple(sorted(el.attrib)))
        for el in root.iter()
    ]


def shown(document: str) -> str:
    """Everything a reader can see or a form can send: text and attribute values."""
    root = lxml.html.document_fromstring(document)
    values = [v for el in root.iter() if isinstance(el.tag, str) for v in el.attrib.values()]
    return "\n".join([root.text_content(), *values])


def no_script_urls(document: str) -> None:
    root = lxml.html.document_fromstring(document)
    for el in root.iter():
        if isinstance(el.tag, str):
            for name in URL_ATTRIBUTES:
                value = el.get(name, "").strip().lower()
                assert not value.startswith("javascript:"), (el.tag, name, value)


def assert_same_shape(attacked: str, harmless: str, value: str) -> None:
    assert skeleton(attacked) == skeleton(harmless), value
    no_script_urls(attacked)


# ---- every template, every value slot ------------------------------------------------------


def public(**slots: str) -> Callable[[str], dict[str, Any]]:
    """Every slot gets the value, after its prefix: a form's action is always the path of
    the request (under /u/, /confirm/, /subscribe), never a URL a visitor chose."""
    return lambda v: {slot: prefix + v for slot, prefix in slots.items()}


def _index(v: str) -> dict[str, Any]:
    return {"rows": [(v, v, False), (v, v, True)], "generation": 0, "issues_dir": v}


def _empty_index(v: str) -> dict[str, Any]:
    return {"rows": [], "generation": 0, "issues_dir": v}


def _error(v: str) -> dict[str, Any]:
    return {"name": v, "failure": Failure(v, (v, v), 422), "generation": 0}


def _issue(v: str) -> dict[str, Any]:
    email = SimpleNamespace(from_name=v, subject=v, preheader=v, from_email=v)
    report = SimpleNamespace(html_bytes=2048, ok=False, errors=[v], warnings=[v])
    return {
        "name": v,
        "email": email,
        "report": report,
        "findings": [("error", v, v), ("warning", v, v)],
        "text": v,
        "query": v,
        "options": {"as": v, "dark": "1"},
        "notice": v,
        "generation": 0,
        "phone": 375,
        "desktop": 640,
    }


def _gates(v: str) -> dict[str, Any]:
    """The desk's gates fragment: every finding's text and element from the email."""
    finding = SimpleNamespace(
        selector=v, severity="error", impact=v, rule=v, message=v, snippet=v, views=[v]
    )
    gap = SimpleNamespace(
        selector=v,
        is_warning=True,
        support=v,
        title=v,
        count=1,
        platforms=[v],
        fallback=v,
        notes=[v, v],
    )
    accessibility = SimpleNamespace(errors=[finding], axe_version=v, views=[v, v])
    return {
        "failure": None,
        "accessibility": accessibility,
        "findings": [(finding, v)],
        "clients": [(SimpleNamespace(name=v), [gap])],
        "dataset": v,
    }


def _gates_failure(v: str) -> dict[str, Any]:
    return {"failure": Failure(v, (v, v), 500)}


def _archive(v: str) -> dict[str, Any]:
    """The archive's pages: base_url is a checked http(s) setting, the rest untrusted text."""
    entry = {"subject": v, "leads": [v, v], "date": v, "published": v, "path": "/issues/" + v}
    return {
        "base": "https://news.test",
        "language": v,
        "title": v,
        "list_name": v,
        "feed_path": "/archive/" + v,
        "index_path": "/archive/" + v,
        "entries": [entry, entry],
        "lists": [{"name": v, "title": v, "path": "/archive/" + v}],
        "shelves": [{"language": v, "index": "/archive/" + v, "feed": "/archive/" + v}],
    }


def _stats(v: str) -> dict[str, Any]:
    """The stats report: issue and edition names, link texts and URLs come from outside."""
    from newsletter.stats import OPENS_CAVEAT
    from newsletter.statsreport import Bar, Series

    counts = ("recipients", "sent", "delivered", "hard_bounces", "soft_bounces", "deferred")
    more = ("unique_opens", "machine_opens", "unique_clicks", "unsubscribes", "spam_reports")
    figures = SimpleNamespace(issue=v, edition=v, **{name: 3 for name in counts + more})
    line = Series("opens", "40,10 60,20", 2)
    return {
        "figures": figures,
        "rates": {"delivered": 0.5, "unique_opens": None},
        "caveat": OPENS_CAVEAT,
        "hourly": [line, Series("clicks", "40,10 60,20", 1)],
        "bars": [Bar(v, v, 3, 120.0), Bar(v, "https://x.example/" + v, 1, 40.0)],
        "trend": [Series("opens %", "40,10 60,20", 0.5)],
        "trend_names": [v, v],
        "width": 720,
        "height": 200,
        "left": 40,
        "top": 10,
        "hours": 72,
        "bar_width": 400,
    }


CONTEXTS: dict[str, list[Callable[[str], dict[str, Any]]]] = {
    "unsubscribe.html": [public(list_name="", action="/u/")],
    "unsubscribed.html": [public(list_name="", again="/u/")],
    "resubscribe.html": [public(list_name="", action="/u/")],
    "not_resubscribed.html": [public(list_name="")],
    "resubscribed.html": [public(list_name="")],
    "subscribe.html": [public(list_name="", action="/u/")],
    "check_inbox.html": [public()],
    "confirm.html": [public(list_name="", action="/u/")],
    "subscribed.html": [public(list_name="")],
    "not_found.html": [public(message="")],
    "bad_request.html": [public(message="")],
    "check_form.html": [public(message="")],
    "please_wait.html": [public(minutes="")],
    "too_large.html": [public(limit="")],
    "unavailable.html": [public()],
    "unsubscribe_help.html": [public()],
    "preview/index.html": [_index, _empty_index],
    "preview/error.html": [_error],
    "preview/issue.html": [_issue],
    "preview/gates.html": [_gates, _gates_failure],
    "archive/home.html": [_archive],
    "archive/index.html": [_archive],
    "archive/list.html": [_archive],
    "stats/report.html": [_stats],
}


def page_templates() -> list[str]:
    """The pages themselves: not the layouts, macros, CSS and JS they are built from."""
    names = pages.ENVIRONMENT.list_templates(extensions=["html"])
    return sorted(n for n in names if not Path(n).name.startswith(("_", "base.")))


def test_every_page_template_is_attacked_below() -> None:
    assert page_templates() == sorted(CONTEXTS)


@pytest.mark.parametrize(
    ("template", "context"),
    [(t, c) for t, contexts in CONTEXTS.items() for c in contexts],
)
@hsettings(max_examples=60, deadline=None)
@given(value=DANGEROUS)
def test_no_value_adds_markup_to_any_page(
    template: str, context: Callable[[str], dict[str, Any]], value: str
) -> None:
    attacked = pages.render(template, **context(value))
    harmless = pages.render(template, **context("x"))
    assert_same_shape(attacked, harmless, value)
    if context("x"):  # the value reached the page, as the reader typed it
        assert value in shown(attacked) or value.strip() in shown(attacked)


def test_a_misspelt_name_in_a_page_is_an_error_not_an_empty_string() -> None:
    with pytest.raises(Exception, match="list_name"):
        pages.render("subscribed.html")


# ---- through HTTP: the values a visitor controls -------------------------------------------


@pytest.fixture
def web(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_web(settings, send_confirmations=False)) as client:
        yield client


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=DANGEROUS)
def test_the_subscribe_form_echoes_the_list_field_as_a_value_only(
    web: TestClient, value: str
) -> None:
    attacked = web.get("/subscribe", params={"list": value})
    harmless = web.get("/subscribe", params={"list": "weekly"})
    assert attacked.status_code == 200
    assert (
        attacked.headers["content-security-policy"] == harmless.headers["content-security-policy"]
    )
    assert_same_shape(attacked.text, harmless.text, value)
    field = lxml.html.document_fromstring(attacked.text).cssselect("input[name=list]")
    assert [f.get("value") for f in field] == [value]


@hsettings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=DANGEROUS)
def test_an_error_that_quotes_the_posted_address_adds_no_markup(
    web: TestClient, value: str
) -> None:
    attacked = web.post("/subscribe", data={"email": value, "list": "weekly"})
    harmless = web.post("/subscribe", data={"email": "not an address", "list": "weekly"})
    assert (attacked.status_code, harmless.status_code) == (400, 400)
    assert_same_shape(attacked.text, harmless.text, value)


class Preview:
    """httpx straight into the preview app, in a thread of its own (see test_preview)."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def get(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        async def fetch() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.get(path, params=params)

        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(asyncio.run, fetch()).result()


ISSUE = "2025-12-10"


@pytest.fixture
def preview(project: Path) -> Preview:
    nobody: dict[str, Recipient] = {}  # "render as" finds no subscriber: the notice quotes it
    return Preview(create_preview(load_settings(project, env={}), lookup=nobody.get))


@hsettings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=DANGEROUS)
def test_the_preview_shows_a_missing_issue_name_and_a_render_as_choice_as_text(
    preview: Preview, value: str
) -> None:
    value = value.replace("/", "")  # a name with a slash is another route
    assume(value.strip() not in ("", "sample"))  # these mean "the sample reader"
    missing = preview.get(f"/issues/{quote(value, safe='')}")
    harmless = preview.get("/issues/x")
    assert (missing.status_code, harmless.status_code) == (404, 404)
    assert_same_shape(missing.text, harmless.text, value)

    attacked = preview.get(f"/issues/{ISSUE}", params={"as": value})
    unknown = preview.get(f"/issues/{ISSUE}", params={"as": "nobody@example.org"})
    assert attacked.status_code == 200
    assert_same_shape(attacked.text, unknown.text, value)


def _without_findings(document: str) -> str:
    root = lxml.html.document_fromstring(document)
    for table in root.cssselect(".preflight table"):
        table.drop_tree()
    return str(lxml.html.tostring(root, encoding="unicode"))


HARMLESS: dict[Path, tuple[httpx.Response, httpx.Response]] = {}


def _with_subject(project: Path, subject: str) -> None:
    path = project / "issues" / f"{ISSUE}.yaml"
    lines = path.read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("subject:"))
    lines[at] = "subject: " + _yaml_string(subject)
    path.write_text("\n".join(lines) + "\n")


def _yaml_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@hsettings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=DANGEROUS)
def test_an_issue_subject_reaches_the_preview_pages_as_text(project: Path, value: str) -> None:
    if project not in HARMLESS:
        _with_subject(project, "Harmless subject")
        harmless = Preview(create_preview(load_settings(project, env={})))
        HARMLESS[project] = harmless.get("/"), harmless.get(f"/issues/{ISSUE}")
    expected_index, expected_issue = HARMLESS[project]
    _with_subject(project, value)
    attacked = Preview(create_preview(load_settings(project, env={})))
    index, issue = attacked.get("/"), attacked.get(f"/issues/{ISSUE}")
    assert_same_shape(index.text, expected_index.text, value)
    assert issue.status_code == expected_issue.status_code
    # The subject may draw preflight findings the harmless one does not: compare the page
    # without its findings table, and each finding row against the template's own row.
    assert_same_shape(_without_findings(issue.text), _without_findings(expected_issue.text), value)
    for row in lxml.html.document_fromstring(issue.text).cssselect(".preflight table tr"):
        assert skeleton_of(row) == [("tr", ()), ("td", ("class",)), ("td", ()), ("td", ())]
    assert " ".join(value.split()) in " ".join(shown(index.text).split())


# ---- the issue's "done when": no page assembled in Python ----------------------------------

# Tags that make a page. A string holding one of these *and* a closing tag is markup, not
# prose that names a tag (preflight's "<html> has no lang attribute" is prose).
PAGE_TAGS = (
    "<!doctype", "<html", "<head", "<body", "<title", "<p>", "<p ", "<form", "<input",
    "<button", "<h1", "<h2", "<label", "<table", "<section", "<main", "<header", "<div",
    "<span", "<pre", "<script", "<iframe", "<b>", "<a ",
)  # fmt: skip
# Markup in Python that is not a page, each with the reason.
NOT_PAGES = {
    # preflight parses an empty email part as an empty document; nothing is served.
    "<html><head></head><body></body></html>",
    # markdown.py: a pattern that reads nh3's output (an <a> left without its href).
    '<a (?:title="[^"]*" )?rel="noopener noreferrer">(.*?)</a>',
}


def _literal_text(node: ast.AST) -> str | None:
    """A string constant's text; an f-string's literal parts joined (values as {})."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}"
            for v in node.values
        )
    return None


def page_markup_in(source: str) -> list[tuple[int, str]]:
    """(line, text) of every string literal in `source` that is HTML page markup."""
    found = []
    tree = ast.parse(source)
    inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        text = _literal_text(node)
        if text is None or id(node) in inner or text in NOT_PAGES:
            continue
        lowered = text.lower()
        if "</" in lowered and any(tag in lowered for tag in PAGE_TAGS):
            found.append((getattr(node, "lineno", 0), text))
    return found


def test_no_module_assembles_an_html_page() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line}: {text[:60]!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, text in page_markup_in(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "HTML pages belong in newsletter/pages/ templates:\n" + "\n".join(
        offenders
    )


@pytest.mark.parametrize(
    "source",
    [
        'body = f"<p>Stop receiving <b>{html.escape(name)}</b>?</p>"',
        'page = ("<!doctype html><html lang=en><head><title>x</title>"\n "</head></html>")',
        "form = f'<form method=post action=\"{action}\">' f'<button>{label}</button></form>'",
        '_RELOAD = """\n<script>\n  new EventSource("/events");\n</script>\n"""',
    ],
)
def test_the_scan_finds_the_markup_the_old_modules_had(source: str) -> None:
    assert page_markup_in(source)


def test_the_scan_leaves_prose_that_names_a_tag() -> None:
    assert not page_markup_in('m = "<html> has no lang attribute. Set <html lang=\\"en\\">."')


@pytest.mark.parametrize("module", ["web.py", "archive.py", "preview.py", "pages/__init__.py"])
def test_page_modules_have_no_html_escape_glue(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "html" not in imported
