"""Scheduled batch per run: which SendGrid batch_id and send_at carried a run's requests.

A ledger row already names the run that sent it (`send_ledger.run_id`); with the run's
schedule recorded here, `newsletter cancel` gives back only the rows that a still-future
scheduled batch carried, never rows sent at once or under an earlier schedule.

Revision ID: 0003_scheduled_batch
Revises: 0002_send_ledger
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_scheduled_batch"
down_revision = "0002_send_ledger"
branch_labels = None
depends_on = None

# Frozen copies of the types: a migration must not change when newsletter/ledger.py does.
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Nullable, no default: runs before this revision, and immediate sends, had no schedule.
    with op.batch_alter_table("send_runs") as batch:
        batch.add_column(sa.Column("batch_id", sa.String(100), nullable=True))
        batch.add_column(sa.Column("send_at", WHEN, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("send_runs") as batch:
        batch.drop_column("send_at")
        batch.drop_column("batch_id")
