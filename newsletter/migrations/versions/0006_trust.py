"""Trust: public lists, the copy of each issue as it was sent, and a confirmation queue.

- `lists.public`: only a list marked public can be joined from the web form; existing lists
  stay private until an editor says otherwise (`newsletter lists create --public` or
  `newsletter lists set NAME --public`).
- `issue_copies`: the rendered issue (HTML, text, subject, content hash) stored when it is
  sent, one row per issue and edition; every public page serves this copy, never a
  re-render of today's files.
- `confirmation_queue`: a subscribe request queues its confirmation mail instead of sending
  it inside the request, so a new address answers in the same time as a known one, and the
  per-client and global budgets are counted from one table that every process shares.

Revision ID: 0006_trust
Revises: 0005_webhook_events
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_trust"
down_revision = "0005_webhook_events"
branch_labels = None
depends_on = None

# Frozen copies of the types: a migration must not change when newsletter/schema.py does.
WHEN = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("lists") as batch:
        batch.add_column(sa.Column("public", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "issue_copies",
        sa.Column("issue", sa.String(200), nullable=False),
        sa.Column("edition", sa.String(35), nullable=False, server_default=""),
        sa.Column("list_name", sa.String(100), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("preheader", sa.Text, nullable=False, server_default=""),
        sa.Column("html", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("content_hash", sa.String(128), nullable=False),
        sa.Column("tags_key", sa.String(32), nullable=False, server_default=""),
        sa.Column("stored_at", WHEN, nullable=False),
        sa.PrimaryKeyConstraint("issue", "edition", name="pk_issue_copies"),
    )
    op.create_table(
        "confirmation_queue",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("subscriber_id", sa.Integer, nullable=True),
        sa.Column("list_name", sa.String(100), nullable=False),
        sa.Column("email", sa.String(320), nullable=False, server_default=""),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("client", sa.String(64), nullable=False, server_default=""),
        sa.Column("requested_at", WHEN, nullable=False),
        sa.Column("sent_at", WHEN, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
        sa.PrimaryKeyConstraint("id", name="pk_confirmation_queue"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_confirmation_queue_subscriber_id_subscribers",
            ondelete="SET NULL",
        ),
    )
    op.create_index("ix_confirmation_queue_requested_at", "confirmation_queue", ["requested_at"])
    op.create_index(
        "ix_confirmation_queue_client_requested_at",
        "confirmation_queue",
        ["client", "requested_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_confirmation_queue_client_requested_at", table_name="confirmation_queue")
    op.drop_index("ix_confirmation_queue_requested_at", table_name="confirmation_queue")
    op.drop_table("confirmation_queue")
    op.drop_table("issue_copies")
    with op.batch_alter_table("lists") as batch:
        batch.drop_column("public")
