"""Header injection through RFC 2047 encoded words (issue 9, item 1), attacked as a class.

Names, subjects, the sender's name and list titles are drawn from the dangerous alphabet:
encoded words (q and b, upper and lower case) of CR, LF, NUL, ``:``, ``<``, ``>``, ``,``,
``"`` and whole header lines, bare ``=?``/``?=``, specials and non-ASCII. Every test
asserts on what the receiving side got: the bytes aiosmtpd received (envelope and
message), the .eml files of the outbox, the JSON the fake SendGrid received.

A received display name is decoded with the RFC 2047 decoder of ``email.header``: the
modern parser of Python 3.11 puts a space between adjacent encoded words in a display
name (RFC 2047 section 6.2 says to drop it), so it cannot judge a long encoded name.
"""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import itertools
import re
import smtplib
import threading
from collections.abc import Iterator
from email.header import decode_header, make_header
from email.message import EmailMessage, Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import audience, db
from newsletter.config import Settings, load_settings
from newsletter.errors import AddressError, AudienceError, AuthError, ConfigError, IssueError
from newsletter.headers import CONTROL
from newsletter.issues import load_issue
from newsletter.mailers.outbox import OutboxMailer
from newsletter.mailers.sendgrid import SendGridMailer, build_payload, message_payload
from newsletter.mailers.smtp import SmtpMailer
from newsletter.message import build_message, confirmation, to_bytes
from newsletter.models import Recipient, RenderedEmail, SendBatch
from newsletter.schema import subscribers
from newsletter.web import create_app
from tests.conftest import TEST_KEYS, run_newsletter, uvicorn_port
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.test_sendgrid_payload import mail_send_validator
from tests.test_smtp import free_port

SERVERS = hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
FAST = hsettings(max_examples=60, deadline=None)
NOWHERE = Path(__file__).parent / "data"  # settings from the environment given, no toml file

# --- The dangerous alphabet ---------------------------------------------------------------

DANGER = ["\r", "\n", "\x00", ":", "<", ">", ",", '"']
HEADER_LINES = [
    "\r\nBcc: eve@evil.example",
    "\r\nTo: eve@evil.example",
    "\r\nReply-To: eve@evil.example",
    "\r\nContent-Type: text/html\r\n\r\n<h1>Win</h1>",
    "eve@evil.example>, <",
]
INNER = DANGER + HEADER_LINES + ["Eve", " ", "Ёж", "é"]
RAW_CONTROLS = ["\r", "\n", "\r\n", "\x00", "\t", "\x1b", "\x7f", "\x85", "\u2028", "\u2029"]
LITERALS = [
    "=?", "?=", "=?utf-8?q?", "=?UTF-8?B?", "?= ", " ", "Eve", "Ёж", "é", "😀", ":", "<", ">",
    ",", '"', "\\", "@", ";", "(", "eve@evil.example", "=0D=0A", "_", "Nurlan Tokayev",
]  # fmt: skip


def q_encode(text: str, lower: bool) -> str:
    """RFC 2047 Q: every byte that is not a letter or digit as =XX (or =xx)."""
    hexed = "={:02x}" if lower else "={:02X}"
    return "".join(
        chr(b) if chr(b).isalnum() and b < 128 else hexed.format(b) for b in text.encode()
    )


@st.composite
def encoded_word(draw: st.DrawFn) -> str:
    inner = "".join(draw(st.lists(st.sampled_from(INNER), min_size=1, max_size=4)))
    charset = draw(st.sampled_from(["utf-8", "UTF-8", "Utf-8"]))
    kind = draw(st.sampled_from("qQbB"))
    if kind in "qQ":
        text = q_encode(inner, lower=draw(st.booleans()))
    else:
        text = base64.b64encode(inner.encode()).decode()
    return f"=?{charset}?{kind}?{text}?="


def header_text(max_size: int = 5) -> st.SearchStrategy[str]:
    """Text that looks like, contains or abuses encoded words, without raw controls."""
    piece = st.one_of(encoded_word(), st.sampled_from(LITERALS))
    return (
        st.lists(piece, min_size=1, max_size=max_size)
        .map(lambda parts: " ".join(parts).strip())
        .filter(lambda text: bool(text) and len(text) <= 200)
    )


@st.composite
def with_raw_control(draw: st.DrawFn) -> str:
    text = draw(header_text(3))
    at = draw(st.integers(0, len(text)))
    return text[:at] + draw(st.sampled_from(RAW_CONTROLS)) + text[at:]


# --- Reading what was received -------------------------------------------------------------


def parse(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def raw_header(raw: bytes, name: str) -> str:
    """The one `name` header as it came, unfolded (RFC 5322 section 2.2.3)."""
    legacy: Message = email.message_from_bytes(raw, policy=email.policy.compat32)
    values = legacy.get_all(name, [])
    assert len(values) == 1, f"{name}: {values!r}"
    return re.sub(r"\r?\n", "", str(values[0])).strip()


def decode_phrase(phrase: str) -> str:
    """A display name as a conforming reader shows it: quoted string or encoded words."""
    if phrase.startswith('"'):
        assert phrase.endswith('"'), phrase
        assert len(phrase) >= 2, phrase
        return re.sub(r"\\(.)", r"\1", phrase[1:-1])
    assert "=?" not in re.sub(r"=\?utf-8\?[qb]\?[^?\s]*\?=", "", phrase), phrase
    return str(make_header(decode_header(phrase)))


def mailbox(raw: bytes, name: str) -> tuple[str, str]:
    """(display name, address) of a header that must hold exactly one mailbox."""
    parsed = parse(raw)[name]
    assert len(parsed.addresses) == 1, parsed.addresses  # Python's parser sees one mailbox too
    value = raw_header(raw, name)
    found = re.fullmatch(r"(?:(?P<phrase>.+) )?<(?P<addr>[^<>\s\"]+)>|(?P<bare>[^<>\s\"]+)", value)
    assert found, value
    address = found["addr"] or found["bare"]
    assert parsed.addresses[0].addr_spec == address
    return decode_phrase(found["phrase"] or ""), address


def subject_of(raw: bytes) -> str:
    return str(make_header(decode_header(raw_header(raw, "Subject"))))


def header_names(raw: bytes) -> list[str]:
    return sorted(parse(raw).keys())


def list_id_of(raw: bytes) -> tuple[str, str]:
    found = re.fullmatch(r"(?P<phrase>.*) <(?P<id>[^<>\s]+)>", raw_header(raw, "List-Id"))
    assert found
    return decode_phrase(found["phrase"]), found["id"]


# --- Servers: aiosmtpd that keeps what it got, the real web app under uvicorn ---------------


class Inbox:
    """aiosmtpd handler keeping every (envelope recipients, message bytes)."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], bytes]] = []
        self.arrived = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.arrived:
            self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
            self.arrived.notify_all()
        return "250 Message accepted"

    def wait_for(self, address: str, timeout: float = 10) -> tuple[list[str], bytes]:
        with self.arrived:
            found = self.arrived.wait_for(lambda: self.find(address) is not None, timeout)
            assert found, f"no message for {address} arrived"
            message = self.find(address)
            assert message is not None
            return message

    def find(self, address: str) -> tuple[list[str], bytes] | None:
        return next((m for m in self.messages if address in m[0]), None)


@pytest.fixture
def smtp_inbox() -> Iterator[tuple[Inbox, int]]:
    handler = Inbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def smtp_settings(tmp_path: Path, smtp_inbox: tuple[Inbox, int]) -> Settings:
    return load_settings(
        tmp_path,
        env={
            "NEWSLETTER_SECRET_KEY": TEST_KEYS,
            "NEWSLETTER_BASE_URL": "https://news.test",
            "NEWSLETTER_MAILER": "smtp",
            "NEWSLETTER_SMTP_PORT": str(smtp_inbox[1]),
            "NEWSLETTER_SMTP_TIMEOUT": "5",
            # Every example posts from 127.0.0.1: the budgets are attacked elsewhere.
            "NEWSLETTER_SUBSCRIBE_PER_CLIENT_HOUR": "100000",
            "NEWSLETTER_SUBSCRIBE_PER_HOUR": "100000",
        },
    )


@pytest.fixture
def serve(smtp_settings: Settings) -> Iterator[httpx.Client]:
    """The real `serve` app under uvicorn on 127.0.0.1, mailing through aiosmtpd."""
    engine = db.connect(smtp_settings)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", public=True)  # only public lists take the form
    engine.dispose()
    with (
        uvicorn_port(create_app(smtp_settings)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        yield http


_counter = itertools.count()


def fresh_address() -> str:
    return f"reader{next(_counter)}@example.org"


def subscribe(http: httpx.Client, address: str, name: str) -> httpx.Response:
    return http.post("/subscribe", data={"email": address, "name": name, "list": "weekly"})


# --- (a) The confirmation mail of the web form, received over SMTP --------------------------


@SERVERS
@given(name=header_text())
def test_the_confirmation_carries_any_name_as_text_and_nothing_else(
    serve: httpx.Client, smtp_inbox: tuple[Inbox, int], smtp_settings: Settings, name: str
) -> None:
    """A name posted with an address is the poster's text, not the owner's: the confirmation
    carries none of it in a header (To is the bare address, exactly one recipient, the same
    headers as for a benign post), and the owner's confirming click stores it as typed."""
    inbox = smtp_inbox[0]
    benign, victim = fresh_address(), fresh_address()
    assert subscribe(serve, benign, "Benign Reader").status_code == 200
    assert subscribe(serve, victim, name).status_code == 200
    _, expected = inbox.wait_for(benign)
    envelope, raw = inbox.wait_for(victim)

    assert envelope == [victim]  # nobody else was sent this message
    assert header_names(raw) == header_names(expected)  # no Bcc, Reply-To, second To...
    assert mailbox(raw, "To") == ("", victim)
    assert mailbox(raw, "From") == mailbox(expected, "From")
    assert subject_of(raw) == subject_of(expected)
    message = parse(raw)
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    body = message.get_content()
    assert "Confirm here" in body
    assert "<h1>" not in body
    [link] = re.findall(r"https://news\.test(/confirm/\S+)", body)
    assert serve.post(link).status_code == 200
    engine = db.connect(smtp_settings)
    with db.reading(engine) as conn:
        stored = conn.execute(
            select(subscribers.c.name).where(subscribers.c.email == victim)
        ).scalar_one()
    engine.dispose()
    assert stored == name.strip()


@SERVERS
@given(name=with_raw_control())
def test_the_form_refuses_a_name_with_a_raw_control_and_sends_nothing(
    serve: httpx.Client, smtp_inbox: tuple[Inbox, int], name: str
) -> None:
    assume(CONTROL.search(name.strip()))  # not just spacing at either end, which is trimmed
    inbox = smtp_inbox[0]
    victim, sentinel = fresh_address(), fresh_address()
    response = subscribe(serve, victim, name)
    assert response.status_code == 400
    assert "control character" in response.text or "line break" in response.text
    assert subscribe(serve, sentinel, "Sentinel").status_code == 200
    inbox.wait_for(sentinel)  # mail is sent in order: anything for the victim came first
    assert inbox.find(victim) is None


# --- (b) Issue messages: outbox .eml files and SMTP ----------------------------------------


def rendered_with(subject: str, from_name: str) -> RenderedEmail:
    return RenderedEmail(
        issue_name="2025-12-10",
        subject=subject,
        preheader="This week in Central Asia",
        from_name=from_name,
        from_email="digest@news.example.org",
        html='<p>Hello -first_name_html-</p><a href="-unsubscribe_url-">Unsubscribe</a>',
        text="Hello -first_name-\nUnsubscribe: -unsubscribe_url-\n",
        mjml="<mjml></mjml>",
        content_hash="c0ffee",
    )


BENIGN = Recipient(
    "benign@example.org", "Benign Reader", "https://news.test/u/benign", public_id="b"
)


def victims(names: list[str]) -> tuple[Recipient, ...]:
    return tuple(
        Recipient(f"victim{i}@example.org", name, f"https://news.test/u/t{i}", public_id=str(i))
        for i, name in enumerate(names)
    )


def issue_batch(recipients: tuple[Recipient, ...], prefix: str) -> SendBatch:
    keys = tuple(str(i) for i in range(len(recipients)))
    return SendBatch("2025-12-10", "weekly", recipients, keys, subject_prefix=prefix)


def check_issue_message(
    raw: bytes, expected: bytes, recipient: Recipient, subject: str, from_name: str
) -> None:
    assert header_names(raw) == header_names(expected)
    assert mailbox(raw, "To") == (recipient.first_name, recipient.email)
    assert mailbox(raw, "From") == (from_name, "digest@news.example.org")
    assert subject_of(raw) == subject
    assert list_id_of(raw) == (from_name, "weekly.news.example.org")
    assert raw_header(raw, "List-Unsubscribe") == f"<{recipient.unsubscribe_url}>"
    message = parse(raw)
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]


names = st.lists(header_text(), min_size=1, max_size=3)
prefixes = st.sampled_from(["", "[TEST] "])


@FAST
@given(names=names, subject=header_text(), from_name=header_text(), prefix=prefixes)
def test_outbox_messages_carry_every_text_as_text(
    tmp_path_factory: pytest.TempPathFactory,
    names: list[str],
    subject: str,
    from_name: str,
    prefix: str,
) -> None:
    folder = tmp_path_factory.mktemp("outbox")
    settings = load_settings(folder, env={"NEWSLETTER_FROM_NAME": from_name})  # List-Id's
    people = (BENIGN, *victims(names))
    email_ = rendered_with(subject, from_name)
    outcome = OutboxMailer(folder, settings).send_batch(email_, issue_batch(people, prefix))
    assert [r.state for r in outcome.results] == ["sent"] * len(people)
    files = folder / ("2025-12-10" + ("-test" if prefix else ""))
    raws = {p.stem: p.read_bytes() for p in files.glob("*.eml")}
    assert len(raws) == len(people)
    expected = raws[BENIGN.email]
    for person in people:
        check_issue_message(raws[person.email], expected, person, prefix + subject, from_name)


@SERVERS
@given(names=names, subject=header_text(), from_name=header_text(), prefix=prefixes)
def test_smtp_messages_carry_every_text_as_text(
    smtp_settings: Settings,
    smtp_inbox: tuple[Inbox, int],
    names: list[str],
    subject: str,
    from_name: str,
    prefix: str,
) -> None:
    inbox = smtp_inbox[0]
    inbox.messages.clear()
    people = (BENIGN, *victims(names))
    email_ = rendered_with(subject, from_name)
    settings = dataclasses.replace(smtp_settings, from_name=from_name)  # List-Id's
    outcome = SmtpMailer(settings).send_batch(email_, issue_batch(people, prefix))
    assert [r.state for r in outcome.results] == ["sent"] * len(people)
    assert [envelope for envelope, _ in inbox.messages] == [[p.email] for p in people]
    expected = inbox.messages[0][1]
    for person, (_, raw) in zip(people, inbox.messages, strict=True):
        check_issue_message(raw, expected, person, prefix + subject, from_name)


def test_a_subject_placeholder_filled_with_a_name_stays_text(tmp_path: Path) -> None:
    """A subject may hold -first_name-: the name lands in the Subject, still as text."""
    name = "=?utf-8?q?=0D=0ABcc=3A_eve@evil.example?="
    email_ = rendered_with("Hello -first_name-", "Central Asia Weekly")
    [person] = victims([name])
    OutboxMailer(tmp_path, load_settings(tmp_path, env={})).send_batch(
        email_, issue_batch((person,), "")
    )
    raw = (tmp_path / "2025-12-10" / "victim0@example.org.eml").read_bytes()
    assert subject_of(raw) == f"Hello {name}"
    assert "Bcc" not in parse(raw)


@FAST
@given(text=with_raw_control())
def test_the_message_builders_refuse_raw_controls(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    folder = tmp_path_factory.mktemp("outbox")
    settings = load_settings(folder, env={"NEWSLETTER_SECRET_KEY": TEST_KEYS})
    for email_, person in (
        (rendered_with(text, "Central Asia Weekly"), BENIGN),
        (rendered_with("Subject", text), BENIGN),
        (rendered_with("Subject", "Central Asia Weekly"), victims([text])[0]),
    ):
        with pytest.raises(ValueError, match=r"control character|linefeed|CR or LF"):
            to_bytes(build_message(email_, settings, person))
        outcome = OutboxMailer(folder, settings).send_batch(email_, issue_batch((person,), ""))
        assert [r.state for r in outcome.results] == ["failed"]
    with pytest.raises(ValueError, match=r"control character|linefeed|CR or LF"):
        confirmation(settings, "id", "victim@example.org", text, "weekly")
    assert not (folder / "2025-12-10").exists()


# --- (c) SendGrid: the JSON the fake received ----------------------------------------------


@SERVERS
@given(names=names, subject=header_text(), from_name=header_text(), prefix=prefixes)
def test_sendgrid_receives_every_text_literally_and_nothing_more(
    sendgrid_settings: Settings,
    fake_sendgrid: FakeSendGrid,
    names: list[str],
    subject: str,
    from_name: str,
    prefix: str,
) -> None:
    fake_sendgrid.requests.clear()
    people = (BENIGN, *victims(names))
    email_ = rendered_with(subject, from_name)
    settings = dataclasses.replace(sendgrid_settings, from_name=from_name)  # List-Id's
    outcome = SendGridMailer(settings).send_batch(email_, issue_batch(people, prefix))
    assert [r.state for r in outcome.results] == ["sent"]
    [received] = fake_sendgrid.mail_sends()
    body = received.body
    mail_send_validator().validate(body)
    assert body["subject"] == prefix + subject
    assert body["from"] == {"email": "digest@news.example.org", "name": from_name}
    assert "reply_to" not in body
    assert "reply_to_list" not in body
    assert set(body["headers"]) == {"List-Id"}
    description, identifier = list_id_of(f"List-Id: {body['headers']['List-Id']}\r\n\r\n".encode())
    assert (description, identifier) == (from_name, "weekly.news.example.org")
    assert [p["to"] for p in body["personalizations"]] == [[{"email": p.email}] for p in people]
    for entry, person in zip(body["personalizations"], people, strict=True):
        assert set(entry) == {"to", "substitutions", "custom_args", "headers"}
        assert set(entry["headers"]) == {"List-Unsubscribe", "List-Unsubscribe-Post"}
        assert entry["headers"]["List-Unsubscribe"] == f"<{person.unsubscribe_url}>"


@SERVERS
@given(name=header_text(), from_name=header_text())
def test_sendgrid_confirmation_names_exactly_one_recipient_by_the_name_typed(
    sendgrid_settings: Settings, fake_sendgrid: FakeSendGrid, name: str, from_name: str
) -> None:
    fake_sendgrid.requests.clear()
    settings = load_settings(
        sendgrid_settings.root,
        env={
            "SENDGRID_API_KEY": fake_sendgrid.api_key,
            "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
            "NEWSLETTER_SECRET_KEY": TEST_KEYS,
            "NEWSLETTER_FROM_NAME": from_name,
        },
    )
    message = confirmation(settings, "id", "victim@example.org", name, "weekly")
    SendGridMailer(settings).send_message(message)
    [received] = fake_sendgrid.mail_sends()
    body = received.body
    mail_send_validator().validate(body)
    assert body["personalizations"] == [{"to": [{"email": "victim@example.org", "name": name}]}]
    assert body["from"] == {"email": "digest@news.example.org", "name": from_name}
    assert body["subject"] == "Confirm your subscription to weekly"
    assert "headers" not in body
    assert "reply_to" not in body


def test_message_payload_takes_names_from_the_structure_not_the_text() -> None:
    message = confirmation(
        load_settings(NOWHERE, env={"NEWSLETTER_SECRET_KEY": TEST_KEYS}),
        "id",
        "victim@example.org",
        'Eve, "x" <eve@evil.example>',
        "weekly",
    )
    payload = message_payload(message)
    assert payload["personalizations"][0]["to"] == [
        {"email": "victim@example.org", "name": 'Eve, "x" <eve@evil.example>'}
    ]


# --- Where the text enters: settings, the web form, issue files, list titles ---------------


@FAST
@given(
    address=st.sampled_from(
        [
            "a@x.example>, <b@evil.example",
            "Name <digest@news.example.org>",
            "digest@news.example.org, eve@evil.example",
            "digest@news.example.org\r\nBcc: eve@evil.example",
            '"digest"@news.example.org',
            "=?utf-8?q?digest=40news.example.org=3E=2C_=3Ceve?=@evil.example",
            "digest@news.example.org\x00",
        ]
    )
)
def test_a_from_email_that_is_not_one_plain_address_is_a_config_error(address: str) -> None:
    with pytest.raises(ConfigError, match="from_email must be one plain address"):
        load_settings(NOWHERE, env={"NEWSLETTER_FROM_EMAIL": address})


@FAST
@given(name=with_raw_control())
def test_a_from_name_with_a_control_character_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_FROM_NAME: from_name contains the control"):
        load_settings(NOWHERE, env={"NEWSLETTER_FROM_NAME": name})


@FAST
@given(name=header_text())
def test_a_from_name_that_looks_like_encoded_words_is_kept_as_typed(name: str) -> None:
    assert load_settings(NOWHERE, env={"NEWSLETTER_FROM_NAME": name}).from_name == name


def test_bad_sender_settings_are_an_error_without_a_traceback(project: Path) -> None:
    (project / "newsletter.toml").write_text(
        'from_name = "Weekly\\r\\nBcc: eve@evil.example"\n', encoding="utf-8"
    )
    result = run_newsletter(project, "check", "2025-12-10")
    assert result.returncode != 0
    assert "from_name contains the control character U+000D" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    (project / "newsletter.toml").write_text(
        'from_email = "a@x.example>, <b@evil.example"\n', encoding="utf-8"
    )
    result = run_newsletter(project, "check", "2025-12-10")
    assert "from_email must be one plain address" in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("control", ["\\0", "\\x1b", "\\x7f", "\\x85", "\\u2028", "\\u2029"])
@pytest.mark.parametrize("field", ["subject", "preheader"])
def test_an_issue_subject_or_preheader_with_a_control_is_refused_on_its_line(
    settings: Settings, field: str, control: str
) -> None:
    path = settings.path("issues_dir") / "2025-12-10.yaml"
    text = path.read_text(encoding="utf-8")
    text = re.sub(rf'^{field}: "', lambda m: f"{m[0]}Win{control}", text, count=1, flags=re.M)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(IssueError) as caught:
        load_issue(path, settings)
    [problem] = [p for p in caught.value.problems if p.field == field]
    assert "control character" in problem.message
    lines = text.splitlines()
    assert problem.line == next(i for i, line in enumerate(lines, 1) if line.startswith(field))


def test_an_issue_subject_that_looks_like_an_encoded_word_is_kept_as_typed(
    settings: Settings,
) -> None:
    subject = "=?utf-8?q?=0D=0AReply-To=3A_eve@evil.example?="
    path = settings.path("issues_dir") / "2025-12-10.yaml"
    text = re.sub(r'^subject: ".*"$', f'subject: "{subject}"', path.read_text(), flags=re.M)
    assert subject in text
    path.write_text(text, encoding="utf-8")
    assert load_issue(path, settings).spec.subject == subject


@pytest.fixture
def lists_db(tmp_path: Path) -> Iterator[Engine]:
    engine = db.connect(load_settings(tmp_path, env={}))
    yield engine
    engine.dispose()


@SERVERS
@given(title=with_raw_control())
def test_a_list_title_with_a_control_character_is_refused(lists_db: Engine, title: str) -> None:
    with (
        pytest.raises(AudienceError, match=r"control character|line break"),
        db.writing(lists_db) as conn,
    ):
        audience.create_list(conn, "weekly", title)
    with db.reading(lists_db) as conn:
        assert audience.all_lists(conn) == []


# --- SMTP: a server that offers no login ----------------------------------------------------


def test_a_server_without_auth_is_reported_as_offering_no_login(
    smtp_settings: Settings, smtp_inbox: tuple[Inbox, int]
) -> None:
    settings = dataclasses.replace(smtp_settings, smtp_username="editor")
    with pytest.raises(AuthError, match="offers no login") as caught:
        SmtpMailer(settings).send_batch(
            rendered_with("Subject", "Weekly"), issue_batch((BENIGN,), "")
        )
    assert "Cannot reach" not in str(caught.value)
    assert smtp_inbox[0].messages == []
    # The server really is up and does not offer AUTH:
    with smtplib.SMTP("127.0.0.1", smtp_inbox[1], timeout=5) as client:
        client.ehlo()
        assert not client.has_extn("auth")


def test_build_payload_from_name_is_taken_literally(settings: Settings) -> None:
    name = '=?utf-8?b?RXZlDQpCY2M6IGV2ZUBldmlsLmV4YW1wbGU=?= "x" <y>'
    payload = build_payload(rendered_with("S", name), issue_batch((BENIGN,), ""), settings)
    assert payload["from"]["name"] == name


class OAuthOnly(Inbox):
    """A server whose only AUTH mechanism is one smtplib does not speak."""

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> Any:
        return None


def test_a_server_without_a_shared_auth_mechanism_is_reported_as_such(tmp_path: Path) -> None:
    port = free_port()
    controller = Controller(
        OAuthOnly(),
        hostname="127.0.0.1",
        port=port,
        auth_require_tls=False,
        auth_exclude_mechanism=["LOGIN", "PLAIN"],
    )
    controller.start()
    try:
        settings = load_settings(
            tmp_path,
            env={"NEWSLETTER_SMTP_PORT": str(port), "NEWSLETTER_SMTP_USERNAME": "editor"},
        )
        with pytest.raises(AuthError, match="offers no login method this program supports"):
            SmtpMailer(settings).send_batch(
                rendered_with("Subject", "Weekly"), issue_batch((BENIGN,), "")
            )
    finally:
        controller.stop()


@given(
    before=st.text(alphabet="ab <>", max_size=4),
    bidi=st.sampled_from([chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]]),
)
def test_bidi_overrides_in_a_name_are_refused_where_it_enters(before: str, bidi: str) -> None:
    """An override reorders what a reader sees after it ('Bob \u202egnp.exe' reads as
    'Bob exe.png'): refused like the control characters, in every header text."""
    with pytest.raises(AudienceError, match="control character"):
        audience.check_header_text("name", f"{before}{bidi}x", audience.MAX_NAME)


@given(
    local=st.text(alphabet="abc=?", min_size=0, max_size=6),
    tail=st.text(alphabet="abc=?", min_size=0, max_size=6),
)
def test_an_address_that_spells_an_encoded_word_is_refused(local: str, tail: str) -> None:
    """Valid atext, but mail software reads `=?` in a header as encoding; refused on entry
    (from_email already was)."""
    with pytest.raises(AddressError, match="=\\?"):
        audience.normalize_email(f"{local}=?{tail}@example.com")
