"""The database tables as SQLAlchemy Core metadata; Alembic migrations create and change them.

Every table lives here, the audience's and the send ledger's; a change is made here *and*
in a new migration under ``newsletter/migrations/versions/`` whose ``down_revision`` is the
current head (never by editing an applied one); a test checks that the migrated schema
matches this metadata. Ledger rows keep the address they were sent to, since a
subscriber's address can change.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)

from newsletter.models import LedgerState

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
    # Only a public list can be joined from the web form; internal lists cannot.
    Column("public", Boolean, nullable=False, server_default=false()),
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


# --- The send ledger (newsletter.ledger reads and writes these) ----------------------------

LEDGER_STATES = tuple(state.value for state in LedgerState)
# The rows a run may claim: given back or set aside to send again (`pending`), or only
# validated by a sandbox run. Only these are indexed by state (a partial index): a row
# inserted already `claimed`, and every `claimed -> sent`, then never touches the index,
# which cuts the ledger's write cost at 1,000,000 recipients by a third. A query uses
# the index only when it repeats this condition word for word (`ledger.WAITING`).
WAITING_STATES = (LedgerState.PENDING.value, LedgerState.VALIDATED.value)
WAITING = f"state IN ({', '.join(repr(s) for s in WAITING_STATES)})"
WHEN = DateTime(timezone=True)

# One row per issue ever sent: the content it was sent with and its schedule, if any.
send_issues = Table(
    "send_issues",
    metadata,
    Column("issue", String(200), primary_key=True),
    Column("list_name", String(100), nullable=False),
    Column("content_hash", String(128), nullable=False),
    Column("batch_id", String(100), nullable=True),
    Column("send_at", WHEN, nullable=True),
    Column("created_at", WHEN, nullable=False),
    Column("updated_at", WHEN, nullable=False),
)

# One row per `send` process: who holds claims, so a dead holder's claims can be settled.
send_runs = Table(
    "send_runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue", String(200), nullable=False, index=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", WHEN, nullable=False),
    Column("heartbeat_at", WHEN, nullable=False),
    Column("finished_at", WHEN, nullable=True),
    # The scheduled batch that carried this run's requests (None: it sent at once). Rows
    # name their run, so this says which rows a cancel of that batch holds back.
    Column("batch_id", String(100), nullable=True),
    Column("send_at", WHEN, nullable=True),
    # Recipients this run recorded as sent: each live worker's progress in `status`.
    Column("sent", Integer, nullable=False, server_default="0"),
)

# The shared rate ceiling: per mailer, the moment (seconds on the database's clock) from
# which the next message may leave; a worker reserves its batch's slot by moving it forward.
send_rate = Table(
    "send_rate",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("next_at", Float, nullable=False),
)

# One row per (issue, recipient address), claimed before the request that carries it.
send_ledger = Table(
    "send_ledger",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("issue", String(200), nullable=False),
    Column("email", String(320), nullable=False),
    Column("subscriber_public_id", String(32), nullable=False, server_default=""),
    Column("first_name", String(200), nullable=False, server_default=""),
    Column("state", String(10), nullable=False),
    Column("run_id", Integer, nullable=True),
    Column("message_id", String(100), nullable=False, server_default=""),
    Column("error", Text, nullable=False, server_default=""),
    Column("updated_at", WHEN, nullable=False),
    # The SendGrid event that proved an `unknown` row sent (newsletter.evidence), if any.
    Column("proof_event", String(50), nullable=False, server_default=""),
    Column("proof_event_id", String(255), nullable=False, server_default=""),
    Column("proved_at", WHEN, nullable=True),
    UniqueConstraint("issue", "email"),
    CheckConstraint(f"state IN ({', '.join(repr(s) for s in LEDGER_STATES)})", name="state"),
    Index(
        "ix_send_ledger_waiting",
        "issue",
        "id",
        sqlite_where=text(WAITING),
        postgresql_where=text(WAITING),
    ),
)


# --- SendGrid event webhook (newsletter.webhook writes these) ------------------------------

# One row per SendGrid event ever received, keyed by SendGrid's own event id: a POST that
# SendGrid retries changes nothing twice. `issue` and `ledger_key` come from the custom_args
# every send carries ("" when absent), so delivery can later be matched to ledger rows.
webhook_events = Table(
    "webhook_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("sg_event_id", String(255), nullable=False, unique=True),
    Column("event", String(50), nullable=False),
    Column("email", String(320), nullable=False),
    Column("issue", String(200), nullable=False, server_default=""),
    Column("ledger_key", String(32), nullable=False, server_default=""),
    Column("received_at", WHEN, nullable=False),
    # What statistics read: SendGrid's message id, the event's own Unix time, the clicked
    # URL, the bounce type ("bounce" hard, "blocked" soft) and the machine-open marker.
    Column("sg_message_id", String(255), nullable=False, server_default=""),
    Column("event_at", BigInteger, nullable=False, server_default="0"),
    Column("url", Text, nullable=False, server_default=""),
    Column("bounce_type", String(20), nullable=False, server_default=""),
    Column("machine_open", Boolean, nullable=False, server_default=false()),
    # A hash of (message id, event, timestamp, email, url): a retried event may carry a new
    # sg_event_id, and is a duplicate all the same. NULL for rows stored before it existed.
    Column("fingerprint", String(64), nullable=True),
    Index("ix_webhook_events_issue_ledger_key", "issue", "ledger_key"),
    Index("ix_webhook_events_fingerprint", "fingerprint", unique=True),
    Index("ix_webhook_events_email", "email"),
)


# --- What was sent, and what is waiting to be mailed ---------------------------------------

# The rendered issue as it was sent, one row per issue and edition ("" until editions):
# every public page (web copy, archive, feed) serves this, never a re-render of today's
# files, so a draft never leaks and the web copy is what readers got.
issue_copies = Table(
    "issue_copies",
    metadata,
    Column("issue", String(200), primary_key=True),
    Column("edition", String(35), primary_key=True, server_default=""),
    Column("list_name", String(100), nullable=False),
    Column("subject", Text, nullable=False),
    Column("preheader", Text, nullable=False, server_default=""),
    Column("html", Text, nullable=False),
    Column("text", Text, nullable=False),
    Column("content_hash", String(128), nullable=False),
    # The build's placeholder key (placeholders.Tags): the stored HTML is filled with it.
    Column("tags_key", String(32), nullable=False, server_default=""),
    Column("stored_at", WHEN, nullable=False),
)

# Confirmation mail asked for through the web form, sent by a worker outside the request
# (so a new address answers in the same time as a known one). `client` is the rate-limit
# key (an IP address, or an IPv6 /64); the per-client and global hourly budgets are counted
# here, so every process serving the same database shares them. A post is stored as asked
# (`email`, `name`, `list_name`) and the worker resolves it, so the request does the same
# work whatever the address's state; `email` and `name` are emptied once resolved.
confirmation_queue = Table(
    "confirmation_queue",
    metadata,
    Column("id", Integer, primary_key=True),
    # None until the worker resolves the post, and after it when there is nothing to mail
    # (unknown or private list, address already in); such rows count for the budgets all
    # the same, as do a deleted subscriber's.
    Column(
        "subscriber_id",
        Integer,
        ForeignKey("subscribers.id", ondelete="SET NULL"),
        nullable=True,
    ),
    Column("list_name", String(100), nullable=False),
    Column("email", String(320), nullable=False, server_default=""),
    Column("name", String(200), nullable=False, server_default=""),
    Column("client", String(64), nullable=False, server_default=""),
    Column("requested_at", WHEN, nullable=False),
    Column("sent_at", WHEN, nullable=True),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("error", Text, nullable=False, server_default=""),
    Index("ix_confirmation_queue_requested_at", "requested_at"),
    Index("ix_confirmation_queue_client_requested_at", "client", "requested_at"),
)
