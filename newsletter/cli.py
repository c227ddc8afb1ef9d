"""The `newsletter` command line: the only module that talks to the terminal."""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from newsletter.errors import IssueError, NewsletterError

if TYPE_CHECKING:
    from rich.console import Console

    from newsletter.build import BuildResult
    from newsletter.config import Settings
    from newsletter.preflight import Report

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # our errors are messages, not tracebacks
    add_completion=False,
    help="Build the weekly digest from issue definitions, and deliver it once to every subscriber.",
)
rates_app = typer.Typer(no_args_is_help=True, help="Currency-rate snapshots.")
app.add_typer(rates_app, name="rates")


def _console(stderr: bool = False) -> Console:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


@app.command()
def build(
    issue: Annotated[Path, typer.Argument(help="The issue file, e.g. issues/2025-12-10.yaml.")],
    out: Annotated[Path | None, typer.Option(help="Output folder (default build/).")] = None,
    as_: Annotated[
        str | None,
        typer.Option("--as", metavar="NAME,EMAIL", help="Fill per-recipient fields for a preview."),
    ] = None,
) -> None:
    """Render ISSUE to email.html, email.txt, email.mjml and message.eml."""
    from newsletter.build import build_to_disk, preview_recipient
    from newsletter.config import load_settings

    settings = load_settings()
    recipient = preview_recipient(as_, settings) if as_ else None
    result = build_to_disk(issue, settings, out or settings.path("build_dir"), recipient)
    _print_summary(result)
    _print_report(_preflight(result, settings))


def _preflight(result: BuildResult, settings: Settings) -> Report:
    """`build` reports the preflight; only `send` lets its errors block."""
    from dataclasses import replace

    from newsletter.preflight import check, load_history

    history, unreadable = load_history(result.issue, settings)
    report = check(result.issue, result.email, settings, history=history)
    return replace(report, problems=report.problems + unreadable)


def _print_summary(result: BuildResult) -> None:
    from rich.markup import escape

    console = _console()
    email = result.email
    console.print(f"[bold]{result.issue.spec.title}[/] · {email.subject}")
    for section in result.issue.sections:
        console.print(f"  [bold]{section.heading}[/] ({section.style})")
        for article in section.articles:
            console.print(f"    • {article.title}")
    kb = email.html_bytes / 1024
    console.print(
        f"{len(result.issue.articles)} articles · HTML {kb:.1f} KB · "
        f"text {len(email.text.encode()) / 1024:.1f} KB"
    )
    for warning in email.warnings:
        console.print(f"[yellow]{escape(str(warning))}[/]")
    for path in result.files:
        console.print(f"  wrote {path}")


@app.command()
def check(
    issues: Annotated[
        list[Path] | None,
        typer.Argument(help="Issue files to check (default: every file in issues/)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Preflight ISSUES: size, images, links, inbox fields, footer and editorial checks.

    Exits 1 when any issue has errors (warnings alone exit 0), so CI can run it.
    """
    import json

    from newsletter.config import load_settings
    from newsletter.preflight import report_for_file

    settings = load_settings()
    paths = issues or sorted(settings.path("issues_dir").glob("*.yaml"))
    if not paths:
        raise NewsletterError(f"no issue files in {settings.path('issues_dir')}; name one.")
    reports = [report_for_file(path, settings) for path in paths]
    if json_:
        typer.echo(json.dumps([r.as_dict() for r in reports], indent=2))
    else:
        for report in reports:
            _print_report(report)
    if any(not r.ok for r in reports):
        raise SystemExit(1)


def _print_report(report: Report) -> None:
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    size = f"HTML {report.html_bytes / 1024:.1f} KB" if report.html_bytes else "does not build"
    verdict = "[green]ok[/]" if report.ok else "[red]blocked[/]"
    console.print(
        f"[bold]{escape(report.issue_name)}[/] · {size} · {len(report.errors)} error(s), "
        f"{len(report.warnings)} warning(s) · {verdict}"
    )
    for block in report.blocks:
        console.print(f"  [dim]{block.label}: {block.size / 1024:.1f} KB[/]")
    if not report.problems:
        return
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for column in ("severity", "where", "finding"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        where = _short(problem.file) + (f":{problem.line}" if problem.line else "")
        where += f" [{problem.field}]" if problem.field else ""
        # Fields look like markup ("[subject]"): escape, or Rich swallows them.
        table.add_row(
            f"[{colour}]{problem.severity}[/]", escape(where.strip()), escape(problem.message)
        )
    console.print(table)


@app.command()
def preview(
    issue: Annotated[
        Path | None, typer.Argument(help="Open this issue's page (default: the index).")
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8030).")] = None,
) -> None:
    """Serve a live preview that reloads within a second of saving any issue, article,
    rate or template file."""
    from newsletter.config import load_settings
    from newsletter.preview import bind, create_app, server

    settings = load_settings(overrides={"preview_host": host, "preview_port": port})
    issues_dir = settings.path("issues_dir").resolve()
    if issue is not None and (not issue.is_file() or issue.resolve().parent != issues_dir):
        raise NewsletterError(f"{issue}: no such issue file in {issues_dir}; name one there.")
    sock = bind(settings.preview_host, settings.preview_port)
    bound_port = sock.getsockname()[1]
    page = f"issues/{issue.stem}" if issue else ""
    _console().print(
        f"Preview on http://{settings.preview_host}:{bound_port}/{page} "
        "· reloads on save · Ctrl-C stops it"
    )
    app = create_app(settings, warm=issue.stem if issue else None)
    server(app, log_level="warning").run(sockets=[sock])


@app.command()
def snapshot(
    issue: Annotated[Path, typer.Argument(help="The issue file, e.g. issues/2025-12-10.yaml.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default build/ISSUE/snapshots).")
    ] = None,
) -> None:
    """Screenshot ISSUE in headless Chromium: phone and desktop widths, light and dark."""
    from newsletter.config import load_settings
    from newsletter.issues import load_issue
    from newsletter.render import render
    from newsletter.snapshot import snapshot as take_snapshots

    settings = load_settings()
    loaded = load_issue(issue, settings)
    email = render(loaded, settings)
    folder = out or settings.path("build_dir") / loaded.name / "snapshots"
    for path in take_snapshots(loaded, email, folder, settings):
        _console().print(f"  wrote {path}")


def _short(path: Path | None) -> str:
    """A path relative to the working directory when it is inside it."""
    if path is None:
        return ""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@rates_app.command("import")
def rates_import(
    file: Annotated[Path, typer.Argument(help="Ticker text, e.g. a scraped front page.")],
    date: Annotated[str, typer.Option("--date", help="The snapshot's date, YYYY-MM-DD.")],
    force: Annotated[bool, typer.Option(help="Replace an existing, different snapshot.")] = False,
) -> None:
    """Parse ticker lines (`KGS/USD = 0.01144 0%`) into content/rates/DATE.yaml."""
    from newsletter import rates, yamlfile
    from newsletter.config import load_settings

    settings = load_settings()
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise NewsletterError(f"--date {date!r}: write the date as YYYY-MM-DD.") from None
    text = yamlfile.read_text(file)
    directory = settings.path("content_dir") / "rates"
    path, snapshot, changed = rates.import_ticker(text, str(file), day, directory, force=force)
    console = _console()
    for rate in snapshot.rates:
        console.print(
            f"  {rate.currency}/{snapshot.base} = {rates.plain(rate.value)} "
            f"{rates.format_change(rate.change_pct)}"
        )
    console.print(f"{'wrote' if changed else 'unchanged:'} {path} ({len(snapshot.rates)} rates)")


def _fail(message: str) -> NoReturn:
    _console(stderr=True).print(f"[red]error:[/] {message}", markup=True)
    raise SystemExit(1)


def main() -> None:
    """Console-script entry: NewsletterErrors become a message and exit status 1."""
    try:
        app()
    except IssueError as exc:
        _fail(str(exc))
    except NewsletterError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)
