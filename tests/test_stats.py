"""`newsletter stats` on a scripted event stream posted, signed, to the real `serve`: every
figure equals the count worked out by hand below."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import lxml.html
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter import db, dispatch, stats, statsreport, webhook
from newsletter.config import Secret
from newsletter.dispatch import SendOptions
from newsletter.errors import UsageError
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import AudienceSpec, RenderedEmail
from newsletter.schema import (
    issue_copies,
    lists,
    memberships,
    send_issues,
    send_ledger,
    send_runs,
    subscribers,
    suppressions,
    webhook_events,
)
from tests.conftest import Served, populate, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid
from tests.test_webhook import encode, new_key, public_b64, signed_headers

ISSUE = "2025-12-10"
KEY = new_key()
APRICOTS = "https://news.example.org/a/apricots"
RATES = "https://news.example.org/b/rates?page=2"
HTML = (
    f'<p>Hello</p><a href="{APRICOTS}?utm_source=newsletter">Apricot harvest</a>'
    f'<a href="{RATES}&amp;utm_medium=email">Rates <b>&amp; more</b></a>'
    '<a href="-unsubscribe_url-">Unsubscribe</a>'
)


def served(serve: Callable[..., Served]) -> Served:
    server = serve("stats", sendgrid_webhook_public_key=public_b64(KEY))
    with db.writing(server.engine) as conn:
        for table in (webhook_events, send_ledger, send_runs, send_issues, issue_copies):
            conn.execute(table.delete())
        for table in (suppressions, memberships, subscribers, lists):
            conn.execute(table.delete())
    return server


def sent_to_ten(server: Served, rendered: RenderedEmail, fake: FakeSendGrid) -> list[str]:
    readers = populate(server.engine, 10)
    pointed = dataclasses.replace(
        server.settings,
        sendgrid_api_key=Secret(fake.api_key),
        sendgrid_api_url=fake.url,
        sendgrid_timeout=1.0,
    )
    mailer = SendGridMailer(pointed, retry=RetryPolicy(attempts=1, base=0.01, cap=0.05))
    email = dataclasses.replace(rendered, html=HTML)
    report = dispatch.send_issue(
        server.engine, email, AudienceSpec("weekly"), mailer, lambda p: f"https://n.test/{p}",
        SendOptions(batch_size=5),
    )  # fmt: skip
    assert report.sent == 10
    return readers


def post(server: Served, events: list[dict[str, Any]]) -> None:
    body = encode(events)
    answer = httpx.post(
        server.url + webhook.PATH, content=body, headers=signed_headers(KEY, body), timeout=30
    )
    assert answer.status_code == 200, answer.text


def script(r: list[str]) -> list[dict[str, Any]]:
    """The stream; `n` makes ids and timestamps unique."""
    n = iter(range(1000))

    def ev(kind: str, who: str, issue: str = ISSUE, **extra: Any) -> dict[str, Any]:
        i = next(n)
        args = {"newsletter_issue": issue, "newsletter_key": "1"} if issue else {}
        return {
            "event": kind, "email": who, "timestamp": 1765350000 + i,
            "sg_event_id": f"ev-{i}", "sg_message_id": f"msg-{who}", **args, **extra,
        }  # fmt: skip

    return [
        *(ev("delivered", who) for who in r[:8]),  # delivered: 8
        ev("delivered", r[0]),  # again: still 8 unique
        ev("bounce", r[8], type="bounce"),  # hard: 1
        ev("bounce", r[9], type="blocked"),
        ev("bounce", r[9], type="blocked"),  # soft: 1 address
        ev("deferred", r[9]),
        ev("deferred", r[1]),  # deferred: 2 events
        ev("open", r[0]),
        ev("open", r[0]),
        ev("open", r[1]),
        ev("open", r[2], sg_machine_open=True),  # left out: 1 machine open
        ev("open", r[3]),  # unique opens: r0, r1, r3 = 3
        ev("click", r[0], url=f"{APRICOTS}?utm_source=newsletter&utm_medium=email"),
        ev("click", r[1], url=f"{APRICOTS}?utm_campaign=x"),
        ev("click", r[0], url=APRICOTS),  # apricots: r0, r1 = 2
        ev("click", r[2], url=f"{RATES}&utm_medium=email"),  # rates: 1; clickers: 3
        ev("unsubscribe", r[3]),
        ev("group_unsubscribe", r[4]),  # unsubscribes: 2
        ev("spamreport", r[5]),  # spam reports: 1
        ev("open", r[6], issue="2025-12-03"),  # another issue's: not counted
        ev("open", r[7], issue=""),  # no custom args: not counted
        ev("made_up", r[7]),  # unknown type: stored, counted nowhere
    ]


def test_the_stats_of_a_scripted_stream_equal_the_hand_counts(
    serve: Callable[..., Served], rendered: RenderedEmail, fake_sendgrid: FakeSendGrid
) -> None:
    server = served(serve)
    post(server, script(sent_to_ten(server, rendered, fake_sendgrid)))
    [got] = stats.issue_stats(server.engine, ISSUE)
    counts = {k: v for k, v in dataclasses.asdict(got).items() if k != "links"}
    assert counts == {
        "issue": ISSUE, "edition": "", "recipients": 10, "sent": 10, "delivered": 8,
        "hard_bounces": 1, "soft_bounces": 1, "deferred": 2, "unique_opens": 3,
        "machine_opens": 1, "unique_clicks": 3, "unsubscribes": 2, "spam_reports": 1,
    }  # fmt: skip
    assert got.links == [
        stats.Link(APRICOTS, "Apricot harvest", 2),
        stats.Link(RATES, "Rates & more", 1),
    ]
    assert got.rates == {
        "delivered": 0.8, "hard_bounces": 0.1, "soft_bounces": 0.1, "unique_opens": 0.375,
        "unique_clicks": 0.375, "unsubscribes": 0.25, "spam_reports": 0.125,
    }  # fmt: skip


def test_an_issue_without_events_has_zeros_and_no_rates(
    serve: Callable[..., Served], rendered: RenderedEmail, fake_sendgrid: FakeSendGrid
) -> None:
    server = served(serve)
    sent_to_ten(server, rendered, fake_sendgrid)
    [got] = stats.issue_stats(server.engine, ISSUE)
    assert (got.sent, got.delivered, got.unique_opens, got.links) == (10, 0, 0, [])
    assert got.rates["delivered"] == 0.0
    assert got.rates["unique_opens"] is None  # nothing delivered: no rate, not 0 %


def test_an_issue_never_sent_is_refused_by_name(serve: Callable[..., Served]) -> None:
    server = served(serve)
    with pytest.raises(UsageError, match="2031-01-01: no send of this issue"):
        stats.issue_stats(server.engine, "2031-01-01")


def test_the_command_prints_json_and_compares_the_last_issues(
    serve: Callable[..., Served],
    rendered: RenderedEmail,
    fake_sendgrid: FakeSendGrid,
    tmp_path: Path,
) -> None:
    server = served(serve)
    post(server, script(sent_to_ten(server, rendered, fake_sendgrid)))
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": server.settings.database,
    }
    shown = run_newsletter(tmp_path, "stats", ISSUE, "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    [figures] = json.loads(shown.stdout)
    assert (figures["unique_opens"], figures["links"][0]["text"]) == (3, "Apricot harvest")
    assert "privacy proxies" in figures["opens_caveat"]
    text = run_newsletter(tmp_path, "stats", ISSUE, env=env)
    assert "Apricot harvest" in text.stdout
    assert "privacy proxies" in text.stdout
    side = run_newsletter(tmp_path, "stats", "--last", "3", env=env)
    assert side.returncode == 0, side.stderr
    assert ISSUE in side.stdout
    assert "8 (80.0%)" in side.stdout
    neither = run_newsletter(tmp_path, "stats", env=env)
    assert neither.returncode != 0
    assert "Give either an ISSUE or --last N." in neither.stderr + neither.stdout


def test_the_html_report_is_one_page_with_three_charts_and_nothing_to_load(
    serve: Callable[..., Served],
    rendered: RenderedEmail,
    fake_sendgrid: FakeSendGrid,
    tmp_path: Path,
) -> None:
    server = served(serve)
    post(server, script(sent_to_ten(server, rendered, fake_sendgrid)))
    env = {"PATH": os.environ.get("PATH", ""), "NEWSLETTER_DATABASE_URL": server.settings.database}
    done = run_newsletter(tmp_path, "stats", ISSUE, "--html", "report.html", env=env)
    assert done.returncode == 0, done.stderr
    tree = lxml.html.fromstring((tmp_path / "report.html").read_text(encoding="utf-8"))
    assert len(tree.findall(".//svg")) == 3
    assert len(tree.findall(".//polyline")) == 4  # opens and clicks by hour; both rates
    assert not tree.xpath("//script | //link | //img | //iframe | //*[@src] | //*[@href]")
    bars = [" ".join(t.text_content().split()) for t in tree.findall(".//li")]
    assert bars == [f"2 · Apricot harvest · {APRICOTS}", f"1 · Rates & more · {RATES}"]


DANGEROUS = st.text(alphabet=st.sampled_from(list("<>&\"'/=;: \\`{}%abcscript\u202e\x00\n")))


@settings(max_examples=60, deadline=None)
@given(text=DANGEROUS, url=DANGEROUS)
def test_link_texts_and_urls_reach_the_page_as_text(text: str, url: str) -> None:
    """Untrusted link text and URLs stay data: the page's parser gets them back as text."""
    figures = stats.EditionStats(
        issue="2025-12-10", edition="", recipients=1, sent=1, delivered=1, hard_bounces=0,
        soft_bounces=0, deferred=0, unique_opens=0, machine_opens=0, unique_clicks=1,
        unsubscribes=0, spam_reports=0, links=[stats.Link(url, text, 1)],
    )  # fmt: skip
    html = statsreport.render(figures, [0] * 72, [0] * 72, [figures])
    tree = lxml.html.fromstring(html)
    assert not tree.xpath("//script | //*[@onload] | //*[@onerror] | //*[@src]")
    [item] = tree.findall(".//li")
    shown = text or url
    # lxml drops NUL as an XML-invalid character; everything else comes back as typed.
    assert item.text_content() == f"1 · {shown} · {url}".replace("\x00", "\ufffd") or (
        "\x00" in shown + url
    )
    [title] = [t for t in tree.iter("title") if (g := t.getparent()) is not None and g.tag == "g"]
    assert title.text_content() in (url, url.replace("\x00", "\ufffd")) or "\x00" in url
