"""The database: engines from settings, migrations, and driver errors translated once."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.sql.dml import Insert

from newsletter.atomic import PRIVATE_FILE, make_dirs
from newsletter.config import Settings
from newsletter.errors import StorageError

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# How long a SQLite writer waits for another before failing (setting database_busy_timeout):
# longer than the merge step of a 1,000,000-row import (13 s measured), so an unsubscribe
# waits it out instead of failing.
BUSY_TIMEOUT_MS = 30_000
_WRITE = "newsletter_write"  # execution option: this transaction will write
MIGRATION_LOCK = 0x6E6C5F6D6967  # PostgreSQL advisory lock key held while migrating


def masked(url: str) -> str:
    """The URL with any password replaced by ***, fit for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def engine_for(url: str, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    try:
        parsed = make_url(url)
        is_sqlite = parsed.get_backend_name() == "sqlite"
        if is_sqlite and parsed.database and parsed.database != ":memory:":
            _create_private(Path(parsed.database))
        engine = create_engine(parsed, pool_pre_ping=not is_sqlite)
    except (ArgumentError, NoSuchModuleError, OSError) as exc:
        raise StorageError(
            f"Cannot use the database {masked(url)}: {exc}. "
            "Check the setting database_url (NEWSLETTER_DATABASE_URL)."
        ) from exc
    if is_sqlite:
        _tune_sqlite(engine, busy_timeout_ms)
    return engine


def _create_private(path: Path) -> None:
    """Create the SQLite file 0600 (its folder 0700) before SQLite does it with the umask's
    0644: it holds every subscriber's address. SQLite gives the -wal, -shm and -journal
    files the mode of the database file. An existing file is left as it is."""
    make_dirs(path.parent)
    # An empty file is a valid empty database; an existing one keeps its mode.
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE))


def _tune_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so BEGIN is ours (see below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        _use_wal(cursor, busy_timeout_ms / 1000)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A deferred transaction that reads and then writes fails at once with SQLITE_BUSY
        # when another writer got in between; writers therefore take the lock up front.
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _use_wal(cursor: Any, patience: float) -> None:
    """Switch the file to WAL (it stays so); retried, because SQLite does not apply the busy
    timeout to this switch while another process is creating the same new file."""
    deadline = time.monotonic() + patience
    while cursor.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def connect(settings: Settings, migrate: bool = True) -> Engine:
    """The engine for the configured database, upgraded to the latest schema first."""
    engine = engine_for(settings.database, int(settings.database_busy_timeout * 1000))
    if migrate:
        upgrade(engine)
    return engine


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision; an existing database is upgraded in place."""
    with writing(engine) as conn:
        if conn.dialect.name == "postgresql":
            # Processes starting together on an empty database must not both create tables.
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        current = MigrationContext.configure(conn).get_current_revision()
        script = ScriptDirectory.from_config(_alembic_config(conn))
        if current is not None and not _known(script, current):
            raise StorageError(
                f"The database {masked(str(engine.url))} is at schema revision {current}, "
                "which this version of newsletter does not know. Upgrade newsletter."
            )
        try:
            command.upgrade(_alembic_config(conn), "head")
        except CommandError as exc:
            raise StorageError(f"Cannot migrate {masked(str(engine.url))}: {exc}.") from exc


def _known(script: ScriptDirectory, revision: str) -> bool:
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(engine: Engine) -> str | None:
    """The schema revision the database is at, or None for an empty database."""
    with errors(engine), engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision() -> str | None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ScriptDirectory.from_config(config).get_current_head()


@contextmanager
def errors(engine: Engine) -> Iterator[None]:
    """Translate driver errors into a StorageError naming the (masked) database URL."""
    try:
        yield
    except DBAPIError as exc:
        raise StorageError(_describe(exc, masked(str(engine.url)))) from exc
    except SQLAlchemyError as exc:
        raise StorageError(f"Database {masked(str(engine.url))}: {exc}.") from exc


def _describe(exc: DBAPIError, where: str) -> str:
    detail = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
    if "locked" in detail or "busy" in detail:
        hint = "Another process holds the lock; wait for it to finish and retry."
    elif exc.connection_invalidated or "connect" in detail.lower():
        hint = "Check that the server is running and the setting database_url is right."
    else:
        hint = "Check the setting database_url (NEWSLETTER_DATABASE_URL) and the database."
    return f"Database {where}: {detail}. {hint}"


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction, with errors translated."""
    with errors(engine), engine.connect() as conn, conn.begin():
        yield conn


@contextmanager
def writing(engine: Engine) -> Iterator[Connection]:
    """A write transaction (SQLite: BEGIN IMMEDIATE), committed on success, rolled back on error."""
    with errors(engine), engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


# --- Time and rows, as every table stores them -------------------------------------------


def now() -> dt.datetime:
    """The time stamped on rows: aware, UTC."""
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def insert_ignoring_duplicates(conn: Connection, table: Any) -> Insert:
    """INSERT that skips rows hitting a unique constraint (both dialects spell it alike)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()  # type: ignore[no-any-return]


def insert_if_absent(conn: Connection, table: Table, values: Mapping[str, Any]) -> bool:
    """Insert one row unless a unique constraint already holds it; True if it was added.

    Told by RETURNING, not rowcount: on PostgreSQL SQLAlchemy fetches the new key with
    RETURNING, and psycopg then reports -1 rows whether a row was added or not.
    """
    statement = (
        insert_ignoring_duplicates(conn, table)
        .values(**values)
        .returning(*table.primary_key.columns)
    )
    return conn.execute(statement).first() is not None
