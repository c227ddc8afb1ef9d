"""The build orchestrator: load -> resolve -> render -> check -> write, for every caller.

`newsletter build`, `check`, `send`, `snapshot` and the preview all go through the stages
below; no other module chains them. Only this module (and the loaders it calls) reads
issue files: `render` and `preflight` are pure over what a stage hands them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lxml.html

from newsletter import placeholders
from newsletter.accessibility import AccessibilityReport, check_accessibility
from newsletter.atomic import write_bytes
from newsletter.clients import ClientReport, check_clients, families
from newsletter.config import Settings
from newsletter.errors import IssueError, NewsletterError, PreviewError, Problem
from newsletter.issues import load_issue, parse_issue
from newsletter.message import build_message, list_id_header, to_bytes
from newsletter.models import Issue, IssueSpec, Recipient, RenderedEmail
from newsletter.preflight import PastIssue, Report, check
from newsletter.render import render

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@dataclass(frozen=True)
class Built:
    """One issue taken through load, resolve and render (nothing written yet)."""

    issue: Issue
    email: RenderedEmail

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """What loading and rendering found (the content made inert, ...): never errors."""
        return self.email.warnings


@dataclass(frozen=True)
class History:
    """The issues before this one, for the repeat check, and the ones that could not be read."""

    issues: tuple[PastIssue, ...]
    unreadable: tuple[Problem, ...]


@dataclass(frozen=True)
class Checked:
    """A built issue with its preflight report."""

    issue: Issue
    email: RenderedEmail
    report: Report


@dataclass(frozen=True)
class Written:
    """The files `write_files` wrote for one issue."""

    directory: Path
    files: tuple[Path, ...]


def build_issue(issue_path: Path, settings: Settings) -> Built:
    """Load, validate, resolve and render one issue (nothing is written)."""
    issue = load_issue(issue_path, settings)
    return Built(issue, render(issue, settings))


def read_spec(issue_path: Path) -> tuple[IssueSpec | None, tuple[Problem, ...]]:
    """The issue definition as written (None if it cannot be read) and its problems so far:
    parsed, not resolved or rendered (the preview's index)."""
    spec, checker = parse_issue(issue_path)
    return spec, tuple(checker.problems)


def check_issue(built: Built, history: History, settings: Settings) -> Report:
    """The preflight report of a built issue, with the earlier issues that could not be read."""
    report = check(built.issue, built.email, settings, history=history.issues)
    return Report(
        report.issue_name, report.html_bytes, report.blocks, report.problems + history.unreadable
    )


def check_file(issue_path: Path, settings: Settings) -> Checked:
    """Build one issue file and check it against the issues before it (`send`, the preview)."""
    built = build_issue(issue_path, settings)
    report = check_issue(built, load_history(built.issue, settings), settings)
    return Checked(built.issue, built.email, report)


def report_for_file(issue_path: Path, settings: Settings) -> Report:
    """`check_file`'s report; an issue that does not load or render is a report of errors,
    so one broken issue does not hide the others' findings (`newsletter check`)."""
    try:
        return check_file(issue_path, settings).report
    except IssueError as exc:
        problems = exc.problems
    except NewsletterError as exc:
        problems = (Problem(str(exc), file=issue_path),)
    return Report(issue_path.stem, 0, (), tuple(problems))


def write_files(
    built: Built, out_dir: Path, settings: Settings, reader: Recipient | None = None
) -> Written:
    """Write email.html/.txt/.mjml and message.eml; `reader` fills the placeholders for a
    preview, otherwise they stay as the mailer gets them."""
    email = built.email
    html, text = email.html, email.text
    if reader is not None:
        html = placeholders.fill(html, reader, part="html", tags=email.tags)
        text = placeholders.fill(text, reader, part="text", tags=email.tags)
    message = build_message(email, settings, reader)  # To: the reader, or undisclosed
    # As every sent copy carries it (see `personal_message`), so the file reads like one.
    message["List-Id"] = list_id_header(settings, built.issue.spec.audience.list)
    directory = out_dir / built.issue.name
    outputs = {
        "email.html": html.encode("utf-8"),
        "email.txt": text.encode("utf-8"),
        "email.mjml": email.mjml.encode("utf-8"),
        "message.eml": to_bytes(message),
    }
    files = tuple(write_bytes(directory / name, data) for name, data in outputs.items())
    return Written(directory, files)


def load_history(issue: Issue, settings: Settings) -> History:
    """The last `history_issues` issue definitions dated before `issue`, with their articles.

    Articles are resolved against today's content, which is what those issues carried unless
    an article was since deleted. An unreadable past issue is a warning on its file, never an
    error of this one: repeats may be missed. A file that does not even parse (bad YAML, too
    deeply nested, a folder or FIFO) has no date to place it, so it is reported whatever
    its date; its own `check` says what is wrong with it.
    """
    dated, problems = [], []
    for path in sorted(settings.path("issues_dir").glob("*.yaml")):
        if path.stem == issue.name:
            continue
        spec, checker = parse_issue(path)
        if spec is None:
            reason = checker.problems[0].message if checker.problems else "not an issue definition"
            problems.append(_unreadable_past(path, reason))
        elif spec.date < issue.spec.date:
            dated.append((spec.date, path))
    keep = sorted(dated)[-settings.history_issues :] if settings.history_issues > 0 else []
    history = []
    for date, path in keep:
        try:
            past = load_issue(path, settings)
        except NewsletterError as exc:
            problems.append(_unreadable_past(path, str(exc).splitlines()[0]))
            continue
        history.append(PastIssue(past.name, date, frozenset(a.slug for a in past.articles)))
    return History(tuple(history), tuple(problems))


def _unreadable_past(path: Path, reason: str) -> Problem:
    return Problem(
        "cannot read this earlier issue, so its articles are not checked for repeats "
        f"(`newsletter check {path.name}` says why): {reason}",
        file=path,
        severity="warning",
    )


@dataclass(frozen=True)
class Gates:
    """The accessibility and client-support reports of one built issue (issue 15)."""

    accessibility: AccessibilityReport
    clients: ClientReport

    def problems(self, settings: Settings, issue: Issue) -> tuple[Problem, ...]:
        """Serious and critical accessibility findings as errors, the rest and every layout
        feature a chosen client ignores as warnings, for the preflight report."""
        found = [
            Problem(
                f"accessibility [{f.rule}, {f.impact}] {f.message} "
                f"Element: {f.snippet or f.selector}",
                file=f.source,
                field="html",
                severity=f.severity,
            )
            for f in self.accessibility.findings
        ]
        template = settings.path("templates_dir") / f"{issue.spec.template}.mjml.j2"
        found += [
            Problem(
                f"client support: {gap.message(family.name)}", template, "html", None, "warning"
            )
            for family, gap in self.clients.warnings
        ]
        return tuple(found)

    def as_dict(self) -> dict[str, Any]:
        return {"accessibility": self.accessibility.as_dict(), "clients": self.clients.as_dict()}


def check_gates(checked: Checked, settings: Settings, chromium: Browser | None = None) -> Gates:
    """Both gates on the inlined HTML as it is sent; launches Chromium unless given one."""
    doc = lxml.html.document_fromstring(checked.email.html)
    clients = check_clients(doc, families(settings.client_families))
    accessibility = check_accessibility(checked.issue, checked.email, settings, chromium)
    return Gates(accessibility, clients)


def gated_report_for_file(issue_path: Path, settings: Settings) -> tuple[Report, Gates | None]:
    """`report_for_file` with the gates' findings added (`newsletter check`); an issue that
    does not build has no gates."""
    try:
        checked = check_file(issue_path, settings)
    except NewsletterError:
        return report_for_file(issue_path, settings), None
    report = checked.report
    try:
        gates = check_gates(checked, settings)
    except PreviewError as exc:
        # No browser here: an error that says so, never a silent pass.
        missing = Problem(f"the gates did not run: {exc} (`check --no-gates` skips them)")
        return Report(
            report.issue_name, report.html_bytes, report.blocks, (*report.problems, missing)
        ), None
    problems = report.problems + gates.problems(settings, checked.issue)
    return Report(report.issue_name, report.html_bytes, report.blocks, problems), gates
