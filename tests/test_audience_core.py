"""Lists, subscribers, suppressions and audience selection on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from newsletter import audience, db, tokens
from newsletter.config import Settings
from newsletter.errors import AddressError, AudienceError
from newsletter.models import AudienceSpec


def test_normalization_merges_case_variants() -> None:
    assert audience.normalize_email("  Ana.Bek@Example.ORG ") == "ana.bek@example.org"


def test_a_non_ascii_local_part_is_refused_with_the_reason() -> None:
    with pytest.raises(AddressError, match="needs SMTPUTF8, which we do not send"):
        audience.normalize_email("ñandú@example.org")


@pytest.mark.parametrize("spelling", ["a@xn--bcher-kva.de", "A@Bücher.de", "a@XN--BCHER-KVA.de"])
def test_a_unicode_domain_is_stored_as_punycode(spelling: str) -> None:
    assert audience.normalize_email(spelling) == "a@xn--bcher-kva.de"


@pytest.mark.parametrize(
    "bad", ["", "no-at-sign", "a@b", "a@@example.org", "a@example.org\r\nBcc: x@y.org", "a b@c.org"]
)
def test_invalid_addresses_are_refused(bad: str) -> None:
    with pytest.raises(AddressError):
        audience.normalize_email(bad)


addresses = st.emails() | st.text(max_size=40)


@given(addresses)
def test_normalization_is_idempotent(text: str) -> None:
    try:
        once = audience.normalize_email(text)
    except AddressError:
        return
    assert audience.normalize_email(once) == once


@given(addresses)
def test_fast_path_agrees_with_email_validator(text: str) -> None:
    """The cached fast path accepts exactly what email-validator accepts without SMTPUTF8,
    in the same (ASCII) form."""
    try:
        result = validate_email(text.strip(), check_deliverability=False, allow_smtputf8=False)
        expected: str | None = str(result.ascii_email).lower()
    except EmailNotValidError:
        expected = None
    try:
        got: str | None = audience.normalize_email(text)
    except AddressError:
        got = None
    if "\r" in text or "\n" in text:
        assert got is None
    else:
        assert got == expected


@pytest.fixture
def weekly(engine: Engine) -> Engine:
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", "The weekly digest")
        audience.create_list(conn, "alerts")
    return engine


def test_lists_are_created_once_and_named_sanely(weekly: Engine) -> None:
    with db.writing(weekly) as conn, pytest.raises(AudienceError, match="already exists"):
        audience.create_list(conn, "weekly")
    with db.writing(weekly) as conn, pytest.raises(AudienceError, match="not allowed"):
        audience.create_list(conn, "Bad Name")
    with db.reading(weekly) as conn:
        assert [info.name for info in audience.all_lists(conn)] == ["alerts", "weekly"]


def test_missing_list_says_how_to_create_it(weekly: Engine) -> None:
    with db.writing(weekly) as conn, pytest.raises(AudienceError, match="lists create monthly"):
        audience.add_subscriber(conn, "a@example.org", "monthly")


def _emails(engine: Engine, spec: AudienceSpec) -> list[str]:
    with db.reading(engine) as conn:
        return [m.email for m in audience.select_recipients(conn, spec)]


def test_selection_takes_confirmed_unsuppressed_members_of_the_list(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        audience.add_subscriber(conn, "Conf@Example.org", "weekly", name="Aida K", confirmed=True)
        audience.add_subscriber(conn, "unconf@example.org", "weekly")
        audience.add_subscriber(conn, "other@example.org", "alerts", confirmed=True)
        audience.add_subscriber(conn, "bounced@example.org", "weekly", confirmed=True)
        audience.suppress(conn, "bounced@example.org", "bounced")
        audience.add_subscriber(conn, "left@example.org", "weekly", confirmed=True)
        audience.remove_subscriber(conn, "left@example.org", "weekly")
    assert _emails(weekly, AudienceSpec("weekly")) == ["conf@example.org"]
    with db.reading(weekly) as conn:
        member = next(audience.select_recipients(conn, AudienceSpec("weekly")))
    assert (member.first_name, member.name, member.list) == ("Aida", "Aida K", "weekly")
    assert len(member.public_id) >= 16
    assert "@" not in member.public_id


def test_unsubscribe_from_one_list_leaves_the_other(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        audience.add_subscriber(conn, "both@example.org", "weekly", confirmed=True)
        audience.add_subscriber(conn, "both@example.org", "alerts", confirmed=True)
        audience.remove_subscriber(conn, "both@example.org", "alerts")
    assert _emails(weekly, AudienceSpec("weekly")) == ["both@example.org"]
    assert _emails(weekly, AudienceSpec("alerts")) == []
    with db.reading(weekly) as conn:
        assert audience.is_suppressed(conn, "BOTH@example.org", "alerts")
        assert not audience.is_suppressed(conn, "both@example.org", "weekly")
        assert audience.is_suppressed(conn, "both@example.org")


def test_suppressing_twice_says_the_second_time_changed_nothing(weekly: Engine) -> None:
    """On both databases (PostgreSQL once reported every such insert as new)."""
    with db.writing(weekly) as conn:
        assert audience.suppress(conn, "gone@example.org", "bounced")
        assert not audience.suppress(conn, "Gone@example.org", "bounced")
        assert audience.suppress(conn, "gone@example.org", "unsubscribed", scope="weekly")
        public_id = audience.add_subscriber(conn, "left@example.org", "weekly", confirmed=True)
        sid = audience.subscriber_id_for(conn, public_id)
        assert sid is not None
        assert audience.unsubscribe(conn, sid, "weekly")
        assert not audience.unsubscribe(conn, sid, "weekly")


def test_an_unsubscribe_sticks_against_a_later_add(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        audience.add_subscriber(conn, "gone@example.org", "weekly", confirmed=True)
        audience.remove_subscriber(conn, "gone@example.org", "weekly")
    with db.writing(weekly) as conn, pytest.raises(AudienceError, match="suppressed"):
        audience.add_subscriber(conn, "Gone@example.org", "weekly", confirmed=True)
    assert _emails(weekly, AudienceSpec("weekly")) == []


def test_selection_filters_on_locale_and_attributes(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        for email, locale, city in [
            ("a@example.org", "en", "Bishkek"),
            ("b@example.org", "ru", "Bishkek"),
            ("c@example.org", "en", "Almaty"),
        ]:
            audience.add_subscriber(
                conn, email, "weekly", locale=locale, attributes={"city": city}, confirmed=True
            )
    assert _emails(weekly, AudienceSpec("weekly", (("locale", "en"),))) == [
        "a@example.org",
        "c@example.org",
    ]
    spec = AudienceSpec("weekly", (("locale", "en"), ("city", "Bishkek")))
    assert _emails(weekly, spec) == ["a@example.org"]
    assert _emails(weekly, AudienceSpec("weekly", (("city", "Osh"),))) == []


def test_selection_pages_through_more_than_one_page(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        for i in range(10):
            audience.add_subscriber(conn, f"p{i}@example.org", "weekly", confirmed=i != 4)
    with db.reading(weekly) as conn:
        got = [m.email for m in audience.select_recipients(conn, AudienceSpec("weekly"), page=3)]
    assert got == [f"p{i}@example.org" for i in range(10) if i != 4]


def test_show_lists_memberships_and_suppressions(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        audience.add_subscriber(conn, "x@example.org", "weekly", name="X", confirmed=True)
        audience.remove_subscriber(conn, "x@example.org", "weekly")
    with db.reading(weekly) as conn:
        info = audience.subscriber(conn, "X@example.org")
    assert [(m.list, m.status) for m in info.memberships] == [("weekly", "unsubscribed")]
    assert [(s.scope, s.reason) for s in info.suppressions] == [("weekly", "manual")]
    assert info.confirmed_at is not None


def test_both_spellings_of_an_idn_domain_are_one_subscriber(weekly: Engine) -> None:
    with db.writing(weekly) as conn:
        first = audience.add_subscriber(conn, "a@bücher.de", "weekly", confirmed=True)
        second = audience.add_subscriber(conn, "a@xn--bcher-kva.de", "weekly", confirmed=True)
    assert first == second
    assert _emails(weekly, AudienceSpec("weekly")) == ["a@xn--bcher-kva.de"]


def test_adding_a_non_ascii_local_part_is_refused(weekly: Engine) -> None:
    with db.writing(weekly) as conn, pytest.raises(AddressError, match="needs SMTPUTF8"):
        audience.add_subscriber(conn, "ñandú@example.org", "weekly")


def test_header_injection_in_name_is_refused(weekly: Engine) -> None:
    with db.writing(weekly) as conn, pytest.raises(AudienceError, match="line break"):
        audience.add_subscriber(conn, "a@example.org", "weekly", name="A\r\nBcc: x@evil.org")


def test_members_become_recipients_with_a_working_unsubscribe_url(
    weekly: Engine, settings: Settings
) -> None:
    with db.writing(weekly) as conn:
        public_id = audience.add_subscriber(
            conn, "r@example.org", "weekly", name="Rustam T", confirmed=True
        )
        [member] = audience.select_recipients(conn, AudienceSpec("weekly"))
    recipient = audience.as_recipient(member, settings)
    assert (recipient.email, recipient.first_name) == ("r@example.org", "Rustam")
    assert recipient.public_id == public_id
    token = recipient.unsubscribe_url.removeprefix("https://news.test/u/")
    assert tokens.verify(settings, "unsubscribe", token).public_id == public_id
