"""The `newsletter` command line: the only module that talks to the terminal."""

from __future__ import annotations

import datetime as dt
import functools
import io
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn, ParamSpec

import click
import typer

from newsletter.errors import NewsletterError, SendInterrupted, UnexpectedError, UsageError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy.engine import Connection

    from newsletter import audience
    from newsletter.build import Built, Written
    from newsletter.clients import ClientReport
    from newsletter.config import Settings
    from newsletter.preflight import Report

P = ParamSpec("P")

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,  # our errors are messages, not tracebacks
    add_completion=False,
    help="Build the weekly digest from issue definitions, and deliver it once to every subscriber.",
)
rates_app = typer.Typer(no_args_is_help=True, help="Currency-rate snapshots.")
app.add_typer(rates_app, name="rates")


def _console(stderr: bool = False) -> Console:
    """A console that never parses markup: user text ("[subject]", "[/x]") prints as is,
    and control or bidi characters in it are shown escaped (see newsletter.terminal).

    Styles are passed with `style=` or as rich Text, whose text goes through `safe`.
    """
    from newsletter.terminal import SafeConsole

    return SafeConsole(stderr=stderr)


def _safe(text: str, *, one_line: bool = False) -> str:
    from newsletter.terminal import safe

    return safe(text, one_line=one_line)


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
    from newsletter.build import build_issue, check_issue, load_history, write_files
    from newsletter.config import load_settings
    from newsletter.readers import made_up_reader

    settings = load_settings()
    reader = made_up_reader(as_, settings) if as_ else None
    built = build_issue(issue, settings)
    written = write_files(built, out or settings.path("build_dir"), settings, reader)
    _print_summary(built, written)
    # `build` reports the preflight; only `send` lets its errors block.
    _print_report(check_issue(built, load_history(built.issue, settings), settings))


def _print_summary(built: Built, written: Written) -> None:
    console = _console()
    email = built.email
    console.print(f"{built.issue.spec.title} · {email.subject}", style="bold")
    for section in built.issue.sections:
        console.print(f"  {section.heading} ({section.style})", style="bold")
        for article in section.articles:
            console.print(f"    • {article.title}")
    kb = email.html_bytes / 1024
    console.print(
        f"{len(built.issue.articles)} articles · HTML {kb:.1f} KB · "
        f"text {len(email.text.encode()) / 1024:.1f} KB"
    )
    for warning in built.warnings:
        console.print(str(warning), style="yellow")
    for path in written.files:
        console.print(f"  wrote {path}")


@app.command()
def check(
    issues: Annotated[
        list[Path] | None,
        typer.Argument(help="Issue files to check (default: every file in issues/)."),
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    gates: Annotated[
        bool,
        typer.Option(
            "--gates/--no-gates",
            help="Also run the accessibility (axe-core in Chromium) and client-support gates.",
        ),
    ] = True,
) -> None:
    """Preflight ISSUES: size, images, links, inbox fields, footer and editorial checks,
    then the accessibility and client-support gates on the final HTML.

    Exits 1 when any issue has errors (warnings alone exit 0), so CI can run it.
    """
    import json

    from newsletter.build import gated_report_for_file, report_for_file
    from newsletter.config import load_settings

    settings = load_settings()
    paths = issues or sorted(settings.path("issues_dir").glob("*.yaml"))
    if not paths:
        raise UsageError(f"no issue files in {settings.path('issues_dir')}; name one.")
    if gates:
        checked = [gated_report_for_file(path, settings) for path in paths]
    else:
        checked = [(report_for_file(path, settings), None) for path in paths]
    if json_:
        documents = [{**r.as_dict(), **(g.as_dict() if g else {})} for r, g in checked]
        typer.echo(json.dumps(documents, indent=2))
    else:
        for report, found in checked:
            _print_report(report)
            if found is not None:
                _print_clients(found.clients)
    if any(not r.ok for r, _ in checked):
        raise SystemExit(1)


def _print_clients(report: ClientReport) -> None:
    """One line per client family: how many of the email's features it ignores."""
    console = _console()
    console.print(f"  client support ({report.features_used} features; {report.dataset}):")
    for family in report.families:
        gaps = report.for_client(family.key)
        missing = [g.title for g in gaps if g.support == "not supported"]
        partial = sum(1 for g in gaps if g.support == "partial")
        shown = ", ".join(missing[:6]) + (", …" if len(missing) > 6 else "")
        console.print(
            f"    {family.name}: {len(missing)} not supported"
            + (f" ({_safe(shown, one_line=True)})" if missing else "")
            + f", {partial} partial",
            style="dim",
        )


def _print_report(report: Report) -> None:
    from rich.table import Table
    from rich.text import Text

    console = _console()
    size = f"HTML {report.html_bytes / 1024:.1f} KB" if report.html_bytes else "does not build"
    console.print(
        Text.assemble(
            (_safe(report.issue_name, one_line=True), "bold"),
            f" · {size} · {len(report.errors)} error(s), {len(report.warnings)} warning(s) · ",
            ("ok", "green") if report.ok else ("blocked", "red"),
        )
    )
    for block in report.blocks:
        label = _safe(block.label, one_line=True)
        console.print(f"  {label}: {block.size / 1024:.1f} KB", style="dim")
    if not report.problems:
        return
    table = Table(show_edge=False, pad_edge=False, expand=False)
    for column in ("severity", "where", "finding"):
        table.add_column(column, overflow="fold")
    for problem in report.problems:
        colour = "red" if problem.severity == "error" else "yellow"
        where = _short(problem.file) + (f":{problem.line}" if problem.line else "")
        where += f" [{problem.field}]" if problem.field else ""
        # Every cell on one line: a file name or a message may hold a line break, which
        # would print as table rows nobody wrote.
        cells = (_safe(where.strip(), one_line=True), _safe(problem.message, one_line=True))
        table.add_row(Text(problem.severity, style=colour), *cells)
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
    from newsletter.preview import (
        EXPOSED,
        beyond_loopback,
        bind,
        create_app,
        database_lookup,
        server,
    )

    settings = load_settings(overrides={"preview_host": host, "preview_port": port})
    issues_dir = settings.path("issues_dir").resolve()
    if issue is not None and (not issue.is_file() or issue.resolve().parent != issues_dir):
        raise UsageError(f"{issue}: no such issue file in {issues_dir}; name one there.")
    sock = bind(settings.preview_host, settings.preview_port)
    if beyond_loopback(settings.preview_host):
        _console(stderr=True).print(EXPOSED.format(host=settings.preview_host), style="yellow")
    bound_port = sock.getsockname()[1]
    page = f"issues/{issue.stem}" if issue else ""
    _console().print(
        f"Preview on http://{settings.preview_host}:{bound_port}/{page} "
        "· reloads on save · Ctrl-C stops it"
    )
    app = create_app(settings, lookup=database_lookup(settings), warm=issue.stem if issue else None)
    server(app, log_level="warning").run(sockets=[sock])


@app.command()
def snapshot(
    issue: Annotated[Path, typer.Argument(help="The issue file, e.g. issues/2025-12-10.yaml.")],
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default build/ISSUE/snapshots).")
    ] = None,
) -> None:
    """Screenshot ISSUE in headless Chromium: phone and desktop widths, light and dark."""
    from newsletter.build import build_issue
    from newsletter.config import load_settings
    from newsletter.snapshot import snapshot as take_snapshots

    settings = load_settings()
    built = build_issue(issue, settings)
    folder = out or settings.path("build_dir") / built.issue.name / "snapshots"
    for path in take_snapshots(built.issue, built.email, folder, settings):
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
    source: Annotated[
        str,
        typer.Option(
            "--source",
            help="The source as readers see it under the panel, e.g. "
            '"The newsroom\'s front-page ticker, 10 December 2025" (not a file path).',
        ),
    ],
    force: Annotated[bool, typer.Option(help="Replace an existing, different snapshot.")] = False,
) -> None:
    """Parse ticker lines (`KGS/USD = 0.01144 0%`) into content/rates/DATE.yaml."""
    from newsletter import rates, yamlfile
    from newsletter.config import load_settings

    settings = load_settings()
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise UsageError(f"--date {date!r}: write the date as YYYY-MM-DD.") from None
    text = yamlfile.read_text(file)
    directory = settings.path("content_dir") / "rates"
    path, snapshot, changed = rates.import_ticker(
        text, str(file), day, directory, source=source, force=force
    )
    console = _console()
    for rate in snapshot.rates:
        console.print(
            f"  {rate.currency}/{snapshot.base} = {rates.plain(rate.value)} "
            f"{rates.format_change(rate.change_pct)}"
        )
    console.print(f"  source (shown to readers): {snapshot.source}")
    console.print(f"{'wrote' if changed else 'unchanged:'} {path} ({len(snapshot.rates)} rates)")


# --- articles import-feed ----------------------------------------------------------------

articles_app = typer.Typer(no_args_is_help=True, help="Articles: import from a news feed.")
app.add_typer(articles_app, name="articles")


@articles_app.command("import-feed")
def articles_import_feed(
    source: Annotated[str, typer.Argument(help="An RSS or Atom feed: an http(s) URL or a file.")],
    tag_prefix: Annotated[
        str, typer.Option(help="Tag for a category: PREFIX/<slug>; '' for the bare slug.")
    ] = "topic",
    tag_map: Annotated[
        Path | None,
        typer.Option(help="YAML mapping of category to tag(s); null drops the category."),
    ] = None,
    draft: Annotated[bool, typer.Option(help="Mark new articles `draft: true`.")] = False,
) -> None:
    """Import a feed's entries into content/articles/: new ones written, changed ones
    updated, unchanged ones left byte for byte."""
    from rich.table import Table

    from newsletter import feeds
    from newsletter.feeds.tagmap import load_tag_map

    settings = _settings()
    rules = feeds.TagRules(tag_prefix, load_tag_map(tag_map) if tag_map else {})
    directory = settings.path("content_dir") / "articles"
    result = feeds.import_feed(source, directory, feeds.limits(settings), rules, draft=draft)
    table = Table("#", "title", "result", "file", "why", title=f"Feed {result.source}")
    for item in result.outcomes:
        table.add_row(
            str(item.position),
            _safe(item.title, one_line=True) or "(no title)",
            item.action,
            _short(item.path),
            _safe(item.reason, one_line=True),
        )
    console = _console()
    console.print(table)
    console.print(
        f"imported {result.count('imported')} · updated {result.count('updated')} · "
        f"skipped {result.count('skipped')}"
    )


# --- Audience: db, lists, subscribers, serve (merged from the audience branch) -----------

subscribers_app = typer.Typer(no_args_is_help=True, help="Subscribers: import, export, add, show.")
lists_app = typer.Typer(no_args_is_help=True, help="Mailing lists.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(lists_app, name="lists")
app.add_typer(db_app, name="db")

ListOption = Annotated[str, typer.Option("--list", "-l", help="The list's name.")]


def _settings(**overrides: object) -> Settings:
    from newsletter.config import load_settings

    return load_settings(overrides=overrides)


def say(text: str) -> None:
    _console().print(text)


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database or upgrade it to the newest schema (keeps every row)."""
    from newsletter import db

    engine = db.connect(_settings())
    say(f"Database {db.masked(str(engine.url))} is at revision {db.current_revision(engine)}.")


# --- lists ----------------------------------------------------------------------------


@lists_app.command("create")
def lists_create(
    name: str,
    title: Annotated[str, typer.Option(help="A title for people.")] = "",
    public: Annotated[
        bool, typer.Option("--public", help="Let anyone ask to join it with the web form.")
    ] = False,
) -> None:
    """Create a mailing list (private unless --public: only editors add to it)."""
    from newsletter import audience, db

    with db.writing(db.connect(_settings())) as conn:
        audience.create_list(conn, name, title, public=public)
    say(f"Created list {name} ({'public' if public else 'private'}).")


@lists_app.command("set")
def lists_set(
    name: str,
    public: Annotated[
        bool,
        typer.Option(
            "--public/--private", help="Whether the web form may join it.", show_default=False
        ),
    ],
) -> None:
    """Open a list to the web form (--public) or close it (--private)."""
    from newsletter import audience, db

    with db.writing(db.connect(_settings())) as conn:
        changed = audience.set_list_public(conn, name, public)
    state = "public: the web form can join it" if public else "private: only editors add to it"
    say(f"List {name} is {state}{'' if changed else ' (it already was)'}.")


def _list_table(infos: list[audience.ListInfo]) -> Table:
    from rich.table import Table

    columns = ("list", "title", "web form", "confirmed", "unconfirmed", "unsubscribed", "created")
    table = Table(*columns)
    for info in infos:
        table.add_row(
            info.name,
            info.title,
            "public" if info.public else "private",
            *(str(info.counts.get(s, 0)) for s in ("confirmed", "unconfirmed", "unsubscribed")),
            f"{info.created_at:%Y-%m-%d}",
        )
    return table


@lists_app.command("list")
def lists_list() -> None:
    """Every list with its member counts."""
    from newsletter import audience, db

    with db.reading(db.connect(_settings())) as conn:
        _console().print(_list_table(audience.all_lists(conn)))


@lists_app.command("show")
def lists_show(name: str) -> None:
    """One list with its member counts."""
    from newsletter import audience, db

    with db.reading(db.connect(_settings())) as conn:
        _console().print(_list_table([audience.get_list(conn, name)]))


# --- subscribers ----------------------------------------------------------------------


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header row; 'email' required.")],
    list_name: ListOption = "weekly",
    mode: Annotated[str, typer.Option(help="subscribe | unsubscribe | suppress")] = "subscribe",
    confirmed: Annotated[bool, typer.Option(help="Mark new members confirmed.")] = False,
    exported: Annotated[
        bool,
        typer.Option(
            help="FILE was written by `subscribers export`: take off its spreadsheet guard "
            "(the ' it put before = + - @ TAB CR and ')."
        ),
    ] = False,
) -> None:
    """Import subscribers from CSV, all or nothing; cells are kept as written."""
    from newsletter import db
    from newsletter.audience_csv import MODES, Mode, import_csv

    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}.")
    chosen: Mode = mode  # checked just above
    report = import_csv(db.connect(_settings()), file, list_name, chosen, confirmed, exported)
    say(
        f"{file} -> {list_name} ({mode}): {report.added} added, {report.updated} updated, "
        f"{report.unchanged} unchanged, {report.rejected} rejected."
    )
    for rejection in report.rejections:
        say(f"  {file}:{rejection.line}: {rejection.reason}")
    if report.rejected > len(report.rejections):
        say(f"  ... and {report.rejected - len(report.rejections)} more rejected rows.")


@subscribers_app.command("export")
def subscribers_export(
    list_name: Annotated[
        str | None, typer.Option("--list", "-l", help="Only members of this list.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File; default stdout.")
    ] = None,
    include_unsubscribed: bool = False,
) -> None:
    """Export subscribers as spreadsheet-safe CSV (UTF-8 with BOM when written to a file)."""
    from newsletter import db
    from newsletter.atomic import replacing_text
    from newsletter.audience_csv import export_csv

    statuses = ["confirmed", "unconfirmed"] + (["unsubscribed"] if include_unsubscribed else [])
    with db.reading(db.connect(_settings())) as conn:
        if output is None:
            _export_to_stdout(conn, list_name, statuses)
            return
        with replacing_text(output, encoding="utf-8-sig") as handle:
            count = export_csv(conn, handle, list_name, statuses)
    _console(stderr=True).print(f"Wrote {count} subscribers to {output}.")


def _export_to_stdout(conn: Connection, list_name: str | None, statuses: list[str]) -> None:
    """The CSV as it is when piped; on a terminal, with control and bidi characters shown
    escaped (names and attributes stored before they were refused could steer it)."""
    from newsletter.audience_csv import export_csv
    from newsletter.terminal import safe

    if not sys.stdout.isatty():
        export_csv(conn, sys.stdout, list_name, statuses)
        return
    buffer = io.StringIO()
    export_csv(conn, buffer, list_name, statuses)
    sys.stdout.write(safe(buffer.getvalue()))


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    list_name: ListOption = "weekly",
    name: str = "",
    locale: str = "",
    confirmed: Annotated[bool, typer.Option(help="Skip double opt-in.")] = False,
) -> None:
    """Add one address to a list."""
    from newsletter import audience, db

    with db.writing(db.connect(_settings())) as conn:
        public_id = audience.add_subscriber(
            conn, email, list_name, name=name, locale=locale, confirmed=confirmed
        )
    say(f"{audience.normalize_email(email)} is on {list_name} (id {public_id}).")


@subscribers_app.command("remove")
def subscribers_remove(email: str, list_name: ListOption = "weekly") -> None:
    """Unsubscribe an address from a list; it stays suppressed there."""
    from newsletter import audience, db

    with db.writing(db.connect(_settings())) as conn:
        changed = audience.remove_subscriber(conn, email, list_name)
    state = "is now" if changed else "was already"
    say(f"{audience.normalize_email(email)} {state} unsubscribed from {list_name}.")


@subscribers_app.command("show")
def subscribers_show(email: str) -> None:
    """Everything stored about one address."""
    from rich.table import Table

    from newsletter import audience, db

    with db.reading(db.connect(_settings())) as conn:
        info = audience.subscriber(conn, email)
    table = Table("field", "value", show_header=False)
    for label, value in [
        ("email", info.email),
        ("id", info.public_id),
        ("name", info.name),
        ("locale", info.locale),
        ("created", f"{info.created_at:%Y-%m-%d %H:%M} UTC"),
        ("confirmed", f"{info.confirmed_at:%Y-%m-%d %H:%M} UTC" if info.confirmed_at else "-"),
        *((f"attribute {k}", v) for k, v in sorted(info.attributes.items())),
        *((f"list {m.list}", f"{m.status} ({m.source})") for m in info.memberships),
        *(
            (f"suppressed {s.scope or 'everywhere'}", f"{s.reason}: {s.detail}")
            for s in info.suppressions
        ),
    ]:
        table.add_row(_safe(label, one_line=True), _safe(value, one_line=True))
    _console().print(table)


@subscribers_app.command("list")
def subscribers_list(
    list_name: ListOption = "weekly",
    status: Annotated[
        str | None, typer.Option(help="confirmed | unconfirmed | unsubscribed")
    ] = None,
    limit: int = 100,
) -> None:
    """Members of a list, oldest first."""
    from rich.table import Table

    from newsletter import audience, db

    with db.reading(db.connect(_settings())) as conn:
        rows = audience.subscribers_in(conn, list_name, status, limit)
    table = Table("email", "name", "locale", "status", "id")
    for row in rows:
        cells = (row.email, row.name, row.locale, row.status, row.public_id)
        table.add_row(*(_safe(cell, one_line=True) for cell in cells))
    _console().print(table)


# --- serve ----------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[
        str | None, typer.Option(help="Default 127.0.0.1 (setting serve_host).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Default 8025 (setting serve_port).")] = None,
) -> None:
    """Serve unsubscribe, resubscribe, double opt-in, the SendGrid event webhook and web copies."""
    import uvicorn

    from newsletter import urls, webhook
    from newsletter.web import create_app, log_config

    chosen = _settings(serve_host=host, serve_port=port)
    web_app = create_app(chosen)  # a malformed webhook key stops it here, before listening
    if chosen.sendgrid_webhook_public_key:
        say(f"SendGrid event webhook on: POST {urls.site_url(chosen, webhook.PATH)}")
    else:
        say(webhook.OFF)
    # proxy_headers off: uvicorn would otherwise believe X-Forwarded-For from 127.0.0.1, and
    # the web app decides itself which proxies to believe (setting trusted_proxies).
    uvicorn.run(
        web_app,
        host=chosen.serve_host,
        port=chosen.serve_port,
        proxy_headers=False,
        server_header=False,
        log_config=log_config(),
    )


def _fail(message: str) -> NoReturn:
    from rich.text import Text

    _console(stderr=True).print(Text.assemble(("error: ", "red"), _safe(message)))
    raise SystemExit(1)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: NewsletterErrors become a message and exit status 1."""
    try:
        app(args=argv, prog_name="newsletter")
    except NewsletterError as exc:
        _fail(_redacted(str(exc)))
    except KeyboardInterrupt:
        sys.exit(130)


def _redacted(text: str) -> str:
    from newsletter.config import secret_values
    from newsletter.redaction import redact

    return redact(text, secret_values())


def _reported(command: Callable[P, None]) -> Callable[P, None]:
    """No traceback reaches the terminal from this command: an error that is not ours becomes
    one sentence naming its type and its message, secrets redacted (by `main`).

    A traceback would print chained messages too, and a foreign one can quote a header: the
    Authorization header is the API key.
    """

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except (NewsletterError, click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # ours, or click's own way out: already words
        except Exception as exc:
            raise UnexpectedError(
                f"newsletter {command.__name__} stopped on an unexpected error: "
                f"{type(exc).__name__}: {exc}. Rows whose request may have gone out are "
                "marked `unknown`; `newsletter status ISSUE` shows where the send stands. "
                "Please report this error."
            ) from None

    return run


# --- Sending ---------------------------------------------------------------------------------

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from newsletter import dispatch, ledger
    from newsletter.dispatch import Links, SendOptions
    from newsletter.mailers import Mailer
    from newsletter.models import AudienceSpec, DispatchPlan, DispatchReport, RenderedEmail
    from newsletter.stats import EditionStats


@app.command()
@_reported
def send(
    issue: Annotated[Path, typer.Argument(help="The issue file, e.g. issues/2025-12-10.yaml.")],
    list_name: Annotated[
        str | None, typer.Option("--list", help="Send to this list instead of the issue's.")
    ] = None,
    dry_run: Annotated[bool, typer.Option(help="Show the plan; send nothing.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    at: Annotated[
        str | None,
        typer.Option(help="Schedule (SendGrid, ≤72 h ahead), e.g. 2025-12-10T07:00+06:00."),
    ] = None,
    test: Annotated[
        list[str] | None,
        typer.Option("--test", metavar="EMAIL", help="Send one [TEST] copy here (repeatable)."),
    ] = None,
    resend_unknown: Annotated[
        bool, typer.Option(help="Send again to recipients whose earlier request had no answer.")
    ] = False,
    allow_changed: Annotated[
        bool, typer.Option(help="Continue a send although the issue's content changed.")
    ] = False,
) -> None:
    """Send ISSUE to every subscriber on its list who has not had it yet."""
    from dataclasses import replace

    from newsletter import db, dispatch, evidence
    from newsletter.build import check_file
    from newsletter.config import load_settings
    from newsletter.mailers import get_mailer

    settings = load_settings()
    checked = check_file(issue, settings)
    email, audience_spec = checked.email, checked.issue.spec.audience
    spec = replace(audience_spec, list=list_name) if list_name else audience_spec
    mailer = get_mailer(settings)
    if test:  # a test copy is how an editor looks at a blocked issue: not refused
        _send_tests(email, test, mailer, spec.list, settings)
        return
    checked.report.raise_for_errors()
    options = dispatch.SendOptions(
        batch_size=settings.send_batch_size,
        resend_unknown=resend_unknown,
        allow_changed=allow_changed,
        send_at=_parse_at(at) if at else None,
        lease=dt.timedelta(seconds=settings.send_lease),
        rate_limit=settings.send_rate_limit,
    )
    links = _links(settings, spec.list)  # no secret key: say so before any database work
    engine = db.connect(settings)
    if resend_unknown:  # refused before planning: SendGrid's events may yet prove them sent
        evidence.ready_to_resend(engine, email.issue_name, settings.resend_quiet_minutes)
    plan = dispatch.plan_send(engine, email, spec, mailer, options)
    _print_plan(plan)
    if dry_run or plan.to_send == 0:
        return
    if not yes and not typer.confirm(f"Send {email.issue_name} to {plan.to_send} recipients?"):
        raise typer.Exit(1)
    try:
        report = _send_with_progress(engine, email, spec, mailer, links, options, plan)
    except SendInterrupted as stopped:
        again = ["newsletter", "send", str(issue), *(["--list", list_name] if list_name else [])]
        again += [*(["--at", at] if at else []), *(["--allow-changed"] if allow_changed else [])]
        _print_interrupted(stopped, shlex.join([*again, *(["--yes"] if yes else [])]))
        raise SystemExit(130) from None
    _print_dispatch_report(report)


def _print_interrupted(stopped: SendInterrupted, again: str) -> None:
    """What Ctrl-C left, and how to go on: a rerun sends to exactly the pending ones."""
    console = _console(stderr=True)
    console.print("interrupted:", style="bold yellow")
    console.print(f"  sent {stopped.sent} · failed {stopped.failed} in this run")
    console.print(
        f"  {stopped.unknown} in flight marked unknown (SendGrid may have taken them; "
        "not sent again unless you add --resend-unknown)"
    )
    console.print(f"  {stopped.released} given back to pending (their request never left)")
    console.print(f"to continue: {_safe(again, one_line=True)}")


def _parse_at(text: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--at {text!r}: write an ISO time with its zone, e.g. 2025-12-10T07:00+06:00."
        ) from None
    return moment


def _links(settings: Settings, list_name: str) -> Links:
    from newsletter import tokens

    return tokens.unsubscribe_links(settings, list_name)  # fails before sending without a key


def _send_tests(
    email: RenderedEmail, addresses: list[str], mailer: Mailer, list_name: str, settings: Settings
) -> None:
    from newsletter import dispatch
    from newsletter.readers import proof_reader

    readers = [proof_reader(address, settings) for address in addresses]
    results = dispatch.send_tests(email, readers, mailer, list_name)
    console = _console()
    for address, result in zip(addresses, results, strict=False):
        detail = f" ({result.error})" if result.error else ""
        console.print(f"  [TEST] {address}: {result.state}{detail}")


def _send_with_progress(
    engine: Engine,
    email: RenderedEmail,
    spec: AudienceSpec,
    mailer: Mailer,
    links: Links,
    options: SendOptions,
    plan: DispatchPlan,
) -> DispatchReport:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from newsletter import dispatch

    columns = ("{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=_console()) as bar:
        people = bar.add_task("recipients", total=plan.to_send)
        batches = bar.add_task("batches", total=plan.batches)

        def show(report: DispatchReport) -> None:
            done = report.sent + report.failed + report.unknown + report.skipped + report.validated
            bar.update(people, completed=done)
            bar.update(batches, completed=report.batches)

        return dispatch.send_issue(engine, email, spec, mailer, links, options, show)


def _print_plan(plan: DispatchPlan) -> None:
    console = _console()
    when = f" at {plan.send_at.isoformat()}" if plan.send_at else " now"
    console.print(
        f"{plan.issue_name} → list {plan.list_name} via {plan.mailer}{when}", style="bold"
    )
    console.print(
        f"  recipients {plan.recipients} · already sent {plan.already_sent} · "
        f"suppressed {plan.suppressed} · unknown {plan.unknown} · "
        f"to send {plan.to_send} in {plan.batches} batch(es)"
    )


def _print_dispatch_report(report: DispatchReport) -> None:
    console = _console()
    console.print(
        f"sent {report.sent} · failed {report.failed} · unknown {report.unknown} · "
        f"skipped {report.skipped}"
        + (f" · validated {report.validated}" if report.validated else "")
    )
    if report.unknown:
        console.print(
            "unknown: SendGrid may or may not have taken these; they are not retried. "
            "`newsletter status ISSUE --details` lists them; `--resend-unknown` sends again.",
            style="yellow",
        )


@app.command()
def status(
    issue: Annotated[str, typer.Argument(help="The issue name or file, e.g. 2025-12-10.")],
    details: Annotated[
        bool, typer.Option(help="List every unknown, then every failed recipient.")
    ] = False,
) -> None:
    """Summarize the send ledger of ISSUE: progress, live workers, what did not arrive."""
    from newsletter import db, dispatch
    from newsletter.config import load_settings

    settings = load_settings()
    engine = db.connect(settings)
    name = Path(issue).stem
    found = dispatch.status(engine, name)
    report, record = found.report, found.record
    console = _console()
    if record is None:
        console.print(f"{name}: not sent yet.")
        return
    console.print(
        f"{name} · list {record.list_name} · content {record.content_hash[:12]}", style="bold"
    )
    if record.send_at:
        console.print(f"  scheduled for {record.send_at.isoformat()} (batch {record.batch_id})")
    console.print(
        f"  sent {report.sent} · failed {report.failed} · unknown {report.unknown} · "
        f"skipped {report.skipped} · pending {report.pending} · in flight {report.claimed}"
        + (f" · validated {report.validated}" if report.validated else "")
    )
    _print_progress(found)
    _print_workers(found.workers, settings.send_lease)
    if report.unknown:
        waiting = unproven(engine, name)
        console.print(f"  proof: {waiting} of the unknown not yet proven sent by SendGrid events")
    if details:
        _print_undelivered(engine, name, report.unknown + report.failed)


def _print_progress(found: dispatch.Status) -> None:
    report = found.report
    done = report.sent + report.failed + report.unknown + report.skipped
    total = done + report.pending + report.claimed + report.validated + found.new
    share = f" ({100 * done / total:.1f}%)" if total else ""
    _console().print(
        f"  progress: {done} of {total} settled{share}; {found.new} on the list not claimed yet"
    )


def _print_workers(workers: list[ledger.Worker], lease: float) -> None:
    """Unfinished runs; one the lease rule (`ledger.is_dead`) takes for dead is shown as
    such: the next heartbeat of a live worker, or the next send, settles it."""
    console = _console()
    if not workers:
        console.print("  workers: none running")
        return
    console.print(f"  workers: {len(workers)}")
    for worker in workers:
        silent = worker.silence.total_seconds()
        console.print(
            f"    {_safe(worker.host, one_line=True)} pid {worker.pid} · started "
            f"{worker.started_at:%Y-%m-%d %H:%M:%S} UTC · last heartbeat {silent:.0f} s ago · "
            f"sent {worker.sent}{_dead_note(worker, lease)}"
        )


def _dead_note(worker: ledger.Worker, lease: float) -> str:
    from newsletter import ledger

    if not ledger.is_dead(worker.host, worker.pid, worker.silence, dt.timedelta(seconds=lease)):
        return ""
    why = (
        f"silent past the {lease:g} s lease"
        if worker.silence.total_seconds() > lease
        else "its process is gone from this host and it missed two heartbeats"
    )
    return (
        f" · dead ({why}): its claims become unknown at the next worker's heartbeat "
        "or the next send"
    )


def _print_undelivered(engine: Engine, name: str, expected: int) -> None:
    from newsletter import dispatch

    console = _console()
    shown = {"unknown": 0, "failed": 0}
    for row in dispatch.undelivered(engine, name):
        email, error = (_safe(t, one_line=True) for t in (row.email, row.error))
        console.print(f"  {row.state:8} {email}  {error}")
        shown[row.state] += 1
    listed = shown["unknown"] + shown["failed"]
    settled = "" if listed == expected else f" ({expected} when counted above: sends are running)"
    console.print(
        f"  listed {listed}: {shown['unknown']} unknown first, then {shown['failed']} failed"
        f"{settled}"
    )


def unproven(engine: Engine, issue: str) -> int:
    from newsletter import evidence

    return evidence.unproven_count(engine, issue)


@app.command()
def cancel(
    issue: Annotated[str, typer.Argument(help="The issue name or file, e.g. 2025-12-10.")],
) -> None:
    """Cancel the scheduled send of ISSUE (its recipients become pending again)."""
    from newsletter import db, dispatch
    from newsletter.config import load_settings
    from newsletter.mailers import Scheduler, get_mailer

    settings = load_settings()
    mailer = get_mailer(settings)
    if not isinstance(mailer, Scheduler):
        raise UsageError(f"Only the sendgrid mailer schedules sends; this is {mailer.name}.")
    name = Path(issue).stem
    count = dispatch.cancel_send(db.connect(settings), name, mailer)
    _console().print(
        f"cancelled the scheduled send of {name}; {count} recipients are pending again"
    )


# --- The archive ---------------------------------------------------------------------------

archive_app = typer.Typer(no_args_is_help=True, help="The public archive of sent issues.")
app.add_typer(archive_app, name="archive")


@archive_app.command("build")
def archive_build(
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default build/archive), replaced whole.")
    ] = None,
    issue: Annotated[
        list[str] | None,
        typer.Option("--issue", help="Fail unless this issue is in the archive (repeatable)."),
    ] = None,
) -> None:
    """Write the static archive: a page per sent issue, an index and Atom feed per list and
    language, from the copies stored at send time (public lists only, after any embargo)."""
    from newsletter import db, site

    settings = _settings()
    folder = out if out is not None else settings.path("build_dir") / "archive"
    with db.reading(db.connect(settings)) as conn:
        found = site.catalogue(conn, db.now())
        site.require(found, issue or [])
        files = site.files(conn, settings, found)
    site.write(files, folder)
    console = _console()
    for left_out in found.withheld:
        edition = f" ({left_out.edition})" if left_out.edition else ""
        console.print(f"  left out {left_out.issue}{edition}: {left_out.reason}")
    console.print(
        f"Wrote the archive to {folder}: {len(found.entries)} issue pages, "
        f"{len(site.archived_lists(found))} public lists, {len(files)} files."
    )


@app.command()
def stats(
    issue: Annotated[
        str | None, typer.Argument(help="The issue name or file, e.g. 2025-12-10.")
    ] = None,
    last: Annotated[
        int | None, typer.Option(help="Compare the last N issues sent, side by side.")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    html: Annotated[
        Path | None,
        typer.Option(help="Also write a self-contained page of charts for ISSUE here."),
    ] = None,
) -> None:
    """Recipients, delivery, bounces, opens, clicks per link, unsubscribes and spam reports."""
    import json

    from newsletter import db
    from newsletter import stats as figures
    from newsletter.config import load_settings

    if issue is None and last is None:
        raise UsageError("Give either an ISSUE or --last N.")
    if last is not None and last < 1:
        raise UsageError(f"--last {last}: give a number of issues of 1 or more.")
    engine = db.connect(load_settings())
    # With an ISSUE, --last only sets how many issues the --html trend line shows.
    names = [Path(issue).stem] if issue else figures.last_issues(engine, last or 0)
    found = [s for name in names for s in figures.issue_stats(engine, name)]
    if html is not None:
        if not issue:
            raise UsageError("--html draws one issue's charts: give an ISSUE.")
        from newsletter import atomic, statsreport

        page = statsreport.page(engine, names[0], last or 6)
        atomic.write_bytes(html, page.encode("utf-8"), private=False)
        _console(stderr=True).print(f"wrote {html}")
    if json_:
        typer.echo(json.dumps([s.as_json() for s in found], indent=2, ensure_ascii=False))
    elif issue:
        _print_stats(found)
    else:
        _print_side_by_side(found)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{value * 100:.1f}%"


_STAT_ROWS = (
    ("recipients", "recipients"),
    ("sent", "sent"),
    ("delivered", "delivered"),
    ("hard bounces", "hard_bounces"),
    ("soft bounces", "soft_bounces"),
    ("deferred (events)", "deferred"),
    ("unique opens*", "unique_opens"),
    ("unique clicks", "unique_clicks"),
    ("unsubscribes", "unsubscribes"),
    ("spam reports", "spam_reports"),
)


def _print_stats(found: list[EditionStats]) -> None:
    from newsletter.stats import OPENS_CAVEAT

    console = _console()
    for edition in found:
        label = f" · edition {edition.edition}" if edition.edition else ""
        console.print(f"{edition.issue}{label}", style="bold")
        rates = edition.rates
        for title, name in _STAT_ROWS:
            rate = f"  {_percent(rates[name])}" if name in rates else ""
            console.print(f"  {title:18} {getattr(edition, name):>8}{rate}")
        console.print(f"  machine opens left out: {edition.machine_opens}")
        if not edition.links:
            console.print("  clicks per link: none recorded")
        for link in edition.links:
            text = link.text or "(text not found in the stored copy)"
            console.print(f"  {link.unique_clicks:>6}  {text}  {link.url}")
        console.print(f"  * {OPENS_CAVEAT}", style="dim")


def _print_side_by_side(found: list[EditionStats]) -> None:
    from rich.table import Table

    table = Table("", *(s.issue for s in found))
    for title, name in _STAT_ROWS:
        cells = []
        for edition in found:
            rate = edition.rates.get(name)
            shown = f" ({_percent(rate)})" if name in edition.rates else ""
            cells.append(f"{getattr(edition, name)}{shown}")
        table.add_row(title, *cells)
    _console().print(table)
