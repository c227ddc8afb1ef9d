"""The `newsletter` command line: the only module that prints."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from newsletter import audience, db
from newsletter.audience_csv import MODES, Mode, export_csv, import_csv
from newsletter.config import Settings, load_settings
from newsletter.errors import AudienceError, NewsletterError

app = typer.Typer(no_args_is_help=True, help="Weekly digest: build, check, send.")
subscribers_app = typer.Typer(no_args_is_help=True, help="Subscribers: import, export, add, show.")
lists_app = typer.Typer(no_args_is_help=True, help="Mailing lists.")
db_app = typer.Typer(no_args_is_help=True, help="The database schema.")
app.add_typer(subscribers_app, name="subscribers")
app.add_typer(lists_app, name="lists")
app.add_typer(db_app, name="db")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

ListOption = Annotated[str, typer.Option("--list", "-l", help="The list's name.")]


def settings(**overrides: Any) -> Settings:
    return load_settings(overrides=overrides)


def say(text: str) -> None:
    out.print(text, markup=False, soft_wrap=True)


# --- db -------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create the database or upgrade it to the newest schema (keeps every row)."""
    engine = db.connect(settings())
    say(f"Database {db.masked(str(engine.url))} is at revision {db.current_revision(engine)}.")


# --- lists ----------------------------------------------------------------------------


@lists_app.command("create")
def lists_create(
    name: str, title: Annotated[str, typer.Option(help="A title for people.")] = ""
) -> None:
    """Create a mailing list."""
    with db.writing(db.connect(settings())) as conn:
        audience.create_list(conn, name, title)
    say(f"Created list {name}.")


def _list_table(infos: list[audience.ListInfo]) -> Table:
    table = Table("list", "title", "confirmed", "unconfirmed", "unsubscribed", "created")
    for info in infos:
        table.add_row(
            info.name,
            info.title,
            *(str(info.counts.get(s, 0)) for s in ("confirmed", "unconfirmed", "unsubscribed")),
            f"{info.created_at:%Y-%m-%d}",
        )
    return table


@lists_app.command("list")
def lists_list() -> None:
    """Every list with its member counts."""
    with db.reading(db.connect(settings())) as conn:
        out.print(_list_table(audience.all_lists(conn)))


@lists_app.command("show")
def lists_show(name: str) -> None:
    """One list with its member counts."""
    with db.reading(db.connect(settings())) as conn:
        out.print(_list_table([audience.get_list(conn, name)]))


# --- subscribers ----------------------------------------------------------------------


@subscribers_app.command("import")
def subscribers_import(
    file: Annotated[Path, typer.Argument(help="CSV with a header row; 'email' required.")],
    list_name: ListOption = "weekly",
    mode: Annotated[str, typer.Option(help="subscribe | unsubscribe | suppress")] = "subscribe",
    confirmed: Annotated[bool, typer.Option(help="Mark new members confirmed.")] = False,
) -> None:
    """Import subscribers from CSV, all or nothing."""
    if mode not in MODES:
        raise AudienceError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}.")
    chosen: Mode = mode  # checked just above
    report = import_csv(db.connect(settings()), file, list_name, chosen, confirmed)
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
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File; default stdout.")]
    = None,
    include_unsubscribed: bool = False,
) -> None:
    """Export subscribers as spreadsheet-safe CSV (UTF-8 with BOM when written to a file)."""
    statuses = ["confirmed", "unconfirmed"] + (["unsubscribed"] if include_unsubscribed else [])
    with db.reading(db.connect(settings())) as conn:
        if output is None:
            export_csv(conn, sys.stdout, list_name, statuses)
            return
        partial = output.with_name(output.name + ".partial")
        with partial.open("w", encoding="utf-8-sig", newline="") as handle:
            count = export_csv(conn, handle, list_name, statuses)
        os.replace(partial, output)  # a reader never sees half a file
    err.print(f"Wrote {count} subscribers to {output}.", markup=False)


@subscribers_app.command("add")
def subscribers_add(
    email: str,
    list_name: ListOption = "weekly",
    name: str = "",
    locale: str = "",
    confirmed: Annotated[bool, typer.Option(help="Skip double opt-in.")] = False,
) -> None:
    """Add one address to a list."""
    with db.writing(db.connect(settings())) as conn:
        public_id = audience.add_subscriber(
            conn, email, list_name, name=name, locale=locale, confirmed=confirmed
        )
    say(f"{audience.normalize_email(email)} is on {list_name} (id {public_id}).")


@subscribers_app.command("remove")
def subscribers_remove(email: str, list_name: ListOption = "weekly") -> None:
    """Unsubscribe an address from a list; it stays suppressed there."""
    with db.writing(db.connect(settings())) as conn:
        changed = audience.remove_subscriber(conn, email, list_name)
    state = "is now" if changed else "was already"
    say(f"{audience.normalize_email(email)} {state} unsubscribed from {list_name}.")


@subscribers_app.command("show")
def subscribers_show(email: str) -> None:
    """Everything stored about one address."""
    with db.reading(db.connect(settings())) as conn:
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
        table.add_row(label, value)
    out.print(table)


@subscribers_app.command("list")
def subscribers_list(
    list_name: ListOption = "weekly",
    status: Annotated[str | None, typer.Option(help="confirmed | unconfirmed | unsubscribed")]
    = None,
    limit: int = 100,
) -> None:
    """Members of a list, oldest first."""
    with db.reading(db.connect(settings())) as conn:
        rows = audience.subscribers_in(conn, list_name, status, limit)
    table = Table("email", "name", "locale", "status", "id")
    for row in rows:
        table.add_row(row.email, row.name, row.locale, row.status, row.public_id)
    out.print(table)


# --- serve ----------------------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="Default 127.0.0.1 (setting serve_host).")]
    = None,
    port: Annotated[int | None, typer.Option(help="Default 8025 (setting serve_port).")] = None,
) -> None:
    """Serve unsubscribe, resubscribe and double opt-in pages."""
    import uvicorn

    from newsletter.web import create_app

    chosen = settings(serve_host=host, serve_port=port)
    uvicorn.run(create_app(chosen), host=chosen.serve_host, port=chosen.serve_port)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: a NewsletterError is a message and exit status 1, no traceback."""
    try:
        app(args=argv, prog_name="newsletter")
    except NewsletterError as exc:
        err.print(f"error: {exc}", markup=False, soft_wrap=True)
        sys.exit(1)
