"""The SMTP mailer against aiosmtpd on 127.0.0.1."""

from __future__ import annotations

import collections
import dataclasses
import datetime as dt
import email
import email.message
import email.policy
import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from sqlalchemy.engine import Engine

from newsletter import audience, db, dispatch
from newsletter.config import Secret, Settings, load_settings
from newsletter.errors import AuthError, ConfigError, UnreachableError
from newsletter.mailers.smtp import SmtpMailer, _deliver
from newsletter.models import AudienceSpec, Recipient, RenderedEmail, SendBatch
from tests.conftest import populate

REFUSED = "refused@example.org"
DROPPED = "dropped@example.org"  # the server takes this message, then the connection dies
CLOSING = "closing@example.org"  # the server answers 421 to this DATA and hangs up


class Inbox:
    """aiosmtpd handler: keeps every message, refuses one address like a real server would."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if envelope.rcpt_tos == [CLOSING]:
            return "421 4.3.2 Service shutting down"
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        if envelope.rcpt_tos == [DROPPED]:
            server.transport.close()
        return "250 Message accepted"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def check_login(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"editor", b"s3cret")
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        authenticator=check_login,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_settings(tmp_path: Any, inbox: tuple[Inbox, int]) -> Settings:
    return load_settings(
        tmp_path,
        env={"NEWSLETTER_SMTP_PORT": str(inbox[1]), "NEWSLETTER_SMTP_TIMEOUT": "5"},
    )


def batch(*recipients: Recipient) -> SendBatch:
    keys = tuple(str(i) for i in range(len(recipients)))
    return SendBatch("2025-12-10", "weekly", recipients, keys)


def test_each_recipient_gets_their_own_filled_message(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    long_url = "https://news.test/u/" + "WyJ0V0pQc1lS" * 12
    tom = Recipient("tom@example.org", "<b>Tom & Jerry</b>", long_url)
    aida = Recipient("aida@example.org", "Aida", "https://news.test/u/a1")
    outcome = SmtpMailer(smtp_settings).send_batch(rendered, batch(tom, aida))
    assert [r.state for r in outcome.results] == ["sent", "sent"]
    handler, _ = inbox
    assert [to for to, _ in handler.messages] == [["tom@example.org"], ["aida@example.org"]]
    message = email.message_from_bytes(handler.messages[0][1], policy=email.policy.default)
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "Hello &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;" in html
    assert "Hello <b>Tom & Jerry</b>" in text
    assert f"List-Unsubscribe: <{long_url}>".encode() in handler.messages[0][1]
    assert message["List-Id"] == "Central Asia Weekly <weekly.news.example.org>"


def test_each_copy_is_dated_when_it_is_sent(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    """Not the issue's date at 06:00, which SpamAssassin scores DATE_IN_PAST/IN_FUTURE."""
    dated = dataclasses.replace(rendered, issue_date=dt.date(2025, 12, 10))
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    outcome = SmtpMailer(smtp_settings).send_batch(dated, batch(Recipient("a@example.org")))
    after = dt.datetime.now(dt.UTC)
    assert [r.state for r in outcome.results] == ["sent"]
    message = email.message_from_bytes(inbox[0].messages[0][1], policy=email.policy.default)
    assert before <= message["Date"].datetime <= after


def test_a_refused_address_fails_alone(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    outcome = SmtpMailer(smtp_settings).send_batch(
        rendered, batch(Recipient(REFUSED), Recipient("ok@example.org"))
    )
    assert [r.state for r in outcome.results] == ["failed", "sent"]
    assert outcome.results[0].error.startswith("550")


def test_an_unbuildable_recipient_fails_alone(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    people = (Recipient("ñandú@example.org"), Recipient("ok@example.org"))
    outcome = SmtpMailer(smtp_settings).send_batch(rendered, batch(*people))
    assert [r.state for r in outcome.results] == ["failed", "sent"]
    assert "cannot be built" in outcome.results[0].error
    assert [to for to, _ in inbox[0].messages] == [["ok@example.org"]]


def test_login_with_the_configured_credentials(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    good = dataclasses.replace(
        smtp_settings, smtp_username="editor", smtp_password=Secret("s3cret")
    )
    assert (
        SmtpMailer(good).send_batch(rendered, batch(Recipient("a@example.org"))).results[0].state
        == "sent"
    )
    bad = dataclasses.replace(good, smtp_password=Secret("wrong-password"))
    with pytest.raises(AuthError) as caught:
        SmtpMailer(bad).send_batch(rendered, batch(Recipient("b@example.org")))
    assert "wrong-password" not in str(caught.value)
    assert len(inbox[0].messages) == 1


def test_no_server_is_unreachable_and_nothing_was_sent(
    tmp_path: Any, rendered: RenderedEmail
) -> None:
    settings = load_settings(tmp_path, env={"NEWSLETTER_SMTP_PORT": str(free_port())})
    with pytest.raises(UnreachableError, match="nothing was sent"):
        SmtpMailer(settings).send_batch(rendered, batch(Recipient("a@example.org")))


def test_a_connection_lost_mid_batch_is_unknown_and_the_rest_go_back(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    people = (Recipient("first@example.org"), Recipient(DROPPED), Recipient("third@example.org"))
    outcome = SmtpMailer(smtp_settings).send_batch(rendered, batch(*people))
    assert [(r.keys, r.state) for r in outcome.results] == [
        (("0",), "sent"),
        (("1",), "unknown"),
        (("2",), "released"),
    ]
    assert [to for to, _ in inbox[0].messages] == [["first@example.org"], [DROPPED]]


def test_a_refusal_that_closes_the_connection_fails_one_and_releases_the_rest(
    smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    people = (Recipient("first@example.org"), Recipient(CLOSING), Recipient("third@example.org"))
    outcome = SmtpMailer(smtp_settings).send_batch(rendered, batch(*people))
    assert [(r.keys, r.state) for r in outcome.results] == [
        (("0",), "sent"),
        (("1",), "failed"),
        (("2",), "released"),
    ]
    assert outcome.results[1].error.startswith("421")
    assert [to for to, _ in inbox[0].messages] == [["first@example.org"]]


def test_an_address_needing_smtputf8_fails_and_the_connection_goes_on() -> None:
    """A server without SMTPUTF8 (as many are): smtplib refuses before sending anything."""
    handler, port = Inbox(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, enable_SMTPUTF8=False)
    message = email.message.EmailMessage()
    message["From"] = "digest@news.example.org"
    message["Subject"] = "Hello"
    message.set_content("Hello\n")
    controller.start()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=5) as client:
            client.ehlo()
            refused = _deliver(client, message, "ñandú@example.org", "k1")
            accepted = _deliver(client, message, "ok@example.org", "k2")
    finally:
        controller.stop()
    assert (refused.state, accepted.state) == ("failed", "sent")
    assert "SMTPUTF8" in refused.error
    assert [to for to, _ in handler.messages] == [["ok@example.org"]]


@pytest.mark.parametrize("host", ["mail.example.org", "192.0.2.10", "localhost.example.org"])
def test_a_clear_text_login_to_a_remote_host_is_refused(tmp_path: Path, host: str) -> None:
    env = {"NEWSLETTER_SMTP_HOST": host, "NEWSLETTER_SMTP_USERNAME": "editor"}
    with pytest.raises(ConfigError, match=r"smtp_security.*smtp_username.*smtp_host"):
        SmtpMailer(load_settings(tmp_path, env=env))
    SmtpMailer(load_settings(tmp_path, env={**env, "NEWSLETTER_SMTP_SECURITY": "starttls"}))
    SmtpMailer(load_settings(tmp_path, env={"NEWSLETTER_SMTP_HOST": host}))  # no login


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "localhost", "LOCALHOST"])
def test_a_clear_text_login_over_loopback_is_allowed(tmp_path: Path, host: str) -> None:
    env = {"NEWSLETTER_SMTP_HOST": host, "NEWSLETTER_SMTP_USERNAME": "editor"}
    assert SmtpMailer(load_settings(tmp_path, env=env)).settings.smtp_host == host


def test_through_the_ledger_the_rest_of_a_broken_batch_is_sent_on_a_new_connection(
    engine: Engine, smtp_settings: Settings, inbox: tuple[Inbox, int], rendered: RenderedEmail
) -> None:
    first = populate(engine, 3)
    later = ["later1@example.org", "later2@example.org"]
    with db.writing(engine) as conn:  # ids in order: the three, the dropped one, the later two
        for address in [DROPPED, *later]:
            audience.add_subscriber(conn, address, "weekly", confirmed=True)
    report = dispatch.send_issue(
        engine,
        rendered,
        AudienceSpec("weekly"),
        SmtpMailer(smtp_settings),
        lambda public_id: f"https://news.test/u/{public_id}",
        dispatch.SendOptions(),
    )
    assert (report.sent, report.unknown) == (5, 1)
    delivered = collections.Counter(to[0] for to, _ in inbox[0].messages)
    assert delivered == collections.Counter([*first, DROPPED, *later])


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (the test trusts it through smtp_ca_file)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return key, cert


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_tls_and_starttls_verify_the_server_and_log_in_over_it(
    security: str, certificate: tuple[Path, Path], tmp_path: Path, rendered: RenderedEmail
) -> None:
    key, cert = certificate
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    handler, port = Inbox(), free_port()
    options: dict[str, Any] = (
        {"tls_context": server_tls, "require_starttls": True}
        if security == "starttls"
        # aiosmtpd only counts STARTTLS as TLS for AUTH; this connection is TLS from the start.
        else {"ssl_context": server_tls, "auth_require_tls": False}
    )
    controller = Controller(
        handler, hostname="127.0.0.1", port=port, authenticator=check_login, **options
    )
    controller.start()
    try:
        settings = load_settings(
            tmp_path,
            env={
                "NEWSLETTER_SMTP_PORT": str(port),
                "NEWSLETTER_SMTP_SECURITY": security,
                "NEWSLETTER_SMTP_CA_FILE": str(cert),
                "NEWSLETTER_SMTP_USERNAME": "editor",
                "NEWSLETTER_SMTP_PASSWORD": "s3cret",
            },
        )
        outcome = SmtpMailer(settings).send_batch(rendered, batch(Recipient("a@example.org")))
        untrusted = dataclasses.replace(settings, smtp_ca_file="")
        with pytest.raises(UnreachableError):  # the system does not trust a self-signed cert
            SmtpMailer(untrusted).send_batch(rendered, batch(Recipient("b@example.org")))
    finally:
        controller.stop()
    assert [r.state for r in outcome.results] == ["sent"]
    assert [to for to, _ in handler.messages] == [["a@example.org"]]
