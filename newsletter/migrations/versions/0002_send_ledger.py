"""Send ledger: one row per issue and recipient, the sends themselves, and the runs.

Revision ID: 0002_send_ledger
Revises: 0001_audience
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_send_ledger"
down_revision = "0001_audience"
branch_labels = None
depends_on = None

# Frozen copies of the types: a migration must not change when newsletter/ledger.py does.
WHEN = sa.DateTime(timezone=True)
STATES = "'pending', 'claimed', 'sent', 'failed', 'unknown', 'skipped', 'validated'"


def upgrade() -> None:
    op.create_table(
        "send_issues",
        sa.Column("issue", sa.String(200), nullable=False),
        sa.Column("list_name", sa.String(100), nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("batch_id", sa.String(100), nullable=True),
        sa.Column("send_at", WHEN, nullable=True),
        sa.Column("created_at", WHEN, nullable=False),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("issue", name="pk_send_issues"),
    )
    op.create_table(
        "send_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issue", sa.String(200), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("started_at", WHEN, nullable=False),
        sa.Column("heartbeat_at", WHEN, nullable=False),
        sa.Column("finished_at", WHEN, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_send_runs"),
    )
    op.create_index("ix_send_runs_issue", "send_runs", ["issue"])
    op.create_table(
        "send_ledger",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("issue", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("subscriber_public_id", sa.String(32), nullable=False, server_default=""),
        sa.Column("first_name", sa.String(200), nullable=False, server_default=""),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=True),
        sa.Column("message_id", sa.String(100), nullable=False, server_default=""),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.Column("updated_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_send_ledger"),
        sa.UniqueConstraint("issue", "email", name="uq_send_ledger_issue_email"),
        sa.CheckConstraint(f"state IN ({STATES})", name="ck_send_ledger_state"),
    )
    op.create_index("ix_send_ledger_issue_state_id", "send_ledger", ["issue", "state", "id"])


def downgrade() -> None:
    op.drop_table("send_ledger")
    op.drop_table("send_runs")
    op.drop_table("send_issues")
