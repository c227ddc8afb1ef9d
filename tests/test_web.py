"""The web endpoints over HTTP: one-click unsubscribe, resubscribe, double opt-in."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from newsletter import audience, db, tokens
from newsletter.config import Secret, Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.models import AudienceSpec
from newsletter.schema import memberships, subscribers, suppressions
from newsletter.web import NOT_FOUND, create_app, drain_confirmations
from tests.conftest import TEST_KEYS, uvicorn_port

ONE_CLICK = {"List-Unsubscribe": "One-Click"}


@pytest.fixture
def reader(engine: Engine) -> str:
    """A confirmed member of 'weekly', a list the web form may join; returns the public id."""
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", public=True)
        return audience.add_subscriber(conn, "reader@example.org", "weekly", confirmed=True)


@pytest.fixture
def client(settings: Settings, reader: str) -> Iterator[TestClient]:
    # The worker left off: outbox_messages sends the queue when a test looks at it.
    app = create_app(settings, send_confirmations=False)
    with TestClient(app, base_url="https://news.test") as test_client:
        yield test_client


def state(engine: Engine) -> list[tuple[object, ...]]:
    with db.reading(engine) as conn:
        rows = [
            *conn.execute(select(subscribers).order_by(subscribers.c.id)),
            *conn.execute(select(memberships).order_by(memberships.c.subscriber_id)),
            *conn.execute(select(suppressions).order_by(suppressions.c.id)),
        ]
    return [tuple(row) for row in rows]


def recipients(engine: Engine) -> list[str]:
    with db.reading(engine) as conn:
        return [m.email for m in audience.select_recipients(conn, AudienceSpec("weekly"))]


def path_of(url: str) -> str:
    return httpx.URL(url).path


def test_get_shows_a_button_and_changes_nothing(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    before = state(engine)
    url = tokens.unsubscribe_url(settings, reader, "weekly")
    response = client.get(path_of(url))
    assert response.status_code == 200
    assert "List-Unsubscribe" in response.text
    assert "method=post" in response.text
    assert "reader@example.org" not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert state(engine) == before


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart"])
def test_one_click_post_unsubscribes_idempotently(
    client: TestClient, settings: Settings, engine: Engine, reader: str, encoding: str
) -> None:
    url = path_of(tokens.unsubscribe_url(settings, reader, "weekly"))
    for _ in range(2):
        if encoding == "urlencoded":
            response = client.post(url, data=ONE_CLICK, follow_redirects=False)
        else:
            response = client.post(
                url, files={"List-Unsubscribe": (None, "One-Click")}, follow_redirects=False
            )
        assert response.status_code == 200
        assert "location" not in response.headers
    assert recipients(engine) == []
    with db.reading(engine) as conn:
        assert audience.is_suppressed(conn, "reader@example.org", "weekly")
        rows = conn.execute(select(suppressions.c.reason)).scalars().all()
    assert rows == ["unsubscribed"]


def test_post_without_the_one_click_field_is_refused(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    url = path_of(tokens.unsubscribe_url(settings, reader, "weekly"))
    assert client.post(url, data={"other": "x"}).status_code == 400
    assert recipients(engine) == ["reader@example.org"]


def test_link_signed_with_an_older_listed_key_still_works(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    older_only = Settings(secret_keys=settings.secret_keys[1:])
    url = path_of(tokens.unsubscribe_url(older_only, reader, "weekly"))
    assert client.post(url, data=ONE_CLICK).status_code == 200
    assert recipients(engine) == []


def test_resubscribe_undoes_a_mistaken_click(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    url = path_of(tokens.unsubscribe_url(settings, reader, "weekly"))
    response = client.post(url, data=ONE_CLICK)
    assert f"{url}/resubscribe" in response.text
    before = state(engine)
    assert client.get(f"{url}/resubscribe").status_code == 200
    assert state(engine) == before
    assert client.post(f"{url}/resubscribe").status_code == 200
    assert recipients(engine) == ["reader@example.org"]


def test_bad_tokens_all_get_the_same_404(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    good = tokens.unsubscribe_url(settings, reader, "weekly").rsplit("/", 1)[1]
    foreign = Settings(secret_keys=(Secret("someone-else"),))
    candidates = [
        good[:-2] + "xx",  # tampered
        tokens.sign(foreign, "unsubscribe", reader, "weekly"),  # signed with a foreign key
        tokens.sign(settings, "unsubscribe", "nobody-has-this-id", "weekly"),  # unknown id
        tokens.sign(settings, "unsubscribe", reader, "monthly"),  # unknown list
        tokens.sign(settings, "confirm", reader, "weekly"),  # wrong purpose
    ]
    bodies = set()
    for token in candidates:
        for method in ("GET", "POST"):
            response = client.request(
                method, f"/u/{token}", data=ONE_CLICK if method == "POST" else None
            )
            assert response.status_code == 404
            bodies.add(response.text)
    assert client.get("/no/such/page").status_code == 404
    assert len(bodies) == 1
    assert NOT_FOUND.split(".")[0] in bodies.pop()
    assert recipients(engine) == ["reader@example.org"]


def outbox_messages(settings: Settings) -> list[email.message.EmailMessage]:
    """What the outbox holds once the confirmation queue is sent."""
    engine = db.connect(settings)
    drain_confirmations(settings, engine)
    engine.dispose()
    folder = settings.path("outbox_dir") / "messages"
    return (
        [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in sorted(folder.glob("*.eml"))
        ]
        if folder.is_dir()
        else []
    )


def test_double_opt_in(client: TestClient, settings: Settings, engine: Engine) -> None:
    response = client.post(
        "/subscribe", data={"email": "New@Example.org", "name": "Nurlan", "list": "weekly"}
    )
    assert response.status_code == 200
    assert recipients(engine) == ["reader@example.org"]  # not before confirming
    [message] = outbox_messages(settings)
    # The typed name waits with the request until the address's owner confirms (issue 9).
    assert message["To"] == "new@example.org"
    link = next(line for line in message.get_content().splitlines() if "/confirm/" in line)
    assert link.startswith("https://news.test/confirm/")
    before = state(engine)
    assert client.get(path_of(link)).status_code == 200
    assert state(engine) == before
    assert client.post(path_of(link)).status_code == 200
    assert recipients(engine) == ["reader@example.org", "new@example.org"]
    with db.reading(engine) as conn:
        assert audience.subscriber(conn, "new@example.org").name == "Nurlan"


def test_subscribe_answers_the_same_whatever_the_state(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    with db.writing(engine) as conn:
        audience.suppress(conn, "bounced@example.org", "bounced")
    texts = {
        client.post("/subscribe", data={"email": address, "list": "weekly"}).text
        for address in ("reader@example.org", "fresh@example.org", "bounced@example.org")
    }
    assert len(texts) == 1
    assert [m["To"] for m in outbox_messages(settings)] == ["fresh@example.org"]


def confirm_link(message: email.message.EmailMessage) -> str:
    return path_of(next(ln for ln in message.get_content().splitlines() if "/confirm/" in ln))


def test_one_confirmation_per_address_and_list_a_day(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    form = {"email": "target@example.org", "list": "weekly"}
    texts = {client.post("/subscribe", data=form).text for _ in range(3)}
    assert len(texts) == 1
    assert len(outbox_messages(settings)) == 1
    with db.writing(engine) as conn:  # as if the last confirmation went out 25 hours ago
        day_ago = db.now() - dt.timedelta(hours=25)
        conn.execute(update(memberships).values(updated_at=day_ago))
    assert client.post("/subscribe", data=form).text in texts
    assert client.post("/subscribe", data=form).text in texts
    assert len(outbox_messages(settings)) == 2


def test_an_unsubscribe_blocks_subscribe_until_the_resubscribe_link(
    client: TestClient, settings: Settings, engine: Engine, reader: str
) -> None:
    unsubscribe = path_of(tokens.unsubscribe_url(settings, reader, "weekly"))
    assert client.post(unsubscribe, data=ONE_CLICK).status_code == 200
    fresh = client.post("/subscribe", data={"email": "fresh@example.org", "list": "weekly"})
    again = client.post("/subscribe", data={"email": "reader@example.org", "list": "weekly"})
    assert again.text == fresh.text
    assert [m["To"] for m in outbox_messages(settings)] == ["fresh@example.org"]
    forged_confirm = path_of(tokens.confirm_url(settings, reader, "weekly"))
    assert client.post(forged_confirm).text == client.post("/confirm/not-a-token").text
    assert recipients(engine) == []
    assert client.post(f"{unsubscribe}/resubscribe").status_code == 200
    assert recipients(engine) == ["reader@example.org"]


def test_an_old_confirmation_link_cannot_undo_a_later_unsubscribe(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    client.post("/subscribe", data={"email": "new@example.org", "list": "weekly"})
    [message] = outbox_messages(settings)
    link = confirm_link(message)
    assert client.post(link).status_code == 200
    invalid = client.post("/confirm/not-a-token")
    assert client.post(link).text == invalid.text  # spent once confirmed
    with db.reading(engine) as conn:
        public_id = audience.subscriber(conn, "new@example.org").public_id
    unsubscribe = path_of(tokens.unsubscribe_url(settings, public_id, "weekly"))
    assert client.post(unsubscribe, data=ONE_CLICK).status_code == 200
    replay = client.post(link)
    assert (replay.status_code, replay.text) == (invalid.status_code, invalid.text)
    assert recipients(engine) == ["reader@example.org"]


def test_subscribe_refuses_header_injection(client: TestClient, engine: Engine) -> None:
    before = state(engine)
    response = client.post(
        "/subscribe", data={"email": "x@example.org", "name": "X\r\nBcc: a@b.org", "list": "weekly"}
    )
    assert response.status_code == 400
    assert state(engine) == before


def test_subscribe_refuses_an_smtputf8_address_with_the_reason(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    before = state(engine)
    response = client.post("/subscribe", data={"email": "ñandú@example.org", "list": "weekly"})
    assert response.status_code == 400
    assert "needs SMTPUTF8, which we do not send" in response.text
    assert state(engine) == before
    assert outbox_messages(settings) == []


def test_subscribe_stores_an_idn_domain_as_punycode(
    client: TestClient, settings: Settings, engine: Engine
) -> None:
    assert client.post("/subscribe", data={"email": "a@bücher.de", "list": "weekly"}).is_success
    [message] = outbox_messages(settings)
    assert message["To"] == "a@xn--bcher-kva.de"
    with db.reading(engine) as conn:
        assert audience.subscriber(conn, "a@xn--bcher-kva.de").email == "a@xn--bcher-kva.de"


def test_a_locked_sqlite_database_is_a_503_and_changes_nothing(tmp_path: Path) -> None:
    """SQLite only: its whole-database write lock is what a long import holds."""
    env = {"NEWSLETTER_SECRET_KEY": TEST_KEYS, "NEWSLETTER_DATABASE_BUSY_TIMEOUT": "0.05"}
    impatient = load_settings(root=tmp_path, env=env)
    engine = db.connect(impatient)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        reader = audience.add_subscriber(conn, "reader@example.org", "weekly", confirmed=True)
    url = path_of(tokens.unsubscribe_url(impatient, reader, "weekly"))
    with TestClient(create_app(impatient)) as client, db.writing(engine):
        response = client.post(url, data=ONE_CLICK)
    assert response.status_code == 503
    assert recipients(engine) == ["reader@example.org"]
    engine.dispose()


def test_missing_secret_key_stops_the_app(settings: Settings) -> None:
    unkeyed = Settings(root=settings.root, database_url=settings.database_url)
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        create_app(unkeyed)


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    kind=st.sampled_from(["unsubscribe", "confirm"]),
    junk=st.text(max_size=20),
    tamper=st.booleans(),
)
def test_a_get_never_changes_state(
    client: TestClient,
    settings: Settings,
    engine: Engine,
    reader: str,
    kind: str,
    junk: str,
    tamper: bool,
) -> None:
    purpose: tokens.Purpose = "unsubscribe" if kind == "unsubscribe" else "confirm"
    token = tokens.sign(settings, purpose, reader, "weekly")
    if tamper:
        token = token[: len(token) // 2] + quote(junk, safe="")
    before = state(engine)
    prefix = "/u/" if kind == "unsubscribe" else "/confirm/"
    for url in (f"{prefix}{token}", f"/u/{token}/resubscribe", "/subscribe"):
        assert client.get(url).status_code in (200, 404)
    assert state(engine) == before


def test_one_click_over_a_real_uvicorn_server(
    settings: Settings, reader: str, engine: Engine
) -> None:
    url = path_of(tokens.unsubscribe_url(settings, reader, "weekly"))
    with (
        uvicorn_port(create_app(settings)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as http,
    ):
        assert http.get(url).status_code == 200
        assert recipients(engine) == ["reader@example.org"]
        response = http.post(
            url,
            content=b"List-Unsubscribe=One-Click",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert response.status_code == 200
    assert recipients(engine) == []
