"""The outbox mailer: one .eml per recipient, filled exactly as SendGrid would fill it."""

from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
from dataclasses import replace
from pathlib import Path

import pytest

from newsletter import placeholders
from newsletter.config import load_settings
from newsletter.mailers import get_mailer
from newsletter.mailers.outbox import OutboxMailer, file_name
from newsletter.mailers.sendgrid import build_payload
from newsletter.models import Recipient, RenderedEmail, SendBatch


def test_one_file_per_recipient_under_the_issue_folder(
    tmp_path: Path, rendered: RenderedEmail
) -> None:
    settings = load_settings(tmp_path, env={})
    recipients = (Recipient("a@example.org", "A"), Recipient("b@example.org", "B"))
    OutboxMailer(settings.path("outbox_dir"), settings).send_batch(
        rendered, SendBatch("2025-12-10", "weekly", recipients, ("1", "2"))
    )
    folder = tmp_path / "outbox" / "2025-12-10"
    assert sorted(p.name for p in folder.iterdir()) == ["a@example.org.eml", "b@example.org.eml"]


def test_the_filled_parts_equal_sendgrids_substitution(
    tmp_path: Path, rendered: RenderedEmail
) -> None:
    """Apply the SendGrid payload's substitutions the way SendGrid does, compare with the file."""
    settings = load_settings(tmp_path, env={})
    tom = Recipient(
        "tom@example.org", '<b>Tom & "Jerry"</b>', "https://news.test/u/WyJwdWIxMjMiXQ.4Tto-_Lev"
    )
    batch = SendBatch("2025-12-10", "weekly", (tom,), ("1",))
    OutboxMailer(settings.path("outbox_dir"), settings).send_batch(rendered, batch)
    subs = build_payload(rendered, batch, settings)["personalizations"][0]["substitutions"]
    html, text = rendered.html, rendered.text
    for tag, value in subs.items():
        html, text = html.replace(tag, value), text.replace(tag, value)
    data = (tmp_path / "outbox" / "2025-12-10" / "tom@example.org.eml").read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    assert part(message, "html") == html.rstrip("\n")
    assert part(message, "plain") == text.rstrip("\n")


def part(message: email.message.EmailMessage, kind: str) -> str:
    """One part's text with the wire's CRLF turned back into newlines."""
    body = message.get_body((kind,))
    assert body is not None
    return str(body.get_content()).replace("\r\n", "\n").rstrip("\n")


def test_test_copies_are_kept_apart_with_the_prefix(
    tmp_path: Path, rendered: RenderedEmail
) -> None:
    settings = load_settings(tmp_path, env={})
    batch = SendBatch("2025-12-10", "weekly", (Recipient("ed@x.test"),), ("t",), "[TEST] ")
    OutboxMailer(settings.path("outbox_dir"), settings).send_batch(rendered, batch)
    data = (tmp_path / "outbox" / "2025-12-10-test" / "ed@x.test.eml").read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert str(message["Subject"]).startswith("[TEST] ")


def test_awkward_addresses_get_distinct_safe_names() -> None:
    names = {
        file_name("a/b@example.org"),
        file_name("a_b@example.org"),
        file_name("a\\b@example.org"),
    }
    assert len(names) == 3
    assert all("/" not in n and "\\" not in n for n in names)


def test_the_outbox_is_the_default_and_sendgrid_wins_with_a_key(tmp_path: Path) -> None:
    assert get_mailer(load_settings(tmp_path, env={})).name == "outbox"
    keyed = load_settings(tmp_path, env={"SENDGRID_API_KEY": "SG.x-a-key-long-enough-x"})
    assert get_mailer(keyed).name == "sendgrid"
    explicit = load_settings(
        tmp_path,
        env={"SENDGRID_API_KEY": "SG.x-a-key-long-enough-x", "NEWSLETTER_MAILER": "outbox"},
    )
    assert get_mailer(explicit).name == "outbox"


def test_placeholders_fill_agrees_with_the_substitution_map() -> None:
    tom = Recipient("t@example.org", "<Tom>", "https://u.test/u/WyJ0b20iXQ.sig-_")
    tags = placeholders.Tags("0123456789ab")
    html_tags = f"{tags.html('first_name')} {tags.html('unsubscribe_url')}"
    text_tags = f"{tags.text('first_name')} {tags.text('unsubscribe_url')}"
    both = RenderedEmail("i", "s", "p", "n", "f@x.test", html_tags, text_tags, "", "h", tags=tags)
    subs = placeholders.substitutions(tom, placeholders.used_fields(both))
    assert placeholders.fill(html_tags, tom, part="html", tags=tags) == (
        f"{subs[tags.html('first_name')]} {subs[tags.html('unsubscribe_url')]}"
    )
    assert placeholders.fill(text_tags, tom, part="text", tags=tags) == (
        f"{subs[tags.text('first_name')]} {subs[tags.text('unsubscribe_url')]}"
    )


def test_an_unsubscribe_url_that_html_would_escape_is_refused() -> None:
    """One tag serves both parts, so such a URL would land in the HTML unescaped."""
    odd = Recipient("t@example.org", "T", 'https://u.test/u/x"><script>')
    tags = placeholders.Tags("0123456789ab")
    both = RenderedEmail("i", "s", "p", "n", "f@x.test", tags.html("unsubscribe_url"), "", "", "h")
    with pytest.raises(ValueError, match="characters HTML must escape"):
        placeholders.substitutions(odd, placeholders.used_fields(replace(both, tags=tags)))


def test_a_long_unsubscribe_url_stays_a_plain_header(
    tmp_path: Path, rendered: RenderedEmail
) -> None:
    settings = load_settings(tmp_path, env={})
    url = "https://news.example.org/u/" + "WyJ0V0pQc1lS" * 12
    batch = SendBatch("2025-12-10", "weekly", (Recipient("a@example.org", "A", url),), ("1",))
    OutboxMailer(settings.path("outbox_dir"), settings).send_batch(rendered, batch)
    data = (tmp_path / "outbox" / "2025-12-10" / "a@example.org.eml").read_bytes()
    assert f"List-Unsubscribe: <{url}>\r\n".encode() in data


def test_an_unbuildable_recipient_fails_alone_and_the_others_are_delivered(
    tmp_path: Path, rendered: RenderedEmail
) -> None:
    """An address stored before SMTPUTF8 addresses were refused cannot go in a To header."""
    settings = load_settings(tmp_path, env={})
    people = (Recipient("a@example.org"), Recipient("ñandú@example.org"), Recipient("b@x.org"))
    outcome = OutboxMailer(settings.path("outbox_dir"), settings).send_batch(
        rendered, SendBatch("2025-12-10", "weekly", people, ("1", "2", "3"))
    )
    assert [(r.keys, r.state) for r in outcome.results] == [
        (("1",), "sent"),
        (("2",), "failed"),
        (("3",), "sent"),
    ]
    assert "cannot be built" in outcome.results[1].error
    folder = tmp_path / "outbox" / "2025-12-10"
    assert sorted(p.name for p in folder.iterdir()) == ["a@example.org.eml", "b@x.org.eml"]


def test_each_copy_is_dated_when_it_is_written(tmp_path: Path, rendered: RenderedEmail) -> None:
    """Not the issue's date at 06:00: a Date far from delivery is a spam sign
    (DATE_IN_PAST/DATE_IN_FUTURE) and sorts the copy wrongly in the inbox."""
    settings = load_settings(tmp_path, env={})
    dated = replace(rendered, issue_date=dt.date(2025, 12, 10))
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    batch = SendBatch("2025-12-10", "weekly", (Recipient("a@example.org", "A"),), ("1",))
    OutboxMailer(settings.path("outbox_dir"), settings).send_batch(dated, batch)
    after = dt.datetime.now(dt.UTC)
    data = (tmp_path / "outbox" / "2025-12-10" / "a@example.org.eml").read_bytes()
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert before <= message["Date"].datetime <= after
