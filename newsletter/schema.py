"""The database tables as SQLAlchemy Core metadata; Alembic migrations create and change them.

A new table (the dispatch stage's ``send_ledger``) is added here *and* in a new migration
under ``newsletter/migrations/versions/`` whose ``down_revision`` is the current head
(``0001_audience``); a test checks that the migrated schema matches this metadata. Ledger
rows should reference ``subscribers.id`` and keep the address they were sent to, since a
subscriber's address can change.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

# Named constraints, so later migrations (and SQLite batch mode) can refer to them.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

MEMBERSHIP_STATUSES = ("unconfirmed", "confirmed", "unsubscribed")
SUPPRESSION_REASONS = ("unsubscribed", "bounced", "spam_report", "manual")
ALL_LISTS = ""  # the suppression scope that covers every list

subscribers = Table(
    "subscribers",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("public_id", String(32), nullable=False, unique=True),  # goes into tokens, never `id`
    Column("email", String(320), nullable=False, unique=True),  # normalized: lower case
    Column("name", String(200), nullable=False, server_default=""),
    Column("locale", String(35), nullable=False, server_default=""),
    Column("attributes", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
)

lists = Table(
    "lists",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("title", String(200), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

memberships = Table(
    "memberships",
    metadata,
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("list_id", Integer, ForeignKey("lists.id", ondelete="CASCADE"), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("source", String(64), nullable=False, server_default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_at", DateTime(timezone=True), nullable=True),
    Column("unsubscribed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("status IN ('unconfirmed', 'confirmed', 'unsubscribed')", name="status"),
)

# An address, not a subscriber: a suppression outlives a deleted subscriber and can exist
# for an address that never subscribed. `scope` is a list name, or ALL_LISTS.
suppressions = Table(
    "suppressions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False),
    Column("scope", String(100), nullable=False, server_default=""),
    Column("reason", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("detail", Text, nullable=False, server_default=""),
    UniqueConstraint("email", "scope"),
    CheckConstraint(
        "reason IN ('unsubscribed', 'bounced', 'spam_report', 'manual')", name="reason"
    ),
)
