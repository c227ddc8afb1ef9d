"""The web copy behind every email's "View in browser" link."""

from __future__ import annotations

import dataclasses
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from newsletter import audience, copies, db, dispatch, placeholders, tokens
from newsletter.build import build_issue
from newsletter.config import Settings
from newsletter.mailers.outbox import OutboxMailer, file_name
from newsletter.models import AudienceSpec, Recipient
from newsletter.web import create_app


@pytest.fixture
def site(db_settings: Settings, project: Path, engine: Engine) -> Settings:
    """The sample project's issues and content, on the test database."""
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        audience.add_subscriber(conn, "dana@example.org", "weekly", name="Dana", confirmed=True)
    return dataclasses.replace(db_settings, root=project)


@pytest.fixture
def client(site: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(site), base_url="https://news.test") as http:
        yield http


def send_sample(site: Settings, engine: Engine) -> None:
    """Send the sample issue through the outbox (one .eml per recipient)."""
    email = build_issue(site.path("issues_dir") / "2025-12-10.yaml", site).email
    mailer = OutboxMailer(site.path("outbox_dir"), site)
    report = dispatch.send_issue(
        engine,
        email,
        AudienceSpec("weekly"),
        mailer,
        lambda public_id: tokens.unsubscribe_url(site, public_id, "weekly"),
        dispatch.SendOptions(),
    )
    assert report.sent == 1


def test_a_sent_issue_has_a_public_copy_for_nobody_in_particular(
    client: TestClient, site: Settings, engine: Engine
) -> None:
    assert client.get("/issues/2025-12-10/").status_code == 404  # unsent: no public copy
    send_sample(site, engine)
    page = client.get("/issues/2025-12-10/")
    assert page.status_code == 200
    assert "Kyrgyzstan Begins Dried Apricot Exports to China" in page.text
    assert "Hello reader," in page.text
    assert "Dana" not in page.text
    assert "/u/" not in page.text  # no real unsubscribe token in a public page
    assert "-unsubscribe_url" not in page.text
    assert 'href="https://news.test/unsubscribe"' in page.text
    help_page = client.get("/unsubscribe")
    assert "Unsubscribe links are personal" in help_page.text


@pytest.mark.parametrize("name", ["nope", "..%2F..%2Fetc%2Fpasswd", "2025-12-10.yaml"])
def test_unknown_or_odd_names_get_the_same_404(client: TestClient, name: str) -> None:
    page = client.get(f"/issues/{name}/")
    assert page.status_code == 404
    assert "This link is not valid" in page.text


def test_the_footer_link_of_the_email_is_this_page(site: Settings) -> None:
    email = build_issue(site.path("issues_dir") / "2025-12-10.yaml", site).email
    assert 'href="https://news.test/issues/2025-12-10/"' in email.html


def test_the_stored_copy_is_what_the_reader_received(site: Settings, engine: Engine) -> None:
    send_sample(site, engine)
    received = site.path("outbox_dir") / "2025-12-10" / file_name("dana@example.org")
    message = email.message_from_bytes(received.read_bytes(), policy=email.policy.default)
    with db.reading(engine) as conn:
        copy = copies.load(conn, "2025-12-10")
    assert copy is not None
    html, text = message.get_body(("html",)), message.get_body(("plain",))
    assert html is not None
    assert text is not None
    dana = Recipient("dana@example.org", "Dana", str(message["List-Unsubscribe"]).strip("<>"))
    # Line by line: MIME carries text with CRLF line ends and a final line break.
    filled = placeholders.fill(copy.html, dana, part="html", tags=copy.tags)
    assert html.get_content().splitlines() == filled.splitlines()
    filled = placeholders.fill(copy.text, dana, part="text", tags=copy.tags)
    assert text.get_content().splitlines() == filled.splitlines()
    assert message["Subject"] == copy.subject
