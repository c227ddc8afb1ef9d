"""Subscriber CSV import (staged, then merged all or nothing) and spreadsheet-safe export.

An import runs in two steps on one connection:

1. *Stage*: the file is streamed, every row validated and normalized, and the good rows
   written to a temporary table; duplicates are found there by SQL, so memory stays
   bounded however long the file is. Nothing outside the temporary table is touched, and
   no lock on the real tables is held while the file is read.
2. *Merge*: one write transaction applies the staged rows to subscribers, memberships
   and suppressions, page by page. Any failure rolls the whole import back.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    cast,
    exists,
    false,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, Engine

from newsletter import audience, db, inputfile
from newsletter.errors import AudienceError, ImportFileError, UnreadableFileError
from newsletter.schema import ALL_LISTS, memberships, subscribers, suppressions

Mode = Literal["subscribe", "unsubscribe", "suppress"]
MODES: tuple[Mode, ...] = ("subscribe", "unsubscribe", "suppress")
KNOWN = ("email", "name", "locale")
BATCH = 5000
MAX_LISTED_REJECTIONS = 10_000  # the count is always exact; the list stops here
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
# The export's guard: a leading ' before a trigger, and before a value that itself starts
# with ', so that undoing it (for a file we exported) gives back exactly what was stored.
GUARDED = (*SPREADSHEET_TRIGGERS, "'")


@dataclass(frozen=True)
class Rejection:
    line: int
    reason: str


@dataclass
class ImportReport:
    file: Path
    list_name: str
    mode: Mode
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0
    rejections: list[Rejection] = field(default_factory=list)

    def reject(self, line: int, reason: str) -> None:
        self.rejected += 1
        if len(self.rejections) < MAX_LISTED_REJECTIONS:
            self.rejections.append(Rejection(line, reason))


@dataclass(frozen=True)
class _Header:
    columns: tuple[str, ...]  # as named in the file; known ones in lower case

    @property
    def attribute_columns(self) -> tuple[int, ...]:
        return tuple(i for i, name in enumerate(self.columns) if name not in KNOWN)


def _stage_table() -> Table:
    return Table(
        "newsletter_import_stage",
        MetaData(),
        Column("line", Integer, primary_key=True),
        Column("public_id", String(32), nullable=False),  # used if the address is new
        Column("email", String(320), nullable=False, index=True),
        Column("name", String(200), nullable=False),
        Column("locale", String(35), nullable=False),
        Column("attributes", Text, nullable=False),  # JSON object of the non-empty cells
        prefixes=["TEMPORARY"],
    )


def import_csv(
    engine: Engine,
    path: Path,
    list_name: str,
    mode: Mode = "subscribe",
    confirmed: bool = False,
    exported: bool = False,
) -> ImportReport:
    """Import a subscriber CSV into a list; all or nothing. Returns the counts and rejections.

    Cells are kept as written (trimmed). Only with `exported` (the file is our own export)
    is the export's spreadsheet guard taken off again, so export -> import is lossless
    while a value that genuinely starts with ' and '=' in a hand-made file stays as is.
    """
    if mode not in MODES:
        raise AudienceError(f"Unknown import mode {mode!r}; use one of {', '.join(MODES)}.")
    report = ImportReport(path, list_name, mode)
    stage = _stage_table()
    with db.errors(engine), engine.connect() as conn:
        with conn.begin():
            lid = audience.list_id(conn, list_name)
            # A pooled connection may still hold the table from an import that died.
            stage.drop(conn, checkfirst=True)
            stage.create(conn)
        try:
            with conn.begin():
                _stage_file(conn, stage, path, report, exported)
                _reject_duplicates(conn, stage, report)
            conn.execution_options(newsletter_write=True)
            with conn.begin():
                _merge(conn, stage, lid, mode, confirmed, report)
        finally:
            if not conn.invalidated:
                with conn.begin():
                    stage.drop(conn, checkfirst=True)
    report.rejections.sort(key=lambda r: r.line)
    return report


# --- Step 1: read, validate, stage ----------------------------------------------------


def _records(handle: TextIO, path: Path) -> Iterator[tuple[int, list[str]]]:
    """(first line number, cells) for each CSV record; quoted newlines span lines."""
    reader = csv.reader(handle, strict=True)
    while True:
        line = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            if "field larger than field limit" in str(exc):
                raise ImportFileError(
                    path,
                    f"a cell is longer than {csv.field_size_limit():,} characters, the most "
                    "one cell may hold. Shorten it; if no cell should be that long, a quote "
                    "opened on that line is never closed.",
                    line,
                ) from exc
            raise ImportFileError(
                path, f"the file is not valid CSV ({exc}). Fix the quoting on that line.", line
            ) from exc
        except UnicodeDecodeError as exc:
            # The decoder reads ahead in blocks, so the line is only near the bad bytes.
            raise ImportFileError(
                path,
                f"near line {line}, the file is not UTF-8 ({exc.reason}). "
                "Save it as UTF-8 (with or without BOM).",
            ) from exc
        if cells:
            yield line, cells


def _read_header(path: Path, records: Iterator[tuple[int, list[str]]], exported: bool) -> _Header:
    first = next(records, None)
    if first is None:
        raise ImportFileError(path, "the file is empty; it needs a header row naming columns.")
    columns: list[str] = []
    for cell in first[1]:
        name = unneutralize(cell.strip()) if exported else cell.strip()
        known = name.lower() if name.lower() in KNOWN else name
        if not name:
            raise ImportFileError(
                path, "a column in the header row has no name; name it or remove it.", first[0]
            )
        if known in columns:
            raise ImportFileError(
                path, f"the column {name!r} appears twice; keep one of them.", first[0]
            )
        if "\x00" in name:
            raise ImportFileError(
                path,
                f"column {len(columns) + 1} of the header row contains a NUL character "
                "(\\x00), which the database cannot store; remove it.",
                first[0],
            )
        columns.append(known)
    if "email" not in columns:
        raise ImportFileError(
            path,
            f"the header row has no 'email' column (found: {', '.join(columns)}). "
            "The first row must name the columns.",
            first[0],
        )
    return _Header(tuple(columns))


def _stage_file(
    conn: Connection, stage: Table, path: Path, report: ImportReport, exported: bool
) -> None:
    try:
        raw = inputfile.open_regular(path)  # no byte cap: a list can have millions of rows
    except UnreadableFileError as exc:
        raise ImportFileError(exc.path, f"{exc.reason}.") from exc
    with io.TextIOWrapper(raw, encoding="utf-8-sig", newline="") as handle:
        records = _records(handle, path)
        header = _read_header(path, records, exported)
        write = _stage_writer(conn, stage)
        batch: list[tuple[Any, ...]] = []
        for line, cells in records:
            row = _staged_row(header, line, cells, report, exported)
            if row is not None:
                batch.append(row)
            if len(batch) >= BATCH:
                write(batch)
                batch = []
        if batch:
            write(batch)
    if conn.dialect.name == "postgresql":
        # Autovacuum never sees temporary tables; without statistics the merge plans badly.
        conn.exec_driver_sql(f"ANALYZE {stage.name}")


def _stage_writer(conn: Connection, stage: Table) -> Callable[[list[tuple[Any, ...]]], None]:
    """Rows straight to the driver: SQLAlchemy's per-row parameter handling would cost more
    than the validation itself on a million rows. PostgreSQL gets COPY."""
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        # bandit B101: a live connection inside a transaction has a driver connection.
        assert driver is not None  # a live connection inside a transaction  # nosec B101

        def copy(rows: list[tuple[Any, ...]]) -> None:
            with driver.cursor() as cursor, cursor.copy(f"COPY {stage.name} FROM STDIN") as pipe:
                for row in rows:
                    pipe.write_row(row)

        return copy
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    placeholders = ", ".join([mark] * len(stage.columns))
    # bandit B608: the table name is our constant and every value is a bound parameter.
    sql = f"INSERT INTO {stage.name} VALUES ({placeholders})"  # noqa: S608  # nosec B608

    def insert_many(rows: list[tuple[Any, ...]]) -> None:
        conn.exec_driver_sql(sql, rows)

    return insert_many


def unneutralize(cell: str) -> str:
    """Undo `neutralize`: only for a file that `export_csv` wrote (see import_csv)."""
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(GUARDED) else cell


def _staged_row(
    header: _Header, line: int, cells: list[str], report: ImportReport, exported: bool
) -> tuple[Any, ...] | None:
    if len(cells) != len(header.columns):
        report.reject(line, f"has {len(cells)} cells; the header names {len(header.columns)}")
        return None
    if "\x00" in "".join(cells):  # one C-level scan per row: imports run to millions of rows
        # PostgreSQL cannot store NUL in text or JSON; refused here, not at the next send.
        nul = next(i for i, cell in enumerate(cells) if "\x00" in cell)
        report.reject(
            line,
            f"column {nul + 1} ({header.columns[nul]!r}) contains a NUL character (\\x00), "
            "which the database cannot store; remove it",
        )
        return None
    kept = (c.strip() for c in cells)
    values = dict(zip(header.columns, map(unneutralize, kept) if exported else kept, strict=True))
    try:
        email = audience.normalize_email(values["email"])
        name = audience.check_header_text("name", values.get("name", ""), audience.MAX_NAME)
        locale = audience.check_header_text("locale", values.get("locale", ""), audience.MAX_LOCALE)
    except AudienceError as exc:
        shown = values["email"][:80].encode("unicode_escape").decode("ascii")
        report.reject(line, f"{shown or '(no address)'}: {exc}")
        return None
    attributes = {
        header.columns[i]: values[header.columns[i]]
        for i in header.attribute_columns
        if values[header.columns[i]]
    }
    encoded = json.dumps(attributes, ensure_ascii=False) if attributes else "{}"
    return (line, audience.new_public_id(), email, name, locale, encoded)


def _reject_duplicates(conn: Connection, stage: Table, report: ImportReport) -> None:
    first = stage.alias("first")
    later = stage.alias("later")
    query = (
        select(later.c.line, later.c.email, func.min(first.c.line))
        .join(first, and_(first.c.email == later.c.email, first.c.line < later.c.line))
        .group_by(later.c.line, later.c.email)
    )
    duplicates = conn.execute(query).all()
    for line, email, original in duplicates:
        report.reject(line, f"{email}: duplicate of line {original} (addresses ignore case)")
    lines = [d[0] for d in duplicates]
    for start in range(0, len(lines), BATCH):
        conn.execute(stage.delete().where(stage.c.line.in_(lines[start : start + BATCH])))


# --- Step 2: merge, set-based where it can be ---------------------------------------


def _merge(
    conn: Connection, stage: Table, lid: int, mode: Mode, confirmed: bool, report: ImportReport
) -> None:
    stamp = db.now()
    if mode == "subscribe":
        _reject_blocked(conn, stage, lid, report)
        _update_existing(conn, stage, lid, confirmed, report, stamp)
        report.added = _insert_new(conn, stage, confirmed, stamp)
        _add_memberships(conn, stage, lid, confirmed, report, stamp)
    else:
        _leave(conn, stage, lid, mode, report, stamp)


def _reject_blocked(conn: Connection, stage: Table, lid: int, report: ImportReport) -> None:
    """An import never overrides an unsubscribe or a suppression: those rows are rejected."""
    reason = (
        select(func.min(suppressions.c.reason))
        .where(
            suppressions.c.email == stage.c.email,
            suppressions.c.scope.in_([ALL_LISTS, report.list_name]),
        )
        .scalar_subquery()
    )
    left = (
        select(memberships.c.status)
        .join(subscribers, subscribers.c.id == memberships.c.subscriber_id)
        .where(
            subscribers.c.email == stage.c.email,
            memberships.c.list_id == lid,
            memberships.c.status == "unsubscribed",
        )
        .exists()
    )
    blocked = or_(reason.is_not(None), left)
    query = select(stage.c.line, stage.c.email, reason).where(blocked).order_by(stage.c.line)
    for line, email, why in conn.execute(query).all():
        if why:
            report.reject(line, f"{email}: suppressed ({why}); an import does not override that")
        else:
            report.reject(
                line,
                f"{email}: unsubscribed from {report.list_name!r}; an import does not resubscribe",
            )
    conn.execute(stage.delete().where(blocked))


def _update_existing(
    conn: Connection,
    stage: Table,
    lid: int,
    confirmed: bool,
    report: ImportReport,
    stamp: dt.datetime,
) -> None:
    """Count known addresses as updated or unchanged; write their changed fields."""
    query = (
        select(
            stage.c.line,
            stage.c.name,
            stage.c.locale,
            stage.c.attributes,
            subscribers.c.id.label("sid"),
            subscribers.c.name.label("old_name"),
            subscribers.c.locale.label("old_locale"),
            subscribers.c.attributes.label("old_attributes"),
            memberships.c.status,
        )
        .join(subscribers, subscribers.c.email == stage.c.email)
        .outerjoin(
            memberships,
            and_(memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == lid),
        )
        .order_by(stage.c.line)
        .limit(BATCH)
    )
    after = 0
    while rows := conn.execute(query.where(stage.c.line > after)).all():
        updates = [_field_update(row) for row in rows]
        changed = [u for u in updates if u]
        if changed:
            conn.execute(_UPDATE_FIELDS.values(updated_at=stamp), changed)
        for row, fields in zip(rows, updates, strict=True):
            joins = row.status is None or (row.status == "unconfirmed" and confirmed)
            if fields or joins:
                report.updated += 1
            else:
                report.unchanged += 1
        after = rows[-1].line


_UPDATE_FIELDS = (
    update(subscribers)
    .where(subscribers.c.id == bindparam("b_sid"))
    .values(
        name=bindparam("b_name"),
        locale=bindparam("b_locale"),
        attributes=bindparam("b_attributes", type_=subscribers.c.attributes.type),
    )
)


def _field_update(row: Any) -> dict[str, Any] | None:
    # Empty cells leave stored values alone: a partial file must not erase data.
    merged = {
        "b_name": row.name or row.old_name,
        "b_locale": row.locale or row.old_locale,
        "b_attributes": {**row.old_attributes, **json.loads(row.attributes)},
    }
    old = {"b_name": row.old_name, "b_locale": row.old_locale, "b_attributes": row.old_attributes}
    return None if merged == old else {"b_sid": row.sid, **merged}


def _insert_new(conn: Connection, stage: Table, confirmed: bool, stamp: dt.datetime) -> int:
    # The staged text is already JSON: PostgreSQL needs a cast, SQLite stores the text as is.
    attributes = (
        cast(stage.c.attributes, JSON)
        if conn.dialect.name == "postgresql"
        else type_coerce(stage.c.attributes, JSON)
    )
    unknown = ~exists().where(subscribers.c.email == stage.c.email)
    # Counted first: drivers disagree on the rowcount of INSERT ... SELECT.
    added = _count(conn, select(func.count()).select_from(stage).where(unknown))
    new = (
        select(
            stage.c.public_id,
            stage.c.email,
            stage.c.name,
            stage.c.locale,
            attributes,
            _when(stamp),
            _when(stamp),
            _when(stamp) if confirmed else null(),
        )
        .where(unknown)
        .order_by(stage.c.line)  # ids in file order, so an export lists them in that order
    )
    columns = [
        "public_id", "email", "name", "locale", "attributes",
        "created_at", "updated_at", "confirmed_at",
    ]  # fmt: skip
    conn.execute(insert(subscribers).from_select(columns, new))
    return added


def _when(stamp: dt.datetime) -> Any:
    return literal(stamp, DateTime(timezone=True))


def _add_memberships(
    conn: Connection,
    stage: Table,
    lid: int,
    confirmed: bool,
    report: ImportReport,
    stamp: dt.datetime,
) -> None:
    status = "confirmed" if confirmed else "unconfirmed"
    staged_ids = select(subscribers.c.id).join(stage, stage.c.email == subscribers.c.email)
    missing = ~exists().where(
        memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == lid
    )
    rows = staged_ids.add_columns(
        literal(lid),
        literal(status),
        literal(f"import:{report.file.name}"[:64]),
        _when(stamp),
        _when(stamp),
        _when(stamp) if confirmed else null(),
    ).where(missing)
    columns = [
        "subscriber_id", "list_id", "status", "source", "created_at", "updated_at", "confirmed_at",
    ]  # fmt: skip
    conn.execute(insert(memberships).from_select(columns, rows))
    if confirmed:
        conn.execute(
            update(memberships)
            .where(
                memberships.c.list_id == lid,
                memberships.c.status == "unconfirmed",
                memberships.c.subscriber_id.in_(staged_ids),
            )
            .values(status="confirmed", confirmed_at=stamp, updated_at=stamp)
        )
        conn.execute(
            update(subscribers)
            .where(subscribers.c.confirmed_at.is_(None), subscribers.c.id.in_(staged_ids))
            .values(confirmed_at=stamp)
        )


def _leave(
    conn: Connection, stage: Table, lid: int, mode: Mode, report: ImportReport, stamp: dt.datetime
) -> None:
    """Unsubscribe from the list (unsubscribe) or from everything (suppress), and record it."""
    unsubscribing = mode == "unsubscribe"
    scope = report.list_name if unsubscribing else ALL_LISTS
    already = exists().where(
        suppressions.c.email == stage.c.email,
        suppressions.c.scope.in_({ALL_LISTS, scope}),
    )
    staged_ids = select(subscribers.c.id).join(stage, stage.c.email == subscribers.c.email)
    leaving = and_(
        memberships.c.list_id == lid,
        memberships.c.status != "unsubscribed",
        memberships.c.subscriber_id.in_(staged_ids),
    )
    leaving_row = (
        exists().where(
            memberships.c.subscriber_id == subscribers.c.id,
            subscribers.c.email == stage.c.email,
            memberships.c.list_id == lid,
            memberships.c.status != "unsubscribed",
        )
        if unsubscribing
        else false()
    )
    staged = select(func.count()).select_from(stage)
    total = _count(conn, staged)
    report.updated = _count(conn, staged.where(leaving_row))
    report.added = _count(conn, staged.where(~leaving_row, ~already))
    report.unchanged = total - report.added - report.updated
    if unsubscribing:
        conn.execute(
            update(memberships)
            .where(leaving)
            .values(status="unsubscribed", unsubscribed_at=stamp, updated_at=stamp)
        )
    # An import is an editor's act, whichever mode: `manual`, which the subscriber's own
    # resubscribe link cannot undo; their own `unsubscribed` row of this scope is upgraded.
    conn.execute(
        update(suppressions)
        .where(
            suppressions.c.email.in_(select(stage.c.email)),
            suppressions.c.scope == scope,
            suppressions.c.reason == "unsubscribed",
        )
        .values(reason="manual", detail=f"import {report.file.name}")
    )
    new = select(
        stage.c.email,
        literal(scope),
        literal("manual"),
        _when(stamp),
        literal(f"import {report.file.name}"),
    ).where(~already)
    columns = ["email", "scope", "reason", "created_at", "detail"]
    conn.execute(insert(suppressions).from_select(columns, new))


def _count(conn: Connection, query: Any) -> int:
    return int(conn.execute(query).scalar_one())


# --- Export ---------------------------------------------------------------------------


def neutralize(cell: str) -> str:
    """Keep a spreadsheet from reading a cell as a formula (CSV injection); a value that
    starts with ' is guarded too, so `unneutralize` can tell guard from value."""
    return "'" + cell if cell.startswith(GUARDED) else cell


def _export_query(conn: Connection, list_name: str | None, statuses: Sequence[str]) -> Any:
    query = select(subscribers).order_by(subscribers.c.id).limit(BATCH)
    if list_name is not None:
        lid = audience.list_id(conn, list_name)
        members = select(memberships.c.subscriber_id).where(
            memberships.c.list_id == lid, memberships.c.status.in_(statuses)
        )
        query = query.where(subscribers.c.id.in_(members))
    return query


def _pages(conn: Connection, query: Any) -> Iterator[Any]:
    after = 0
    while True:
        rows = conn.execute(query.where(subscribers.c.id > after)).all()
        yield from rows
        if len(rows) < BATCH:
            return
        after = rows[-1].id


def export_csv(
    conn: Connection,
    out: TextIO,
    list_name: str | None = None,
    statuses: Sequence[str] = ("confirmed", "unconfirmed"),
) -> int:
    """Write subscribers as CSV (one column per attribute); returns the number of rows.

    Two passes over the table: the first finds the attribute columns, so memory stays
    bounded by the number of distinct attribute names, not subscribers.
    """
    query = _export_query(conn, list_name, statuses)
    keys = sorted({key for row in _pages(conn, query) for key in row.attributes})
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([neutralize(c) for c in (*KNOWN, *keys)])
    count = 0
    for row in _pages(conn, query):
        cells = [row.email, row.name, row.locale, *(row.attributes.get(k, "") for k in keys)]
        writer.writerow([neutralize(str(c)) for c in cells])
        count += 1
    return count
