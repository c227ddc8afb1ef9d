"""Evidence from SendGrid events: what proved an `unknown` row sent, and events at volume.

- `send_ledger.proof_event`, `proof_event_id`, `proved_at`: the SendGrid event (type and
  `sg_event_id`) that proved SendGrid accepted a row's message, which moved it from
  `unknown` to `sent`; empty for rows whose state the send itself settled.
- `webhook_events`: SendGrid's message id, event time, clicked URL, bounce type and
  machine-open marker, which the statistics read; and `fingerprint`, a hash of (message id,
  event, timestamp, email, url), unique, because a retried event may carry a new
  `sg_event_id`. Rows stored before this revision keep a NULL fingerprint (NULLs never
  collide), so upgrading needs no rewrite of a large table.

Revision ID: 0008_evidence
Revises: 0006_trust
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_evidence"
down_revision = "0007_workers"
branch_labels = None
depends_on = None

# Frozen copies of the types: a migration must not change when newsletter/schema.py does.
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("send_ledger") as batch:
        batch.add_column(sa.Column("proof_event", sa.String(50), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("proof_event_id", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("proved_at", WHEN, nullable=True))
    with op.batch_alter_table("webhook_events") as batch:
        batch.add_column(
            sa.Column("sg_message_id", sa.String(255), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("event_at", sa.BigInteger, nullable=False, server_default="0"))
        batch.add_column(sa.Column("url", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("bounce_type", sa.String(20), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("machine_open", sa.Boolean, nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("fingerprint", sa.String(64), nullable=True))
    op.create_index("ix_webhook_events_fingerprint", "webhook_events", ["fingerprint"], unique=True)
    op.create_index("ix_webhook_events_email", "webhook_events", ["email"])


def downgrade() -> None:
    op.drop_index("ix_webhook_events_email", table_name="webhook_events")
    op.drop_index("ix_webhook_events_fingerprint", table_name="webhook_events")
    with op.batch_alter_table("webhook_events") as batch:
        for name in ("fingerprint", "machine_open", "bounce_type", "url", "event_at"):
            batch.drop_column(name)
        batch.drop_column("sg_message_id")
    with op.batch_alter_table("send_ledger") as batch:
        for name in ("proved_at", "proof_event_id", "proof_event"):
            batch.drop_column(name)
