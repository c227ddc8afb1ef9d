"""The audience: subscribers, lists, memberships and suppressions, and who receives an issue.

Stable public API (other stages rely on these names):

- ``select_recipients(conn, spec) -> Iterator[Member]``: confirmed, unsuppressed members
  of ``spec.list`` matching ``spec.where``, streamed in pages (bounded memory). A
  ``Member`` has ``public_id`` (the opaque public id), ``email``, ``name``,
  ``first_name``, ``locale`` and ``list``; ``as_recipient(member, settings)`` turns one
  into a ``models.Recipient`` with its signed unsubscribe URL.
- ``is_suppressed(conn, email, list_name=None) -> bool``: checked again when a batch is
  claimed, so an unsubscribe that lands mid-send is honoured.
- ``normalize_email(text) -> str``: the form addresses are stored and compared in.

CSV import and export live in ``newsletter.audience_csv``.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import ColumnElement, and_, exists, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql import Select

from newsletter.config import Settings
from newsletter.db import aware, insert_if_absent, now
from newsletter.errors import AddressError, AudienceError
from newsletter.headers import CONTROL
from newsletter.models import AudienceSpec, Recipient
from newsletter.schema import (
    ALL_LISTS,
    SUPPRESSION_REASONS,
    lists,
    memberships,
    subscribers,
    suppressions,
)
from newsletter.tokens import unsubscribe_url

PAGE = 1000  # rows per query when streaming recipients
LIST_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,99}\Z")
MAX_NAME = 200
MAX_TITLE = 200
MAX_LOCALE = 35
# At most one confirmation message per address and list in this time, so the public form
# cannot be used to flood somebody's inbox.
CONFIRMATION_INTERVAL = dt.timedelta(hours=24)
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*\Z")


# --- Addresses -------------------------------------------------------------------------


def normalize_email(text: str) -> str:
    """Validate an address (syntax only, no DNS) and return its ASCII form in lower case.

    Case variants are one subscriber: mailbox providers treat local parts
    case-insensitively in practice, so we do too. A Unicode domain is stored in its
    IDNA (punycode) form, so both spellings are one subscriber and every mailer can put
    it in a header. A non-ASCII local part is refused: only SMTPUTF8 can carry it.
    """
    candidate = text.strip()
    if "\r" in candidate or "\n" in candidate:
        raise AddressError("The address contains a line break.")
    if "=?" in candidate:
        # Valid atext, but a mail parser reads it as an RFC 2047 encoded word in a header.
        raise AddressError("The address contains '=?', which mail software reads as encoding.")
    # Fast path for the common plain ASCII address: email-validator checks the domain
    # once (cached), and the local part is a dot-atom, which email-validator accepts.
    local, at, domain = candidate.rpartition("@")
    if at and len(local) <= 64 and domain.isascii() and _DOT_ATOM.match(local):
        address = f"{local}@{_checked_domain(domain.lower())}".lower()
        if len(address) <= 254:
            return address
    return _validated(candidate)


@lru_cache(maxsize=4096)
def _checked_domain(domain: str) -> str:
    return _validated(f"postmaster@{domain}").rpartition("@")[2]


def _validated(candidate: str) -> str:
    try:
        result = validate_email(candidate, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        if not candidate.rpartition("@")[0].isascii():
            raise AddressError(
                "The address has non-ASCII characters before the @: it needs SMTPUTF8, "
                "which we do not send. Ask the subscriber for another address."
            ) from exc
        raise AddressError(f"Not a valid email address: {exc}") from exc
    return str(result.ascii_email).lower()


def check_header_text(field: str, value: str, limit: int) -> str:
    """A value that may reach a mail header: no line breaks or control characters.

    C0 and C1 controls and U+2028/U+2029 are refused (they could end a header line, and no
    client shows them). Text that merely looks like an RFC 2047 encoded word is accepted and
    kept as typed: newsletter.headers sends it so that readers see exactly those characters.
    """
    if "\r" in value or "\n" in value:
        raise AudienceError(f"The {field} contains a line break, which could reach a mail header.")
    found = CONTROL.search(value)
    if found:
        raise AudienceError(
            f"The {field} contains a control character (U+{ord(found.group()):04X}); remove it."
        )
    if len(value) > limit:
        raise AudienceError(f"The {field} is longer than {limit} characters.")
    return value


# --- Lists ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ListInfo:
    name: str
    title: str
    created_at: dt.datetime
    counts: Mapping[str, int]  # membership status -> number of subscribers
    public: bool = False  # may be joined from the web form


def create_list(conn: Connection, name: str, title: str = "", public: bool = False) -> None:
    if not LIST_NAME.match(name):
        raise AudienceError(
            f"List name {name!r} is not allowed: use lower-case letters, digits, '-' and '_'."
        )
    check_header_text("list title", title, MAX_TITLE)  # a title may reach a subject line
    if conn.execute(select(lists.c.id).where(lists.c.name == name)).first():
        raise AudienceError(f"List {name!r} already exists.")
    conn.execute(insert(lists).values(name=name, title=title, created_at=now(), public=public))


def set_list_public(conn: Connection, name: str, public: bool) -> bool:
    """Open a list to the web form, or close it; True if that changed anything."""
    lid = list_id(conn, name)
    changed = conn.execute(
        update(lists).where(lists.c.id == lid, lists.c.public != public).values(public=public)
    )
    return bool(changed.rowcount)


def list_id(conn: Connection, name: str) -> int:
    """The id of a list, or an AudienceError that says how to create it."""
    found = conn.execute(select(lists.c.id).where(lists.c.name == name)).scalar()
    if found is None:
        raise AudienceError(
            f"List {name!r} does not exist. Create it with `newsletter lists create {name}`."
        )
    return int(found)


def public_list_id(conn: Connection, name: str) -> int | None:
    """The id of a list the web form may join, or None (unknown and private alike)."""
    found = conn.execute(
        select(lists.c.id).where(lists.c.name == name, lists.c.public.is_(True))
    ).scalar()
    return None if found is None else int(found)


def all_lists(conn: Connection) -> list[ListInfo]:
    counts: dict[int, dict[str, int]] = {}
    query = select(memberships.c.list_id, memberships.c.status, func.count()).group_by(
        memberships.c.list_id, memberships.c.status
    )
    for lid, status, count in conn.execute(query):
        counts.setdefault(lid, {})[status] = count
    rows = conn.execute(select(lists).order_by(lists.c.name))
    return [
        ListInfo(r.name, r.title, aware(r.created_at), counts.get(r.id, {}), bool(r.public))
        for r in rows
    ]


def get_list(conn: Connection, name: str) -> ListInfo:
    list_id(conn, name)
    return next(info for info in all_lists(conn) if info.name == name)


# --- Subscribers ----------------------------------------------------------------------


@dataclass(frozen=True)
class MembershipInfo:
    list: str
    status: str
    source: str
    updated_at: dt.datetime


@dataclass(frozen=True)
class SuppressionInfo:
    scope: str  # a list name, or "" for every list
    reason: str
    created_at: dt.datetime
    detail: str


@dataclass(frozen=True)
class SubscriberInfo:
    public_id: str
    email: str
    name: str
    locale: str
    attributes: Mapping[str, str]
    created_at: dt.datetime
    confirmed_at: dt.datetime | None
    memberships: tuple[MembershipInfo, ...]
    suppressions: tuple[SuppressionInfo, ...]


def new_public_id() -> str:
    return secrets.token_urlsafe(12)


def ensure_subscriber(
    conn: Connection,
    email: str,
    name: str = "",
    locale: str = "",
    attributes: Mapping[str, str] | None = None,
) -> tuple[int, str]:
    """(id, public id) of the subscriber with this address, created if new.

    Given non-empty values update the stored ones; empty values leave them alone.
    """
    address = normalize_email(email)
    check_header_text("name", name, MAX_NAME)
    check_header_text("locale", locale, MAX_LOCALE)
    row = conn.execute(select(subscribers).where(subscribers.c.email == address)).first()
    if row is None:
        public_id = new_public_id()
        stamp = now()
        values = {"name": name, "locale": locale, "attributes": dict(attributes or {})}
        new_id = conn.execute(
            insert(subscribers).values(
                public_id=public_id, email=address, created_at=stamp, updated_at=stamp, **values
            )
        ).inserted_primary_key
        # bandit B101: an INSERT always has a primary key; the assert only narrows the type.
        assert new_id is not None  # nosec B101
        return int(new_id[0]), public_id
    merged = {
        "name": name or row.name,
        "locale": locale or row.locale,
        "attributes": {**row.attributes, **(attributes or {})},
    }
    if merged != {"name": row.name, "locale": row.locale, "attributes": row.attributes}:
        conn.execute(
            update(subscribers).where(subscribers.c.id == row.id).values(updated_at=now(), **merged)
        )
    return int(row.id), str(row.public_id)


def add_subscriber(
    conn: Connection,
    email: str,
    list_name: str,
    *,
    name: str = "",
    locale: str = "",
    attributes: Mapping[str, str] | None = None,
    confirmed: bool = False,
    source: str = "cli",
) -> str:
    """Add an address to a list (unconfirmed unless `confirmed`); returns the public id.

    An unsubscribe sticks: an address suppressed for the list is refused.
    """
    lid = list_id(conn, list_name)
    reason = suppression_reason(conn, normalize_email(email), list_name)
    if reason:
        raise AudienceError(
            f"{normalize_email(email)} is suppressed for {list_name!r} ({reason}); "
            "an unsubscribe sticks until the subscriber resubscribes or opts in again."
        )
    sid, public_id = ensure_subscriber(conn, email, name, locale, attributes)
    set_membership(conn, sid, lid, "confirmed" if confirmed else "unconfirmed", source)
    return public_id


def set_membership(
    conn: Connection, subscriber_id: int, lid: int, status: str, source: str
) -> bool:
    """Put a subscriber in a list with `status`; True when something changed."""
    key = and_(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == lid)
    current = membership_status(conn, subscriber_id, lid)
    if current == status:
        return False
    stamp = now()
    times: dict[str, Any] = {"updated_at": stamp}
    if status == "confirmed":
        times["confirmed_at"] = stamp
    if status == "unsubscribed":
        times["unsubscribed_at"] = stamp
    if current is None:
        conn.execute(
            insert(memberships).values(
                subscriber_id=subscriber_id,
                list_id=lid,
                status=status,
                source=source,
                created_at=stamp,
                **times,
            )
        )
    else:
        conn.execute(update(memberships).where(key).values(status=status, **times))
    if status == "confirmed":
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, subscribers.c.confirmed_at.is_(None))
            .values(confirmed_at=stamp)
        )
    return True


def subscriber(conn: Connection, email: str) -> SubscriberInfo:
    """Everything stored about one address (for `subscribers show`)."""
    address = normalize_email(email)
    row = conn.execute(select(subscribers).where(subscribers.c.email == address)).first()
    if row is None:
        raise AudienceError(f"No subscriber has the address {address}.")
    member_rows = conn.execute(
        select(lists.c.name, memberships.c.status, memberships.c.source, memberships.c.updated_at)
        .join(lists, lists.c.id == memberships.c.list_id)
        .where(memberships.c.subscriber_id == row.id)
        .order_by(lists.c.name)
    )
    return SubscriberInfo(
        public_id=row.public_id,
        email=row.email,
        name=row.name,
        locale=row.locale,
        attributes=row.attributes,
        created_at=aware(row.created_at),
        confirmed_at=aware(row.confirmed_at) if row.confirmed_at else None,
        memberships=tuple(
            MembershipInfo(m.name, m.status, m.source, aware(m.updated_at)) for m in member_rows
        ),
        suppressions=tuple(suppressions_of(conn, address)),
    )


def suppressions_of(conn: Connection, address: str) -> list[SuppressionInfo]:
    rows = conn.execute(
        select(suppressions).where(suppressions.c.email == address).order_by(suppressions.c.id)
    )
    return [SuppressionInfo(r.scope, r.reason, aware(r.created_at), r.detail) for r in rows]


@dataclass(frozen=True)
class SubscriberRow:
    public_id: str
    email: str
    name: str
    locale: str
    status: str


def subscribers_in(
    conn: Connection, list_name: str, status: str | None = None, limit: int = 100
) -> list[SubscriberRow]:
    """Up to `limit` members of a list, oldest first (for `subscribers list`)."""
    lid = list_id(conn, list_name)
    query = (
        select(
            subscribers.c.public_id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.locale,
            memberships.c.status,
        )
        .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
        .where(memberships.c.list_id == lid)
        .order_by(subscribers.c.id)
        .limit(limit)
    )
    if status:
        query = query.where(memberships.c.status == status)
    return [SubscriberRow(*row) for row in conn.execute(query)]


# --- Suppressions and unsubscribes ----------------------------------------------------


def suppress(
    conn: Connection, email: str, reason: str, scope: str = ALL_LISTS, detail: str = ""
) -> bool:
    """Record a suppression; True if it is new or upgraded (else it is kept as it was).

    Any other reason (an editor's `manual` removal, a bounce, a spam report) replaces the
    subscriber's own `unsubscribed` row of the same scope (one row per address and scope):
    otherwise their resubscribe link, which may undo only their own act, would undo it too.
    """
    if reason not in SUPPRESSION_REASONS:
        raise AudienceError(
            f"Unknown suppression reason {reason!r}; use one of {', '.join(SUPPRESSION_REASONS)}."
        )
    address = normalize_email(email)
    if reason != "unsubscribed":
        upgraded = conn.execute(
            update(suppressions)
            .where(
                suppressions.c.email == address,
                suppressions.c.scope == scope,
                suppressions.c.reason == "unsubscribed",
            )
            .values(reason=reason, detail=detail, created_at=now())
        )
        if upgraded.rowcount:
            return True
    return insert_if_absent(
        conn,
        suppressions,
        {"email": address, "scope": scope, "reason": reason, "created_at": now(), "detail": detail},
    )


def _applies(address: Any, list_name: str | None) -> ColumnElement[bool]:
    if list_name is None:
        same: ColumnElement[bool] = suppressions.c.email == address
        return same
    return and_(suppressions.c.email == address, suppressions.c.scope.in_([ALL_LISTS, list_name]))


def suppression_reason(conn: Connection, address: str, list_name: str | None) -> str | None:
    """The reason an address may not be mailed on a list, or None."""
    query = select(suppressions.c.reason).where(_applies(address, list_name)).limit(1)
    return conn.execute(query).scalar()


def is_suppressed(conn: Connection, email: str, list_name: str | None = None) -> bool:
    """True if the address may not be mailed on `list_name`.

    Without a list, any suppression counts (the safe answer when the list is not known).
    """
    return suppression_reason(conn, normalize_email(email), list_name) is not None


def unsubscribe(
    conn: Connection,
    subscriber_id: int,
    list_name: str,
    reason: str = "unsubscribed",
    detail: str = "",
    source: str = "cli",
) -> bool:
    """Unsubscribe from one list and suppress the address there; True if anything changed."""
    lid = list_id(conn, list_name)
    address = conn.execute(
        select(subscribers.c.email).where(subscribers.c.id == subscriber_id)
    ).scalar_one()
    changed = set_membership_if_member(conn, subscriber_id, lid, "unsubscribed")
    return suppress(conn, address, reason, scope=list_name, detail=detail) or changed


def membership_status(conn: Connection, subscriber_id: int, lid: int) -> str | None:
    key = and_(memberships.c.subscriber_id == subscriber_id, memberships.c.list_id == lid)
    status = conn.execute(select(memberships.c.status).where(key)).scalar()
    return None if status is None else str(status)


def set_membership_if_member(conn: Connection, subscriber_id: int, lid: int, status: str) -> bool:
    if membership_status(conn, subscriber_id, lid) is None:
        return False
    return set_membership(conn, subscriber_id, lid, status, "")


def remove_subscriber(conn: Connection, email: str, list_name: str) -> bool:
    """Unsubscribe an address from a list by hand (reason manual)."""
    address = normalize_email(email)
    sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == address)).scalar()
    if sid is None:
        raise AudienceError(f"No subscriber has the address {address}.")
    return unsubscribe(conn, sid, list_name, reason="manual", detail="removed with the CLI")


def subscriber_id_for(conn: Connection, public_id: str) -> int | None:
    found = conn.execute(
        select(subscribers.c.id).where(subscribers.c.public_id == public_id)
    ).scalar()
    return None if found is None else int(found)


def resubscribe(
    conn: Connection, subscriber_id: int, list_name: str, source: str = "resubscribe"
) -> bool:
    """Undo the subscriber's own unsubscribe from a list; False if something else stands.

    Only the subscriber's own signed resubscribe link leads here, and it may undo only
    what that subscriber did with it: an `unsubscribed` suppression scoped to this list.
    A bounce, a spam report, an editor's `manual` removal, or any suppression for every
    list stays, and the membership is left as it is.
    """
    lid = list_id(conn, list_name)
    address = conn.execute(
        select(subscribers.c.email).where(subscribers.c.id == subscriber_id)
    ).scalar_one()
    own = and_(suppressions.c.scope == list_name, suppressions.c.reason == "unsubscribed")
    standing = select(suppressions.c.id).where(_applies(address, list_name), ~own).limit(1)
    if conn.execute(standing).first() is not None:
        return False
    if membership_status(conn, subscriber_id, lid) not in ("unsubscribed", "confirmed"):
        return False  # never confirmed: that is the double opt-in's job, not this link's
    # Deletes only the row checked above: a bounce landing meanwhile is another row.
    conn.execute(suppressions.delete().where(suppressions.c.email == address, own))
    set_membership(conn, subscriber_id, lid, "confirmed", source)
    return True


def request_subscription(conn: Connection, address: str, list_name: str) -> tuple[int, bool] | None:
    """Record an unconfirmed membership: (subscriber id, whether a confirmation is due now),
    or None when the post asks for nothing.

    Only a public list can be joined this way; an unknown or private one is None, as is an
    address that is confirmed or unsubscribed already, or suppressed for the list or
    everywhere. A confirmation is not due while one for the list is pending or was sent
    within CONFIRMATION_INTERVAL. Nothing typed in this unauthenticated form is stored on
    the subscriber: a new one is created without a name (see confirm_subscription).
    """
    lid = public_list_id(conn, list_name)
    if lid is None or suppression_reason(conn, address, list_name) is not None:
        return None
    sid = conn.execute(select(subscribers.c.id).where(subscribers.c.email == address)).scalar()
    if sid is None:
        sid, _public_id = ensure_subscriber(conn, address)
    status = membership_status(conn, sid, lid)
    if status is None:
        set_membership(conn, sid, lid, "unconfirmed", "web")
        return int(sid), True
    if status != "unconfirmed":
        return None
    return int(sid), _confirmation_due(conn, sid, lid)


def _confirmation_due(conn: Connection, subscriber_id: int, lid: int) -> bool:
    """Hold the next confirmation of an unconfirmed membership; False within the interval.

    An unconfirmed membership's updated_at is when its last confirmation was sent, or
    queued and not yet sent or given up (see confirmation_sent and confirmation_abandoned).
    One conditional UPDATE, so two simultaneous requests cannot both win.
    """
    stamp = now()
    claimed = conn.execute(
        update(memberships)
        .where(
            memberships.c.subscriber_id == subscriber_id,
            memberships.c.list_id == lid,
            memberships.c.status == "unconfirmed",
            memberships.c.updated_at <= stamp - CONFIRMATION_INTERVAL,
        )
        .values(updated_at=stamp)
    )
    return bool(claimed.rowcount)


def confirmation_sent(conn: Connection, subscriber_id: int, list_name: str) -> None:
    """The interval starts when the confirmation actually went out."""
    _mark_unconfirmed(conn, subscriber_id, list_name, now())


def confirmation_abandoned(conn: Connection, subscriber_id: int, list_name: str) -> None:
    """A confirmation given up on holds nothing: the next post may mail again at once."""
    _mark_unconfirmed(conn, subscriber_id, list_name, now() - CONFIRMATION_INTERVAL)


def _mark_unconfirmed(
    conn: Connection, subscriber_id: int, list_name: str, stamp: dt.datetime
) -> None:
    lid = select(lists.c.id).where(lists.c.name == list_name).scalar_subquery()
    conn.execute(
        update(memberships)
        .where(
            memberships.c.subscriber_id == subscriber_id,
            memberships.c.list_id == lid,
            memberships.c.status == "unconfirmed",
        )
        .values(updated_at=stamp)
    )


def confirm_subscription(
    conn: Connection, subscriber_id: int, list_name: str, name: str = ""
) -> bool:
    """Confirm a double opt-in; False unless the membership still awaits confirmation.

    So an old confirmation link cannot undo a later unsubscribe or suppression: only the
    resubscribe link does that. `name` is the one given with the pending request: stored
    only now that the address's owner confirmed, and only if the subscriber has none.
    """
    lid = list_id(conn, list_name)
    address = conn.execute(
        select(subscribers.c.email).where(subscribers.c.id == subscriber_id)
    ).scalar_one()
    if suppression_reason(conn, address, list_name) is not None:
        return False
    stamp = now()
    # Conditional on the status, so an unsubscribe committed meanwhile wins.
    confirmed = conn.execute(
        update(memberships)
        .where(
            memberships.c.subscriber_id == subscriber_id,
            memberships.c.list_id == lid,
            memberships.c.status == "unconfirmed",
        )
        .values(status="confirmed", updated_at=stamp, confirmed_at=stamp)
    )
    if not confirmed.rowcount:
        return False
    conn.execute(
        update(subscribers)
        .where(subscribers.c.id == subscriber_id, subscribers.c.confirmed_at.is_(None))
        .values(confirmed_at=stamp)
    )
    if name:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, subscribers.c.name == "")
            .values(name=name, updated_at=stamp)
        )
    return True


# --- Who receives an issue ------------------------------------------------------------


class Member(NamedTuple):
    """One recipient of an issue, as `select_recipients` yields it.

    A NamedTuple: a send makes one per recipient, and a frozen dataclass costs three times more.
    """

    public_id: str  # the opaque public id (goes into unsubscribe tokens)
    email: str
    name: str
    locale: str
    list: str

    @property
    def first_name(self) -> str:
        return self.name.split()[0] if self.name.strip() else ""


def as_recipient(member: Member, settings: Settings) -> Recipient:
    """The mailer's view of a member, with its signed one-click unsubscribe URL."""
    return Recipient(
        email=member.email,
        first_name=member.first_name,
        unsubscribe_url=unsubscribe_url(settings, member.public_id, member.list),
        public_id=member.public_id,
    )


def _where(key: str, value: str) -> ColumnElement[bool]:
    condition: ColumnElement[bool] = (
        subscribers.c.locale == value
        if key == "locale"
        else subscribers.c.attributes[key].as_string() == value
    )
    return condition


def recipients_query(conn: Connection, spec: AudienceSpec) -> Select[Any]:
    """Confirmed, unsuppressed members of the spec's list matching every `where` pair:
    (id, public id, email, name, locale), in no particular order."""
    lid = list_id(conn, spec.list)
    suppressed = exists().where(_applies(subscribers.c.email, spec.list))
    return (
        select(
            subscribers.c.id,
            subscribers.c.public_id,
            subscribers.c.email,
            subscribers.c.name,
            subscribers.c.locale,
        )
        .join(memberships, memberships.c.subscriber_id == subscribers.c.id)
        .where(memberships.c.list_id == lid, memberships.c.status == "confirmed", ~suppressed)
        .where(*(_where(key, value) for key, value in spec.where))
    )


def select_recipients(conn: Connection, spec: AudienceSpec, page: int = PAGE) -> Iterator[Member]:
    """The members of `recipients_query`, by subscriber id.

    Pages through the table by id, so memory stays bounded and no cursor stays open
    between pages.
    """
    query = recipients_query(conn, spec).order_by(subscribers.c.id).limit(page)
    after = 0
    while True:
        rows = conn.execute(query.where(subscribers.c.id > after)).all()
        # Unpacked tuples: a Row's attribute access costs more than the Member it builds.
        for _id, public_id, email, name, locale in rows:
            yield Member(public_id, email, name, locale, spec.list)
        if len(rows) < page:
            return
        after = rows[-1][0]
