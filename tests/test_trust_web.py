"""Attacks on `newsletter serve` over HTTP: subscription bombing and enumeration, resubscribe
after a removal, oversized bodies, Host reflection, tokens in the access log, weak keys."""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import func, or_, select
from sqlalchemy.engine import Engine

from newsletter import audience, confirmations, db, tokens
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.models import AudienceSpec
from newsletter.schema import confirmation_queue, lists, memberships, subscribers, suppressions
from newsletter.web import create_app, drain_confirmations
from tests.conftest import TEST_KEYS, Served, free_port

ONE_CLICK = {"List-Unsubscribe": "One-Click"}
# Each example is several HTTP round trips to a real server: a few examples per run.
SLOW = hsettings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
# What reaches a header or a page: line breaks, NUL, encoded-word and address punctuation.
DANGEROUS = st.text(alphabet=st.sampled_from("=?qQbB_\r\n\x00:<>,\"'& aé/;\\"), max_size=40)


def fresh(served: Served) -> Served:
    """Empty the shared server's database and outbox (once its worker is idle), then a
    public 'weekly' and a private 'internal' list."""
    outbox(served)
    with db.writing(served.engine) as conn:
        for table in (confirmation_queue, memberships, suppressions, subscribers, lists):
            conn.execute(table.delete())
        audience.create_list(conn, "weekly", public=True)
        audience.create_list(conn, "internal")
    for message in (served.settings.path("outbox_dir") / "messages").glob("*.eml"):
        message.unlink()
    return served


def plain(serve: Callable[..., Served]) -> Served:
    """No trusted proxy: the peer is the client, 3 posts an hour each."""
    return fresh(serve("plain", subscribe_per_client_hour="3", subscribe_per_hour="100000"))


def proxied(serve: Callable[..., Served]) -> Served:
    """127.0.0.1 and 10/8 are trusted proxies, 3 posts an hour a client."""
    return fresh(
        serve(
            "proxied",
            subscribe_per_client_hour="3",
            subscribe_per_hour="100000",
            trusted_proxies="127.0.0.1,10.0.0.0/8",
        )
    )


def post(
    served: Served, path: str, headers: dict[str, str] | None = None, **form: str
) -> httpx.Response:
    return httpx.post(f"{served.url}{path}", data=form, headers=headers, timeout=10)


def outbox(served: Served) -> list[EmailMessage]:
    """Every message the server mailed, once its confirmation queue is empty."""
    deadline = time.monotonic() + 20
    while _waiting(served.engine) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _waiting(served.engine), "the confirmation worker did not send its queue"
    folder = served.settings.path("outbox_dir") / "messages"
    return [
        email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
        for p in sorted(folder.glob("*.eml"))
    ]


def _waiting(engine: Engine) -> bool:
    queue = confirmation_queue.c
    with db.reading(engine) as conn:
        count = conn.execute(
            select(func.count()).where(
                or_(queue.email != "", queue.subscriber_id.is_not(None)), queue.sent_at.is_(None)
            )
        ).scalar_one()
    return bool(count)


def recipients(engine: Engine, list_name: str = "weekly") -> list[str]:
    with db.reading(engine) as conn:
        return [m.email for m in audience.select_recipients(conn, AudienceSpec(list_name))]


# --- Budgets ----------------------------------------------------------------------------


def test_a_burst_from_one_client_gets_its_budget_then_429(serve: Callable[..., Served]) -> None:
    served = plain(serve)
    answers = [
        post(served, "/subscribe", email=f"victim{i}@example.org", name="Eve", list="weekly")
        for i in range(12)
    ]
    assert [a.status_code for a in answers] == [200] * 3 + [429] * 9
    for refused in answers[3:]:
        assert 1 <= int(refused.headers["retry-after"]) <= 3600
    assert len(outbox(served)) == 3  # was one per POST


@given(hosts=st.lists(st.integers(0, 2**64 - 1), min_size=4, max_size=8, unique=True))
@SLOW
def test_clients_of_one_ipv6_64_share_one_budget(
    serve: Callable[..., Served], hosts: list[int]
) -> None:
    """Behind a trusted proxy, every address of one /64 is one client; another /64 is not."""
    served = proxied(serve)
    base = int(ipaddress.IPv6Address("2001:db8:1:2::"))
    statuses = [
        post(
            served,
            "/subscribe",
            {"X-Forwarded-For": str(ipaddress.IPv6Address(base + host))},
            email=f"a{i}@example.org",
        ).status_code
        for i, host in enumerate(hosts)
    ]
    assert statuses == [200] * 3 + [429] * (len(hosts) - 3)
    other = post(served, "/subscribe", {"X-Forwarded-For": "2001:db8:1:3::1"}, email="b@x.org")
    assert other.status_code == 200


@given(
    spoofs=st.lists(
        st.one_of(st.ip_addresses().map(str), st.text(max_size=30)), min_size=6, max_size=6
    ),
    header=st.sampled_from(["X-Forwarded-For", "X-Real-IP", "Forwarded", "True-Client-IP"]),
)
@SLOW
def test_proxy_headers_from_an_untrusted_peer_change_nothing(
    serve: Callable[..., Served], spoofs: list[str], header: str
) -> None:
    """No proxy is trusted: whatever a client writes in a proxy header, it is its own peer."""
    served = plain(serve)
    statuses = []
    for i, spoof in enumerate(spoofs):
        value = "".join(c for c in spoof if " " <= c <= "~").strip() or "1.2.3.4"
        answer = post(served, "/subscribe", {header: value}, email=f"s{i}@example.org")
        statuses.append(answer.status_code)
    assert statuses == [200] * 3 + [429] * 3


def test_behind_a_trusted_proxy_the_left_of_the_header_is_the_clients_to_write(
    serve: Callable[..., Served],
) -> None:
    """The client is the right-most untrusted hop: a forged left part does not help."""
    served = proxied(serve)
    statuses = [
        post(
            served,
            "/subscribe",
            {"X-Forwarded-For": f"198.51.100.{i}, 203.0.113.7, 10.1.2.3"},
            email=f"c{i}@example.org",
        ).status_code
        for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]


def test_the_global_budget_holds_whatever_the_clients(serve: Callable[..., Served]) -> None:
    served = fresh(
        serve(
            "global",
            subscribe_per_client_hour="100",
            subscribe_per_hour="4",
            trusted_proxies="127.0.0.1",
        )
    )
    statuses = [
        post(served, "/subscribe", {"X-Forwarded-For": f"192.0.2.{i}"}, email=f"g{i}@x.org")
        for i in range(7)
    ]
    assert [s.status_code for s in statuses] == [200] * 4 + [429] * 3
    assert "retry-after" in statuses[-1].headers
    assert len(outbox(served)) == 4


# --- Enumeration ------------------------------------------------------------------------


@given(
    address=st.one_of(st.emails(), DANGEROUS.map(lambda s: f"{s}@example.org")),
    name=DANGEROUS,
    unknown=st.text(max_size=120).filter(lambda s: s not in ("weekly", "internal")),
)
@SLOW
def test_unknown_and_private_lists_answer_exactly_as_a_public_one(
    serve: Callable[..., Served], address: str, name: str, unknown: str
) -> None:
    served = plain(serve)
    answers = [
        post(served, "/subscribe", email=address, name=name, list=list_name)
        for list_name in ("weekly", "internal", unknown)
    ]
    shapes = {(a.status_code, a.headers["content-type"], a.text) for a in answers}
    assert len(shapes) == 1, shapes
    assert all("weekly" in str(m["Subject"]) for m in outbox(served))  # never 'internal'
    with db.reading(served.engine) as conn:
        assert audience.subscribers_in(conn, "internal") == []


def test_lists_are_private_until_the_editor_opens_them(serve: Callable[..., Served]) -> None:
    from tests.conftest import run_newsletter

    served = plain(serve)
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_DATABASE_URL": served.settings.database}
    created = run_newsletter(served.settings.root, "lists", "create", "monthly", env=env)
    assert created.returncode == 0, created.stderr
    assert "private" in created.stdout
    post(served, "/subscribe", email="first@example.org", list="monthly")
    opened = run_newsletter(served.settings.root, "lists", "set", "monthly", "--public", env=env)
    assert opened.returncode == 0, opened.stderr
    assert "public" in opened.stdout
    post(served, "/subscribe", email="second@example.org", list="monthly")
    assert [str(m["To"]) for m in outbox(served)] == ["second@example.org"]
    listed = run_newsletter(served.settings.root, "lists", "list", env=env)
    assert "public" in listed.stdout


# --- Resubscribe ------------------------------------------------------------------------


@pytest.mark.parametrize("reason", ["bounced", "spam_report", "manual", "unsubscribed"])
@pytest.mark.parametrize("scope", ["weekly", ""])
def test_resubscribe_undoes_only_the_subscribers_own_unsubscribe(
    serve: Callable[..., Served], reason: str, scope: str
) -> None:
    served = plain(serve)
    with db.writing(served.engine) as conn:
        public_id = audience.add_subscriber(conn, "r@example.org", "weekly", confirmed=True)
    link = tokens.unsubscribe_url(served.settings, public_id, "weekly").removeprefix(
        "https://news.test"
    )
    own_click = httpx.post(f"{served.url}{link}", data=ONE_CLICK)
    assert own_click.status_code == 200  # their own unsubscribe...
    with db.writing(served.engine) as conn:  # ...and something else on top of it
        audience.suppress(conn, "r@example.org", reason, scope=scope, detail="the editor")
        before = conn.execute(select(suppressions.c.reason, suppressions.c.scope)).all()
    answer = post(served, f"{link}/resubscribe")
    own = reason == "unsubscribed" and scope == "weekly"
    assert answer.status_code == (200 if own else 409)
    with db.reading(served.engine) as conn:
        after = conn.execute(select(suppressions.c.reason, suppressions.c.scope)).all()
    assert recipients(served.engine) == (["r@example.org"] if own else [])
    assert after == ([] if own else before)


@pytest.mark.parametrize("editor", ["remove", "import"])
def test_an_editors_removal_survives_a_forwarded_resubscribe_link(
    serve: Callable[..., Served], editor: str
) -> None:
    """`subscribers remove`, or an import in unsubscribe mode, on top of the subscriber's
    own one-click unsubscribe: the resubscribe link may not undo the editor's act."""
    from tests.conftest import run_newsletter

    served = plain(serve)
    with db.writing(served.engine) as conn:
        public_id = audience.add_subscriber(conn, "f@example.org", "weekly", confirmed=True)
    link = tokens.unsubscribe_url(served.settings, public_id, "weekly")
    link = link.removeprefix("https://news.test")
    own_click = httpx.post(f"{served.url}{link}", data=ONE_CLICK)
    assert own_click.status_code == 200  # the subscriber's own click
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_DATABASE_URL": served.settings.database}
    if editor == "remove":
        act = ["subscribers", "remove", "f@example.org", "--list", "weekly"]
    else:
        left = served.settings.root / "left.csv"
        left.write_text("email\nf@example.org\n", encoding="utf-8")
        act = ["subscribers", "import", str(left), "--list", "weekly", "--mode", "unsubscribe"]
    done = run_newsletter(served.settings.root, *act, env=env)
    assert done.returncode == 0, done.stderr
    answer = post(served, f"{link}/resubscribe")  # the forwarded link, clicked by anyone
    assert answer.status_code == 409
    assert recipients(served.engine) == []
    with db.reading(served.engine) as conn:
        reasons = conn.execute(select(suppressions.c.reason, suppressions.c.scope)).all()
    assert reasons == [("manual", "weekly")]


# --- Confirmation links -----------------------------------------------------------------


class _Backdated(TimestampSigner):
    days = 0.0

    def get_timestamp(self) -> int:
        return int(time.time() - self.days * 86400)


@pytest.mark.parametrize(("days", "works"), [(6.9, True), (7.1, False), (400.0, False)])
def test_confirmation_links_expire_after_confirm_token_days(
    serve: Callable[..., Served], days: float, works: bool
) -> None:
    served = plain(serve)
    post(served, "/subscribe", email="late@example.org", list="weekly")
    [message] = outbox(served)
    assert "/confirm/" in message.get_content()
    with db.reading(served.engine) as conn:
        public_id = audience.subscriber(conn, "late@example.org").public_id
    _Backdated.days = days
    keys = [k.strip() for k in reversed(TEST_KEYS.split(","))]
    stock = URLSafeTimedSerializer(keys, salt="newsletter.confirm", signer=_Backdated)
    token = stock.dumps([public_id, "weekly"])
    answer = post(served, f"/confirm/{token}")
    assert answer.status_code == (200 if works else 404)
    assert recipients(served.engine) == (["late@example.org"] if works else [])


# --- Bodies -----------------------------------------------------------------------------


def _public_posts(served: Served) -> dict[str, str]:
    with db.writing(served.engine) as conn:
        public_id = audience.add_subscriber(conn, "b@example.org", "weekly", confirmed=True)
    unsubscribe = tokens.unsubscribe_url(served.settings, public_id, "weekly")
    unsubscribe = unsubscribe.removeprefix("https://news.test")
    confirm = tokens.confirm_url(served.settings, public_id, "weekly")
    return {
        "subscribe": "/subscribe",
        "unsubscribe": unsubscribe,
        "resubscribe": f"{unsubscribe}/resubscribe",
        "confirm": confirm.removeprefix("https://news.test"),
    }


def _chunks(total: int) -> Iterator[bytes]:
    """A body sent chunked, without Content-Length."""
    yield b"List-Unsubscribe=One-Click&email=x%40example.org"
    for _ in range(total // 65536):
        yield b"&pad=" + b"x" * 65531


@pytest.mark.parametrize(
    "attack",
    ["announced", "streamed", "many-fields", "a-file", "big-field-multipart"],
)
def test_every_public_form_caps_its_body(serve: Callable[..., Served], attack: str) -> None:
    served = plain(serve)  # form_max_bytes: the default, 16384
    targets = _public_posts(served)
    for route, path in targets.items():
        url = f"{served.url}{path}"
        if attack == "announced":  # 150 x 1 MB fields, as reported
            form = {f"f{i}": "x" * 1_000_000 for i in range(3)} | ONE_CLICK
            answer = httpx.post(url, data=form, timeout=30)
        elif attack == "streamed":  # no Content-Length: chunked, 2 MB
            answer = httpx.post(
                url,
                content=_chunks(2_000_000),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
                timeout=30,
            )
        elif attack == "many-fields":
            form = {f"f{i}": "1" for i in range(150)} | ONE_CLICK
            answer = httpx.post(url, data=form, timeout=10)
        elif attack == "a-file":
            answer = httpx.post(
                url, data=ONE_CLICK, files={"upload": ("a.bin", b"\0" * 1000)}, timeout=10
            )
        else:
            answer = httpx.post(
                url, files={"List-Unsubscribe": (None, "One-Click"), "x": (None, "y" * 50_000)}
            )
        expected = 400 if attack in ("many-fields", "a-file") else 413
        assert answer.status_code == expected, (route, attack, answer.text[:200])
        assert "Traceback" not in answer.text
    assert recipients(served.engine) == ["b@example.org"]  # the unsubscribe did nothing
    with db.reading(served.engine) as conn:
        assert conn.execute(select(func.count()).select_from(confirmation_queue)).scalar() == 0


def test_a_small_multipart_one_click_still_works(serve: Callable[..., Served]) -> None:
    served = plain(serve)
    path = _public_posts(served)["unsubscribe"]
    answer = httpx.post(f"{served.url}{path}", files={"List-Unsubscribe": (None, "One-Click")})
    assert answer.status_code == 200
    assert recipients(served.engine) == []


# --- Host, access log -------------------------------------------------------------------


HOSTS = st.one_of(
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){0,3}(:[0-9]{1,5})?", fullmatch=True),
    st.ip_addresses(v=4).map(str),
)


@given(host=HOSTS, path=st.sampled_from(["/subscribe/", "/issues/2025-12-10", "/u/abc/"]))
@SLOW
def test_redirects_never_reflect_the_host(
    serve: Callable[..., Served], host: str, path: str
) -> None:
    served = plain(serve)
    answer = httpx.get(
        f"{served.url}{path}",
        headers={"Host": host, "X-Forwarded-Host": host, "X-Forwarded-Proto": "http"},
        follow_redirects=False,
    )
    assert answer.status_code in (307, 404)
    if answer.status_code == 307:
        location = answer.headers["location"]
        assert location.startswith("https://news.test/"), location


def test_tokens_never_reach_the_access_log(serve: Callable[..., Served]) -> None:
    served = plain(serve)
    paths = _public_posts(served)
    used = [paths["unsubscribe"], paths["resubscribe"], paths["confirm"], "/u/made-up-token"]
    for path in used:
        httpx.get(f"{served.url}{path}?utm=1")
        httpx.post(f"{served.url}{path}", data=ONE_CLICK)
    last = '"POST /u/made-up-token HTTP/1.1" 404'.replace("made-up-token", "[token]")
    deadline = time.monotonic() + 10
    while last not in served.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    log = served.log()
    assert '"GET /u/[token]?utm=1 HTTP/1.1" 200' in log  # the access log is on, redacted
    assert "/confirm/[token]" in log
    for path in used:
        secret = path.split("/")[2]
        assert secret not in log


# --- Keys -------------------------------------------------------------------------------


@given(
    key=st.one_of(
        st.text(st.characters(codec="ascii", exclude_characters=","), min_size=1, max_size=31),
        st.text("abcdef0123456789", min_size=1, max_size=63),  # hex under 32 bytes
        st.sampled_from(["k", "changeme", "password" * 8, "a" * 200, "ab" * 100]),
    )
)
@hsettings(max_examples=60)
def test_a_weak_secret_key_is_refused_and_never_echoed(key: str) -> None:
    if not key.strip():
        return  # an empty key is "no key", which stops serve elsewhere
    env = {"NEWSLETTER_SECRET_KEY": key}
    with pytest.raises(ConfigError) as refused:
        load_settings(env=env)
    message = str(refused.value)
    assert "NEWSLETTER_SECRET_KEY" in message
    assert "secrets.token_urlsafe(32)" in message
    if len(key.strip()) >= 8:  # shorter ones occur in any sentence
        assert key.strip() not in message


def test_serve_refuses_a_weak_key_without_a_traceback(tmp_path: object) -> None:
    from pathlib import Path

    from tests.conftest import run_newsletter

    root = Path(str(tmp_path))
    env = {"PATH": "/usr/bin:/bin", "NEWSLETTER_SECRET_KEY": "hunter2hunter2"}
    result = run_newsletter(root, "serve", env=env)
    assert result.returncode == 1
    assert "NEWSLETTER_SECRET_KEY" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr


@given(key=st.sampled_from(["urlsafe", "hex"]), seed=st.integers(0, 2**32))
def test_a_generated_key_is_accepted(key: str, seed: int) -> None:
    import random
    import string

    rng = random.Random(seed)
    if key == "hex":
        text = "".join(rng.choice("0123456789abcdef") for _ in range(64))
    else:
        text = "".join(rng.choice(string.ascii_letters + string.digits + "-_") for _ in range(43))
    assert load_settings(env={"NEWSLETTER_SECRET_KEY": text}).secret_keys[0].reveal() == text


REVIEWED_WEAK_KEYS = [
    "abcdefgh" * 7,
    "0123456789abcdef" * 4,
    "a" * 60 + "bcdefgh1",
    "ABCDEFGHabcdefgh" * 3,
    "my-newsletter-secret-key-for-production-2024",
]
KEY_TEXT = st.characters(codec="ascii", categories=["L", "N", "P", "S"], exclude_characters=",")


@st.composite
def repetitive_keys(draw: st.DrawFn) -> str:
    """A short unit repeated, or one character run long with a short tail: long enough
    that a per-character estimate counts them as 256 bits or more."""
    if draw(st.booleans()):
        unit = draw(st.text(KEY_TEXT, min_size=1, max_size=16))
        return unit * draw(st.integers(max(2, -(-64 // len(unit))), 300 // len(unit)))
    run = draw(KEY_TEXT) * draw(st.integers(40, 200))
    return run + draw(st.text(KEY_TEXT, min_size=1, max_size=12))


@given(key=st.one_of(st.sampled_from(REVIEWED_WEAK_KEYS), repetitive_keys()))
@hsettings(max_examples=200)
def test_repetitive_or_phrase_keys_are_refused_and_never_echoed(key: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings(env={"NEWSLETTER_SECRET_KEY": key})
    message = str(refused.value)
    assert "NEWSLETTER_SECRET_KEY" in message
    assert key.strip() not in message  # every key here is longer than any word of the text


@given(seed=st.integers(0, 2**64 - 1), kind=st.sampled_from(["urlsafe", "hex"]))
@hsettings(max_examples=300)
def test_every_key_secrets_makes_is_accepted(seed: int, kind: str) -> None:
    import base64
    import random

    raw = random.Random(seed).randbytes(32)  # what secrets.token_* draws, seeded to replay
    text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode() if kind == "urlsafe" else raw.hex()
    assert load_settings(env={"NEWSLETTER_SECRET_KEY": text}).secret_keys[0].reveal() == text


# --- The worker --------------------------------------------------------------------------


def test_serve_with_an_unusable_mailer_stops_at_start(tmp_path: object) -> None:
    """mailer=sendgrid without a key: `serve` refuses to start, rather than answer "on its
    way" to every post while its worker is dead."""
    from pathlib import Path

    from tests.conftest import run_newsletter

    env = {
        "PATH": "/usr/bin:/bin",
        "NEWSLETTER_SECRET_KEY": TEST_KEYS,
        "NEWSLETTER_MAILER": "sendgrid",
        "NEWSLETTER_SERVE_PORT": str(free_port()),
    }
    result = run_newsletter(Path(str(tmp_path)), "serve", env=env)
    assert result.returncode == 1
    assert "SENDGRID_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    with pytest.raises(ConfigError):
        create_app(load_settings(Path(str(tmp_path)), env=env))


# --- In process, on every database: client keys, budgets, the worker ---------------------


@given(
    prefix=st.integers(0, 2**64 - 1),
    hosts=st.lists(st.integers(0, 2**64 - 1), min_size=2, max_size=5),
    spoof=st.text(max_size=40),
)
def test_one_ipv6_64_is_one_client_key(prefix: int, hosts: list[int], spoof: str) -> None:
    behind = dataclasses.replace(Settings(), trusted_proxies=("127.0.0.1", "10.0.0.0/8"))
    keys = set()
    for host in hosts:
        address = str(ipaddress.IPv6Address((prefix << 64) | host))
        keys.add(confirmations.client_key(Settings(), address, []))
        # Behind the proxy, with whatever the client wrote first on its own line.
        headers = [("X-Forwarded-For", spoof), ("x-forwarded-for", f"{address}, 10.0.0.2")]
        keys.add(confirmations.client_key(behind, "127.0.0.1", headers))
    assert keys == {str(ipaddress.IPv6Network(((prefix << 64), 64)))}


@given(peer=st.ip_addresses(), forwarded=st.text(max_size=60))
def test_an_untrusted_peer_is_its_own_client_whatever_it_forwards(
    peer: ipaddress.IPv4Address | ipaddress.IPv6Address, forwarded: str
) -> None:
    key = confirmations.client_key(Settings(), str(peer), [("X-Forwarded-For", forwarded)])
    assert key == confirmations.client_key(Settings(), str(peer), [])


def test_budgets_count_on_every_database(engine: Engine, db_settings: Settings) -> None:
    tight = dataclasses.replace(db_settings, subscribe_per_client_hour=2, subscribe_per_hour=3)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", public=True)
    outcomes = []
    for client, n in (("192.0.2.1", 1), ("192.0.2.1", 2), ("192.0.2.1", 3), ("192.0.2.2", 4)):
        with db.writing(engine) as conn:
            outcomes.append(confirmations.request(conn, tight, client, f"q{n}@x.org", "", "weekly"))
    with db.writing(engine) as conn:
        outcomes.append(confirmations.request(conn, tight, "192.0.2.3", "q5@x.org", "", "weekly"))
    assert outcomes[:2] == [None, None]
    assert isinstance(outcomes[2], confirmations.Refused)  # the client's two are spent
    assert outcomes[3] is None
    refused = outcomes[4]  # three in the hour from everyone
    assert isinstance(refused, confirmations.Refused)
    assert 3500 < refused.retry_after <= 3600


def test_a_failing_mailer_is_retried_then_left_and_the_server_stops_cleanly(
    engine: Engine, db_settings: Settings
) -> None:
    """SMTP on a closed port: the worker records the error and retries on its schedule,
    up to MAX_ATTEMPTS; the server's lifespan stops its worker without an error."""
    from starlette.testclient import TestClient

    closed = dataclasses.replace(
        db_settings, mailer="smtp", smtp_port=free_port(), smtp_timeout=0.5
    )
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", public=True)
    with TestClient(create_app(closed), base_url="https://news.test") as client:
        assert client.post("/subscribe", data={"email": "z@example.org"}).status_code == 200
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with db.reading(engine) as conn:
                row = conn.execute(select(confirmation_queue)).one()
            if row.attempts >= 1 and row.error:
                break
            time.sleep(0.05)
    assert row.error
    assert row.sent_at is None
    drain_confirmations(closed, engine)  # the next attempt is minutes away: not yet
    with db.reading(engine) as conn:
        row = conn.execute(select(confirmation_queue)).one()
    assert (row.attempts, row.sent_at, row.email) == (1, None, "")
    _age(engine, confirmations.RETRY[-1] + confirmations.LEASE)  # past the last attempt
    drain_confirmations(closed, engine)
    with db.reading(engine) as conn:
        row = conn.execute(select(confirmation_queue)).one()
    assert (row.attempts, row.sent_at, row.email) == (confirmations.MAX_ATTEMPTS, None, "")


# --- Confirmations: at least once, and only the confirmer's name ---------------------------


class _Greylist:
    """aiosmtpd handler: answers RCPT with `first` once per address, then accepts."""

    def __init__(self, first: str = "451 4.7.1 Greylisted, try again later") -> None:
        self.first = first
        self.seen: set[str] = set()
        self.messages: list[tuple[list[str], bytes]] = []

    async def handle_RCPT(
        self, server: object, session: object, envelope: Any, address: str, options: object
    ) -> str:
        if address not in self.seen:
            self.seen.add(address)
            return self.first
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 Message accepted"


@contextmanager
def _smtp(handler: object, port: int) -> Iterator[None]:
    from aiosmtpd.controller import Controller

    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield
    finally:
        controller.stop()


def _form_app(settings: Settings, **changes: Any) -> tuple[Settings, Any]:
    from starlette.testclient import TestClient

    roomy = dataclasses.replace(
        settings, subscribe_per_client_hour=10**6, subscribe_per_hour=10**6, **changes
    )
    client = TestClient(create_app(roomy, send_confirmations=False), base_url="https://news.test")
    return roomy, client


def _weekly(engine: Engine) -> None:
    with db.writing(engine) as conn:
        if audience.public_list_id(conn, "weekly") is None:
            audience.create_list(conn, "weekly", public=True)


def _age(engine: Engine, by: dt.timedelta) -> None:
    """Move every queued post `by` into the past: the clock passing, without waiting."""
    queue = confirmation_queue.c
    with db.writing(engine) as conn:
        rows = conn.execute(select(queue.id, queue.requested_at)).all()
        for row_id, stamp in rows:
            conn.execute(
                confirmation_queue.update()
                .where(queue.id == row_id)
                .values(requested_at=db.aware(stamp) - by)
            )


def _smtp_settings(settings: Settings, port: int) -> dict[str, Any]:
    return {"mailer": "smtp", "smtp_host": "127.0.0.1", "smtp_port": port, "smtp_timeout": 2.0}


def test_a_greylisted_confirmation_is_delivered_on_retry(
    engine: Engine, db_settings: Settings
) -> None:
    _weekly(engine)
    port = free_port()
    handler = _Greylist()
    roomy, client = _form_app(db_settings, **_smtp_settings(db_settings, port))
    with _smtp(handler, port), client:
        assert client.post("/subscribe", data={"email": "g@example.org"}).status_code == 200
        drain_confirmations(roomy, engine)
        assert handler.messages == []  # 451: not now...
        _age(engine, confirmations.RETRY[1])
        drain_confirmations(roomy, engine)
    assert [rcpt for rcpt, _ in handler.messages] == [["g@example.org"]]  # ...but later


def test_a_confirmation_survives_an_smtp_outage(engine: Engine, db_settings: Settings) -> None:
    _weekly(engine)
    port = free_port()  # nothing listens yet
    handler = _Greylist(first="250 OK")
    handler.seen.add("o@example.org")
    roomy, client = _form_app(db_settings, **_smtp_settings(db_settings, port))
    with client:
        assert client.post("/subscribe", data={"email": "o@example.org"}).status_code == 200
        for _ in range(3):  # the old worker gave up after three quick tries
            drain_confirmations(roomy, engine)
            _age(engine, dt.timedelta(seconds=5))
        with _smtp(handler, port):
            _age(engine, dt.timedelta(hours=1))
            drain_confirmations(roomy, engine)
    assert [rcpt for rcpt, _ in handler.messages] == [["o@example.org"]]


def test_a_row_claimed_by_a_dead_worker_is_sent_after_its_lease(
    engine: Engine, db_settings: Settings
) -> None:
    _weekly(engine)
    port = free_port()
    handler = _Greylist(first="250 OK")
    handler.seen.add("d@example.org")
    roomy, client = _form_app(db_settings, **_smtp_settings(db_settings, port))
    queue = confirmation_queue.c
    with _smtp(handler, port), client:
        assert client.post("/subscribe", data={"email": "d@example.org"}).status_code == 200
        with db.writing(engine) as conn:  # resolve it, without sending
            [(row_id, address)] = conn.execute(select(queue.id, queue.email)).all()
            confirmations._resolve(conn, row_id, address)
        with db.writing(engine) as conn:  # a worker claims it (what its claim writes)...
            conn.execute(
                confirmation_queue.update().where(queue.id == row_id).values(attempts=1)
            )  # ...and is killed (-9) before it sends
        drain_confirmations(roomy, engine)
        assert handler.messages == []  # within its lease nobody else sends it
        _age(engine, confirmations.RETRY[1])
        drain_confirmations(roomy, engine)
    assert [rcpt for rcpt, _ in handler.messages] == [["d@example.org"]]


def test_a_repost_after_an_abandoned_confirmation_sends_again(
    engine: Engine, db_settings: Settings
) -> None:
    _weekly(engine)
    port = free_port()
    handler = _Greylist(first="550 5.1.1 Mailbox unavailable")  # once, for good
    roomy, client = _form_app(db_settings, **_smtp_settings(db_settings, port))
    with _smtp(handler, port), client:
        assert client.post("/subscribe", data={"email": "a@example.org"}).status_code == 200
        drain_confirmations(roomy, engine)
        assert handler.messages == []
        assert client.post("/subscribe", data={"email": "a@example.org"}).status_code == 200
        drain_confirmations(roomy, engine)
    assert [rcpt for rcpt, _ in handler.messages] == [["a@example.org"]]


NAMES = st.text(
    st.characters(categories=["L", "N", "P", "Zs"], exclude_characters="\u2028\u2029"),
    min_size=1,
    max_size=30,
).filter(lambda n: n.strip() == n and n.strip())


@given(attacker=NAMES, victim=NAMES | st.just(""))
@hsettings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_a_strangers_name_never_becomes_the_subscribers(
    engine: Engine, db_settings: Settings, attacker: str, victim: str
) -> None:
    import re
    import uuid

    if attacker == victim:
        return
    _weekly(engine)
    address = f"v{uuid.uuid4().hex[:12]}@example.org"
    roomy, client = _form_app(db_settings)
    with client:
        for name in (attacker, victim):  # the stranger first, then the address's owner
            form = {"email": address, "name": name}
            assert client.post("/subscribe", data=form).status_code == 200
            drain_confirmations(roomy, engine)
        folder = roomy.path("outbox_dir") / "messages"
        mails = [
            email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
            for p in folder.glob("*.eml")
        ]
        [mail] = [m for m in mails if address in str(m["To"])]
        # The To carries no posted name at all (the address itself may contain the text).
        assert [a.display_name for a in mail["To"].addresses] == [""]
        body = mail.get_body()
        assert body is not None
        link = re.search(r"https://news\.test(/confirm/\S+)", body.get_content())
        assert link is not None
        assert client.post(link.group(1)).status_code == 200
    with db.reading(engine) as conn:
        stored = conn.execute(
            select(subscribers.c.name).where(subscribers.c.email == address)
        ).scalar_one()
    assert stored in (victim, "")
    assert stored != attacker
