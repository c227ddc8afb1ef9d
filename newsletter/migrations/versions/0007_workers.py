"""Workers: how many each run sent, and a rate ceiling every worker shares.

- `send_runs.sent`: how many recipients the run recorded as sent, so `newsletter status`
  shows each live worker's progress without counting the whole ledger by run.
- `send_rate`: one row per mailer (the provider account), holding the moment (seconds on
  the database's clock) from which the next message may leave. Every worker reserves its
  batch's slot by moving that moment forward in one UPDATE, so several `newsletter send`
  processes together keep to `send_rate_limit` messages per second.

Revision ID: 0007_workers
Revises: 0006_trust
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_workers"
down_revision = "0006_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("send_runs") as batch:
        batch.add_column(sa.Column("sent", sa.Integer, nullable=False, server_default="0"))
    op.create_table(
        "send_rate",
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_send_rate"),
    )


def downgrade() -> None:
    op.drop_table("send_rate")
    with op.batch_alter_table("send_runs") as batch:
        batch.drop_column("sent")
