"""Scheduled sends and `cancel`: whatever the order of sends, nobody gets the issue twice.

The fake SendGrid holds back the messages of a cancelled batch_id whose send_at had not
come (as SendGrid does), so `inboxes()` is what each recipient ends up receiving.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import audience, db, dispatch, ledger, schema
from newsletter.dispatch import SendOptions
from newsletter.errors import DispatchError, UsageError
from newsletter.mailers import Scheduler
from newsletter.mailers.sendgrid import SendGridMailer
from newsletter.models import AudienceSpec, DispatchReport, RenderedEmail
from tests.conftest import AUDIENCE_SIZE
from tests.fakes.sendgrid_server import FakeSendGrid

ISSUE = "2025-12-10"
WEEKLY = AudienceSpec("weekly")
SMALL = SendOptions(batch_size=10)
LATE = 5  # readers who subscribe after the first send


def send(
    engine: Engine, email: RenderedEmail, mailer: SendGridMailer, at: dt.datetime | None = None
) -> DispatchReport:
    options = dataclasses.replace(SMALL, send_at=at)
    return dispatch.send_issue(engine, email, WEEKLY, mailer, link, options)


def link(public_id: str) -> str:
    return f"https://news.test/u/{public_id}"


def in_hours(hours: float) -> dt.datetime:
    return db.now().replace(microsecond=0) + dt.timedelta(hours=hours)


def subscribe_late(engine: Engine) -> list[str]:
    late = [f"late{i}@example.org" for i in range(LATE)]
    with db.writing(engine) as conn:
        for address in late:
            audience.add_subscriber(conn, address, "weekly", confirmed=True)
    return late


def everyone_once(readers: list[str]) -> collections.Counter[tuple[str, str]]:
    return collections.Counter((ISSUE, address) for address in readers)


def ledger_rows(engine: Engine) -> list[tuple[str, str, str]]:
    rows = schema.send_ledger
    query = select(rows.c.email, rows.c.state, rows.c.message_id).order_by(rows.c.email)
    with db.reading(engine) as conn:
        return [tuple(r) for r in conn.execute(query.where(rows.c.issue == ISSUE))]


def stored(engine: Engine, fake: FakeSendGrid) -> tuple[object, ...]:
    """The ledger's rows, the send record and how many requests the server got."""
    return (ledger_rows(engine), dispatch.status(engine, ISSUE).record, len(fake.requests))


def batch_ids(fake: FakeSendGrid) -> list[str | None]:
    return [r.body.get("batch_id") for r in fake.mail_sends()]


def test_cancel_after_an_immediate_send_gives_back_only_the_scheduled_rows(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    assert send(engine, rendered, mailer).sent == AUDIENCE_SIZE
    late = subscribe_late(engine)
    assert send(engine, rendered, mailer, in_hours(20)).sent == LATE
    assert dispatch.cancel_send(engine, ISSUE, mailer) == LATE
    assert send(engine, rendered, mailer).sent == LATE
    assert fake_sendgrid.inboxes() == everyone_once(weekly_readers + late)


def test_an_immediate_send_while_a_schedule_is_pending_is_refused_and_changes_nothing(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    at = in_hours(20)
    send(engine, rendered, mailer, at)
    late = subscribe_late(engine)
    before = stored(engine, fake_sendgrid)
    with pytest.raises(DispatchError, match="newsletter cancel 2025-12-10"):
        send(engine, rendered, mailer)
    # Even the new content hash an allowed change would record is rolled back.
    changed = dataclasses.replace(rendered, content_hash="d00dad")
    allowed = dataclasses.replace(SMALL, allow_changed=True)
    with pytest.raises(DispatchError, match="newsletter cancel 2025-12-10"):
        dispatch.send_issue(engine, changed, WEEKLY, mailer, link, allowed)
    after = stored(engine, fake_sendgrid)
    assert after == before
    assert dispatch.cancel_send(engine, ISSUE, mailer) == AUDIENCE_SIZE
    assert send(engine, rendered, mailer).sent == AUDIENCE_SIZE + LATE
    assert fake_sendgrid.inboxes() == everyone_once(weekly_readers + late)


def test_the_same_time_again_joins_the_schedule_and_another_time_is_refused(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    at = in_hours(20)
    send(engine, rendered, mailer, at)
    late = subscribe_late(engine)
    before = stored(engine, fake_sendgrid)
    with pytest.raises(DispatchError, match="is scheduled for"):
        send(engine, rendered, mailer, in_hours(30))
    assert (ledger_rows(engine), dispatch.status(engine, ISSUE).record) == before[:2]
    assert len(fake_sendgrid.requests) == before[2]
    # The same moment in another zone is the same schedule: the late readers join its batch.
    assert send(engine, rendered, mailer, at.astimezone(dt.timezone(dt.timedelta(hours=6)))).sent
    bodies = [r.body for r in fake_sendgrid.mail_sends()]
    assert {b["send_at"] for b in bodies} == {int(at.timestamp())}
    assert len(set(batch_ids(fake_sendgrid))) == 1
    assert dispatch.cancel_send(engine, ISSUE, mailer) == AUDIENCE_SIZE + LATE
    assert fake_sendgrid.inboxes() == collections.Counter()
    send(engine, rendered, mailer)
    assert fake_sendgrid.inboxes() == everyone_once(weekly_readers + late)


def test_a_second_schedule_after_the_first_time_passed_cancels_only_its_own_rows(
    engine: Engine,
    weekly_readers: list[str],
    rendered: RenderedEmail,
    mailer: SendGridMailer,
    fake_sendgrid: FakeSendGrid,
) -> None:
    soon = db.now() + dt.timedelta(seconds=3)
    assert send(engine, rendered, mailer, soon).sent == AUDIENCE_SIZE
    while db.now() <= soon:  # SendGrid delivers the first schedule at its time
        time.sleep(0.1)
    late = subscribe_late(engine)
    assert send(engine, rendered, mailer, in_hours(20)).sent == LATE
    first, second = dict.fromkeys(batch_ids(fake_sendgrid))
    assert first != second  # the passed schedule's batch_id is never reused
    assert dispatch.cancel_send(engine, ISSUE, mailer) == LATE
    assert fake_sendgrid.cancelled == [second]
    assert send(engine, rendered, mailer).sent == LATE
    assert fake_sendgrid.inboxes() == everyone_once(weekly_readers + late)


# --- The provider's limits come from its Scheduler, not from dispatch ------------------------

NOW = dt.datetime(2025, 12, 10, 1, 0, tzinfo=dt.UTC)


@dataclasses.dataclass
class Later:
    """A provider other than SendGrid with its own limits: dispatch must apply them."""

    max_schedule_ahead: dt.timedelta
    cancel_margin: dt.timedelta = dt.timedelta(minutes=1)
    name: str = "later"
    cancelled: list[str] = dataclasses.field(default_factory=list)

    def create_batch_id(self) -> str:
        return "later-batch"

    def cancel_scheduled(self, batch_id: str) -> None:
        self.cancelled.append(batch_id)


def test_sendgrid_carries_its_scheduling_limits(mailer: SendGridMailer) -> None:
    assert isinstance(mailer, Scheduler)
    assert mailer.max_schedule_ahead == dt.timedelta(hours=72)
    assert mailer.cancel_margin == dt.timedelta(minutes=10)


@given(
    limit=st.integers(min_value=1, max_value=200 * 60).map(lambda m: dt.timedelta(minutes=m)),
    offset=st.integers(min_value=-300 * 3600, max_value=300 * 3600).map(
        lambda s: dt.timedelta(seconds=s)
    ),
    zone=st.integers(min_value=-14 * 60, max_value=14 * 60).map(
        lambda m: dt.timezone(dt.timedelta(minutes=m))
    ),
)
def test_send_at_is_checked_against_the_schedulers_own_limit(
    limit: dt.timedelta, offset: dt.timedelta, zone: dt.timezone
) -> None:
    """Any provider, any limit, any offset, any zone: refused exactly when past or too far."""
    at = (NOW + offset).astimezone(zone)
    scheduler = Later(max_schedule_ahead=limit)
    if offset <= dt.timedelta(0) or offset > limit:
        with pytest.raises(UsageError, match=r"--at .*(in the past|at most .* in advance)"):
            dispatch.check_send_at(at, NOW, scheduler)
    else:
        dispatch.check_send_at(at, NOW, scheduler)


def test_send_at_without_a_zone_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="time zone"):
        dispatch.check_send_at(dt.datetime(2025, 12, 10, 9, 0), NOW, Later(dt.timedelta(hours=1)))


def test_sendgrid_allows_exactly_72_hours(mailer: SendGridMailer) -> None:
    dispatch.check_send_at(NOW + dt.timedelta(hours=72), NOW, mailer)
    with pytest.raises(UsageError, match="72 hours ahead; the sendgrid mailer schedules"):
        dispatch.check_send_at(NOW + dt.timedelta(hours=72, seconds=1), NOW, mailer)


def test_cancel_honours_the_schedulers_own_margin(engine: Engine) -> None:
    """A provider that needs an hour's notice: a send 30 minutes away is not cancelled."""
    at = db.now().replace(microsecond=0) + dt.timedelta(minutes=30)
    with db.writing(engine) as conn:
        ledger.open_send(conn, ISSUE, "weekly", "c0ffee", allow_changed=False)
        assert ledger.set_schedule(conn, ISSUE, "later-batch", at.astimezone(dt.UTC))
    strict = Later(dt.timedelta(hours=72), cancel_margin=dt.timedelta(hours=1))
    with pytest.raises(DispatchError, match="the later mailer needs at least 1 hour of notice"):
        dispatch.cancel_send(engine, ISSUE, strict)
    assert strict.cancelled == []
    lenient = Later(dt.timedelta(hours=72), cancel_margin=dt.timedelta(minutes=10))
    assert dispatch.cancel_send(engine, ISSUE, lenient) == 0
    assert lenient.cancelled == ["later-batch"]
