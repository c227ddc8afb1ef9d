"""Mail Send payloads: per-recipient fields, SendGrid's limits, and the official schema."""

from __future__ import annotations

import datetime as dt
import json
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator, FormatChecker

from newsletter.config import Settings, load_settings
from newsletter.mailers.sendgrid import build_payload, message_payload
from newsletter.models import Recipient, RenderedEmail, SendBatch

# SendGrid's official Mail Send OpenAPI schema, vendored unchanged (MIT; see SOURCE.md there).
SCHEMA = Path(__file__).parent / "data" / "sendgrid-oai" / "tsg_mail_v3.json"
BODY = "#/components/requestBodies/PostMailSend/content/application~1json/schema"
NOW = dt.datetime(2025, 12, 10, 1, 0, tzinfo=dt.UTC)


def mail_send_validator() -> Draft202012Validator:
    document = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # The whole document is the root, so the body schema's "#/components/..." refs resolve.
    return Draft202012Validator({**document, "$ref": BODY}, format_checker=FormatChecker())


def people(n: int, *, url: bool = True) -> tuple[Recipient, ...]:
    return tuple(
        Recipient(
            email=f"reader{i}@example.org",
            first_name=f"Reader {i}",
            unsubscribe_url=f"https://news.example.org/u/token{i}" if url else "",
            public_id=f"sub{i}",
        )
        for i in range(n)
    )


def batch(recipients: tuple[Recipient, ...], **extra: Any) -> SendBatch:
    keys = tuple(str(i + 1) for i in range(len(recipients)))
    return SendBatch("2025-12-10", "weekly", recipients, keys, **extra)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(tmp_path, env={})


def test_a_name_with_markup_is_escaped_for_html_and_raw_for_text(
    rendered: RenderedEmail, settings: Settings
) -> None:
    tom = Recipient("tom@example.org", "<b>Tom & Jerry</b>", "https://news.example.org/u/t1")
    entry = build_payload(rendered, batch((tom,)), settings)["personalizations"][0]
    assert entry["substitutions"]["-first_name_html-"] == "&lt;b&gt;Tom &amp; Jerry&lt;/b&gt;"
    assert entry["substitutions"]["-first_name-"] == "<b>Tom & Jerry</b>"


def test_each_recipient_gets_one_click_unsubscribe_headers(
    rendered: RenderedEmail, settings: Settings
) -> None:
    entry = build_payload(rendered, batch(people(1)), settings)["personalizations"][0]
    assert entry["headers"] == {
        "List-Unsubscribe": "<https://news.example.org/u/token0>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_custom_args_carry_the_issue_and_ledger_key_and_no_personal_data(
    rendered: RenderedEmail, settings: Settings
) -> None:
    entries = build_payload(rendered, batch(people(2)), settings)["personalizations"]
    assert [e["custom_args"] for e in entries] == [
        {"newsletter_issue": "2025-12-10", "newsletter_key": "1"},
        {"newsletter_issue": "2025-12-10", "newsletter_key": "2"},
    ]


def test_list_id_categories_and_content_order(rendered: RenderedEmail, settings: Settings) -> None:
    payload = build_payload(rendered, batch(people(1)), settings)
    assert payload["headers"] == {"List-Id": "Central Asia Weekly <weekly.news.example.org>"}
    assert payload["categories"] == ["newsletter", "weekly", "2025-12-10"]
    assert [c["type"] for c in payload["content"]] == ["text/plain", "text/html"]


def test_a_batch_over_1000_or_with_a_repeated_address_is_refused_before_sending(
    rendered: RenderedEmail, settings: Settings
) -> None:
    with pytest.raises(ValueError, match="at most 1000"):
        build_payload(rendered, batch(people(1001)), settings)
    twice = (Recipient("a@example.org"), Recipient("A@example.org"))
    with pytest.raises(ValueError, match="same address twice"):
        build_payload(rendered, batch(twice), settings)


def shapes(rendered: RenderedEmail, settings: Settings) -> dict[str, dict[str, Any]]:
    """Every payload shape the project produces."""
    later = NOW + dt.timedelta(hours=5)
    return {
        "plain": build_payload(rendered, batch(people(3)), settings),
        "full": build_payload(rendered, batch(people(1000)), settings),
        "scheduled": build_payload(
            rendered, batch(people(2), send_at=later, batch_id="b1"), settings
        ),
        "sandbox": build_payload(rendered, batch(people(2)), settings, sandbox=True),
        "test copy": build_payload(
            rendered, batch(people(1, url=False), subject_prefix="[TEST] "), settings
        ),
        "nameless": build_payload(rendered, batch((Recipient("x@example.org"),)), settings),
        "transactional": message_payload(transactional()),
    }


def transactional() -> EmailMessage:
    message = EmailMessage()
    message["From"] = Address("Central Asia Weekly", addr_spec="digest@news.example.org")
    message["To"] = Address("Aida", addr_spec="aida@example.org")
    message["Subject"] = "Confirm your subscription to weekly"
    message.set_content("Confirm here: https://news.example.org/confirm/abc\n")
    return message


def test_every_payload_shape_validates_against_sendgrids_official_schema(
    rendered: RenderedEmail, settings: Settings
) -> None:
    validator = mail_send_validator()
    for name, payload in shapes(rendered, settings).items():
        errors = [e.message for e in validator.iter_errors(payload)]
        assert errors == [], name


def test_the_contract_check_catches_a_payload_sendgrid_would_refuse(
    rendered: RenderedEmail, settings: Settings
) -> None:
    payload = build_payload(rendered, batch(people(1)), settings)
    payload["categories"] = [f"c{i}" for i in range(11)]
    assert not mail_send_validator().is_valid(payload)


@given(st.text(min_size=1, max_size=40))
def test_any_name_survives_both_parts(name: str) -> None:
    settings = Settings()
    email = RenderedEmail(
        "i", "s", "p", "n", "f@example.org", "-first_name_html-", "-first_name-", "", "h"
    )
    subs = build_payload(email, batch((Recipient("a@example.org", name),)), settings)[
        "personalizations"
    ][0]["substitutions"]
    assert subs["-first_name-"] == name
    assert "<" not in subs["-first_name_html-"]
    assert '"' not in subs["-first_name_html-"]


def test_our_sendgrid_module_uses_the_real_sendgrid_package() -> None:
    """`newsletter/mailers/sendgrid.py` must not shadow the `sendgrid` package it imports."""
    import newsletter.mailers.sendgrid as ours

    imported = vars(ours)["sendgrid"]
    assert imported.__name__ == "sendgrid"
    assert hasattr(imported, "SendGridAPIClient")


def test_only_the_placeholders_the_email_uses_are_substituted(
    rendered: RenderedEmail, settings: Settings
) -> None:
    from dataclasses import replace

    only_name = replace(rendered, html="<p>Hello -first_name_html-</p>", text="Hi -first_name-")
    payload = build_payload(only_name, batch(people(2)), settings)
    for entry in payload["personalizations"]:
        assert set(entry["substitutions"]) == {"-first_name_html-", "-first_name-"}
    in_subject = replace(only_name, subject="For -email-")
    entry = build_payload(in_subject, batch(people(1)), settings)["personalizations"][0]
    assert "-email-" in entry["substitutions"]


@given(st.text(max_size=40))
def test_the_escape_fast_path_equals_html_escape(value: str) -> None:
    import html

    from newsletter.placeholders import escape

    assert escape(value) == html.escape(value, quote=True)
