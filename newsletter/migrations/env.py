"""Alembic environment: runs migrations on the connection that newsletter.db hands over."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from newsletter.schema import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("Run migrations through `newsletter db upgrade`, not the alembic CLI.")

# Batch mode lets later migrations alter SQLite tables (which lack most of ALTER TABLE).
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
