"""SendGrid event webhook: one row per received event, unique by SendGrid's event id.

SendGrid retries a POST until it gets a 2xx, so the same event can arrive more than once;
the unique `sg_event_id` makes a repeat change nothing. `issue` and `ledger_key` come from
each message's custom_args, so `newsletter status` can later match events to ledger rows.

Revision ID: 0005_webhook_events
Revises: 0004_waiting_index
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_webhook_events"
down_revision = "0004_waiting_index"
branch_labels = None
depends_on = None

# Frozen copies of the types: a migration must not change when newsletter/schema.py does.
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("sg_event_id", sa.String(255), nullable=False),
        sa.Column("event", sa.String(50), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("issue", sa.String(200), nullable=False, server_default=""),
        sa.Column("ledger_key", sa.String(32), nullable=False, server_default=""),
        sa.Column("received_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("sg_event_id", name="uq_webhook_events_sg_event_id"),
    )
    op.create_index("ix_webhook_events_issue_ledger_key", "webhook_events", ["issue", "ledger_key"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_issue_ledger_key", table_name="webhook_events")
    op.drop_table("webhook_events")
