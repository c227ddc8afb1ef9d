"""Engines, migrations and storage errors on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine

from newsletter import db
from newsletter.config import load_settings
from newsletter.errors import StorageError
from newsletter.schema import metadata


def test_migrations_create_every_table(engine: Engine) -> None:
    tables = set(inspect(engine).get_table_names())
    assert {"subscribers", "lists", "memberships", "suppressions", "alembic_version"} <= tables
    assert db.current_revision(engine) == db.head_revision()


def test_migrated_schema_matches_the_metadata(engine: Engine) -> None:
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_upgrade_keeps_existing_rows(engine: Engine) -> None:
    with db.writing(engine) as conn:
        conn.execute(text("INSERT INTO lists (name, created_at) VALUES ('w', '2026-01-01')"))
    db.upgrade(engine)
    db.upgrade(engine)
    with db.reading(engine) as conn:
        assert conn.execute(text("SELECT name FROM lists")).scalars().all() == ["w"]


def test_unknown_newer_revision_is_refused(engine: Engine) -> None:
    with db.writing(engine) as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(StorageError, match="from_the_future"):
        db.upgrade(engine)


def test_sqlite_default_file_is_created_under_root(tmp_path: Path) -> None:
    settings = load_settings(root=tmp_path, env={})
    engine = db.connect(settings)
    try:
        assert (tmp_path / "newsletter.db").is_file()
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == db.BUSY_TIMEOUT_MS
    finally:
        engine.dispose()


def test_unreachable_server_names_the_url_without_password() -> None:
    url = "postgresql+psycopg://editor:hunter2@127.0.0.1:1/nowhere?connect_timeout=2"
    with pytest.raises(StorageError) as info:
        db.connect(load_settings(env={"NEWSLETTER_DATABASE_URL": url}))
    message = str(info.value)
    assert "hunter2" not in message
    assert "editor:***@127.0.0.1:1/nowhere" in message


def test_unknown_driver_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="database_url"):
        db.engine_for("nosuchdb://x/y")


def test_locked_sqlite_database_is_a_storage_error(tmp_path: Path) -> None:
    settings = load_settings(root=tmp_path, env={})
    engine = db.connect(settings)
    impatient = db.engine_for(settings.database, busy_timeout_ms=50)
    try:
        with (
            db.writing(engine),
            pytest.raises(StorageError, match="lock"),
            db.writing(impatient) as conn,
        ):
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()
        impatient.dispose()


def test_processes_starting_together_migrate_once(database_url: str, tmp_path: Path) -> None:
    settings = load_settings(root=tmp_path, env={"NEWSLETTER_DATABASE_URL": database_url})
    failures: list[BaseException] = []

    def start() -> None:
        try:
            db.connect(settings).dispose()
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert failures == []
    engine = db.engine_for(database_url)
    assert db.current_revision(engine) == db.head_revision()
    engine.dispose()
