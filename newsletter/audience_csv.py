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
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    bindparam,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine

from newsletter import audience, db
from newsletter.errors import AudienceError, ImportFileError
from newsletter.schema import ALL_LISTS, memberships, subscribers, suppressions

Mode = Literal["subscribe", "unsubscribe", "suppress"]
MODES: tuple[Mode, ...] = ("subscribe", "unsubscribe", "suppress")
KNOWN = ("email", "name", "locale")
BATCH = 5000
MAX_LISTED_REJECTIONS = 10_000  # the count is always exact; the list stops here
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


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
) -> ImportReport:
    """Import a subscriber CSV into a list; all or nothing. Returns the counts and rejections."""
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
                _stage_file(conn, stage, path, report)
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
            raise ImportFileError(
                f"{path}:{line}: the file is not valid CSV ({exc}). "
                "Fix the quoting on that line; nothing was imported."
            ) from exc
        except UnicodeDecodeError as exc:
            raise ImportFileError(
                f"{path}: near line {line}: the file is not UTF-8 ({exc.reason}). "
                "Save it as UTF-8 (with or without BOM); nothing was imported."
            ) from exc
        if cells:
            yield line, cells


def _read_header(path: Path, records: Iterator[tuple[int, list[str]]]) -> _Header:
    first = next(records, None)
    if first is None:
        raise ImportFileError(f"{path}: the file is empty; it needs a header row naming columns.")
    columns: list[str] = []
    for cell in first[1]:
        name = cell.strip()
        known = name.lower() if name.lower() in KNOWN else name
        if not name:
            raise ImportFileError(f"{path}:{first[0]}: a column in the header row has no name.")
        if known in columns:
            raise ImportFileError(f"{path}:{first[0]}: the column {name!r} appears twice.")
        columns.append(known)
    if "email" not in columns:
        raise ImportFileError(
            f"{path}:{first[0]}: the header row has no 'email' column "
            f"(found: {', '.join(columns)}). The first row must name the columns."
        )
    return _Header(tuple(columns))


def _stage_file(conn: Connection, stage: Table, path: Path, report: ImportReport) -> None:
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot open the file ({exc.strerror}).") from exc
    with handle:
        records = _records(handle, path)
        header = _read_header(path, records)
        batch: list[dict[str, Any]] = []
        for line, cells in records:
            row = _staged_row(header, line, cells, report)
            if row is not None:
                batch.append(row)
            if len(batch) >= BATCH:
                conn.execute(insert(stage), batch)
                batch = []
        if batch:
            conn.execute(insert(stage), batch)


def unneutralize(cell: str) -> str:
    """Undo the export's spreadsheet guard, so export -> import gives back the same value."""
    if len(cell) > 1 and cell[0] == "'" and cell[1] in SPREADSHEET_TRIGGERS:
        return cell[1:]
    return cell


def _staged_row(
    header: _Header, line: int, cells: list[str], report: ImportReport
) -> dict[str, Any] | None:
    if len(cells) != len(header.columns):
        report.reject(line, f"has {len(cells)} cells; the header names {len(header.columns)}")
        return None
    values = dict(zip(header.columns, (unneutralize(c.strip()) for c in cells), strict=True))
    try:
        email = audience.normalize_email(values["email"])
        name = audience.check_header_text("name", values.get("name", ""), audience.MAX_NAME)
        locale = audience.check_header_text(
            "locale", values.get("locale", ""), audience.MAX_LOCALE
        )
    except AudienceError as exc:
        shown = values["email"][:80].encode("unicode_escape").decode("ascii")
        report.reject(line, f"{shown or '(no address)'}: {exc}")
        return None
    attributes = {
        header.columns[i]: values[header.columns[i]]
        for i in header.attribute_columns
        if values[header.columns[i]]
    }
    return {
        "line": line,
        "email": email,
        "name": name,
        "locale": locale,
        "attributes": json.dumps(attributes, ensure_ascii=False, sort_keys=True),
    }


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


# --- Step 2: merge --------------------------------------------------------------------


@dataclass
class _Changes:
    new_subscribers: list[dict[str, Any]] = field(default_factory=list)
    new_members: list[dict[str, Any]] = field(default_factory=list)  # by email, after insert
    subscriber_updates: list[dict[str, Any]] = field(default_factory=list)
    member_inserts: list[dict[str, Any]] = field(default_factory=list)
    member_confirms: list[dict[str, Any]] = field(default_factory=list)
    member_unsubscribes: list[dict[str, Any]] = field(default_factory=list)
    new_suppressions: list[dict[str, Any]] = field(default_factory=list)


def _merge(
    conn: Connection,
    stage: Table,
    lid: int,
    mode: Mode,
    confirmed: bool,
    report: ImportReport,
) -> None:
    stamp = audience.now()
    after = 0
    while True:
        rows = conn.execute(_page_query(stage, lid, report.list_name, mode, after)).all()
        if not rows:
            return
        changes = _Changes()
        for row in rows:
            _classify(row, lid, mode, confirmed, stamp, report, changes)
        _apply(conn, changes, stamp)
        after = rows[-1].line


def _page_query(stage: Table, lid: int, list_name: str, mode: Mode, after: int) -> Any:
    scopes = [ALL_LISTS] if mode == "suppress" else [ALL_LISTS, list_name]
    suppressed = (
        select(func.min(suppressions.c.reason))
        .where(suppressions.c.email == stage.c.email, suppressions.c.scope.in_(scopes))
        .scalar_subquery()
    )
    return (
        select(
            stage,
            subscribers.c.id.label("sid"),
            subscribers.c.name.label("old_name"),
            subscribers.c.locale.label("old_locale"),
            subscribers.c.attributes.label("old_attributes"),
            memberships.c.status,
            suppressed.label("suppressed"),
        )
        .outerjoin(subscribers, subscribers.c.email == stage.c.email)
        .outerjoin(
            memberships,
            and_(memberships.c.subscriber_id == subscribers.c.id, memberships.c.list_id == lid),
        )
        .where(stage.c.line > after)
        .order_by(stage.c.line)
        .limit(BATCH)
    )


def _classify(
    row: Any,
    lid: int,
    mode: Mode,
    confirmed: bool,
    stamp: dt.datetime,
    report: ImportReport,
    changes: _Changes,
) -> None:
    if mode == "subscribe":
        _classify_subscribe(row, lid, confirmed, stamp, report, changes)
    else:
        _classify_suppress(row, lid, mode, stamp, report, changes)


def _classify_subscribe(
    row: Any,
    lid: int,
    confirmed: bool,
    stamp: dt.datetime,
    report: ImportReport,
    changes: _Changes,
) -> None:
    if row.suppressed:
        reason = f"suppressed ({row.suppressed}); an import does not override that"
        report.reject(row.line, f"{row.email}: {reason}")
        return
    if row.status == "unsubscribed":
        reason = f"unsubscribed from {report.list_name!r}; an import does not resubscribe"
        report.reject(row.line, f"{row.email}: {reason}")
        return
    status = "confirmed" if confirmed else "unconfirmed"
    attributes = json.loads(row.attributes)
    if row.sid is None:
        changes.new_subscribers.append(
            {
                "public_id": audience.new_public_id(),
                "email": row.email,
                "name": row.name,
                "locale": row.locale,
                "attributes": attributes,
                "created_at": stamp,
                "updated_at": stamp,
                "confirmed_at": stamp if confirmed else None,
            }
        )
        changes.new_members.append(_membership(0, lid, status, stamp, report))
        report.added += 1
        return
    changed = _subscriber_update(row, attributes, changes)
    if row.status is None:
        changes.member_inserts.append(_membership(row.sid, lid, status, stamp, report))
        changed = True
    elif row.status == "unconfirmed" and confirmed:
        changes.member_confirms.append({"b_sid": row.sid, "b_lid": lid})
        changed = True
    if changed:
        report.updated += 1
    else:
        report.unchanged += 1


def _subscriber_update(row: Any, attributes: dict[str, str], changes: _Changes) -> bool:
    # Empty cells leave stored values alone: a partial file must not erase data.
    merged = {
        "b_name": row.name or row.old_name,
        "b_locale": row.locale or row.old_locale,
        "b_attributes": {**row.old_attributes, **attributes},
    }
    if (merged["b_name"], merged["b_locale"], merged["b_attributes"]) == (
        row.old_name,
        row.old_locale,
        row.old_attributes,
    ):
        return False
    changes.subscriber_updates.append({"b_sid": row.sid, **merged})
    return True


def _membership(
    sid: int, lid: int, status: str, stamp: dt.datetime, report: ImportReport
) -> dict[str, Any]:
    return {
        "subscriber_id": sid,
        "list_id": lid,
        "status": status,
        "source": f"import:{report.file.name}"[:64],
        "created_at": stamp,
        "updated_at": stamp,
        "confirmed_at": stamp if status == "confirmed" else None,
        "unsubscribed_at": None,
    }


def _classify_suppress(
    row: Any,
    lid: int,
    mode: Mode,
    stamp: dt.datetime,
    report: ImportReport,
    changes: _Changes,
) -> None:
    leaves_list = mode == "unsubscribe" and row.status in ("unconfirmed", "confirmed")
    if leaves_list:
        changes.member_unsubscribes.append({"b_sid": row.sid, "b_lid": lid})
    if not row.suppressed:
        changes.new_suppressions.append(
            {
                "email": row.email,
                "scope": report.list_name if mode == "unsubscribe" else ALL_LISTS,
                "reason": "unsubscribed" if mode == "unsubscribe" else "manual",
                "created_at": stamp,
                "detail": f"import {report.file.name} line {row.line}",
            }
        )
    if leaves_list:
        report.updated += 1
    elif not row.suppressed:
        report.added += 1
    else:
        report.unchanged += 1


def _apply(conn: Connection, changes: _Changes, stamp: dt.datetime) -> None:
    if changes.new_subscribers:
        ids = conn.execute(
            insert(subscribers).returning(subscribers.c.id, sort_by_parameter_order=True),
            changes.new_subscribers,
        ).scalars().all()
        for member, sid in zip(changes.new_members, ids, strict=True):
            member["subscriber_id"] = sid
        changes.member_inserts.extend(changes.new_members)
    if changes.subscriber_updates:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == bindparam("b_sid"))
            .values(
                name=bindparam("b_name"),
                locale=bindparam("b_locale"),
                attributes=bindparam("b_attributes", type_=subscribers.c.attributes.type),
                updated_at=stamp,
            ),
            changes.subscriber_updates,
        )
    if changes.member_inserts:
        conn.execute(insert(memberships), changes.member_inserts)
    _apply_status_changes(conn, changes, stamp)
    if changes.new_suppressions:
        conn.execute(
            audience.insert_ignoring_duplicates(conn, suppressions), changes.new_suppressions
        )


def _apply_status_changes(conn: Connection, changes: _Changes, stamp: dt.datetime) -> None:
    key = and_(
        memberships.c.subscriber_id == bindparam("b_sid"),
        memberships.c.list_id == bindparam("b_lid"),
    )
    if changes.member_confirms:
        conn.execute(
            update(memberships)
            .where(key)
            .values(status="confirmed", confirmed_at=stamp, updated_at=stamp),
            changes.member_confirms,
        )
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == bindparam("b_sid"), subscribers.c.confirmed_at.is_(None))
            .values(confirmed_at=stamp),
            changes.member_confirms,
        )
    if changes.member_unsubscribes:
        conn.execute(
            update(memberships)
            .where(key)
            .values(status="unsubscribed", unsubscribed_at=stamp, updated_at=stamp),
            changes.member_unsubscribes,
        )


# --- Export ---------------------------------------------------------------------------


def neutralize(cell: str) -> str:
    """Keep a spreadsheet from reading a cell as a formula (CSV injection)."""
    return "'" + cell if cell.startswith(SPREADSHEET_TRIGGERS) else cell


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
