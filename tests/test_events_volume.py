"""Events at volume over the real `newsletter serve`: a large signed ingest is stored in
short chunks, so a one-click unsubscribe posted while it runs is answered before it ends;
soft bounces are counted and N of them within the window suppress the address."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import func, select

from newsletter import audience, db, tokens, webhook
from newsletter.schema import (
    lists,
    memberships,
    subscribers,
    suppressions,
    webhook_events,
)
from tests.conftest import Served
from tests.test_webhook import encode, event, new_key, public_b64, signed_headers

KEY = new_key()  # generated for this module; the server gets its public half


def served(serve: Callable[..., Served]) -> Served:
    server = serve("volume", sendgrid_webhook_public_key=public_b64(KEY), soft_bounce_limit="3")
    with db.writing(server.engine) as conn:
        for table in (webhook_events, suppressions, memberships, subscribers, lists):
            conn.execute(table.delete())
    return server


def post(server: Served, events: list[dict[str, Any]]) -> httpx.Response:
    body = encode(events)
    headers = signed_headers(KEY, body)
    return httpx.post(server.url + webhook.PATH, content=body, headers=headers, timeout=120)


def stored(server: Served) -> int:
    with db.reading(server.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(webhook_events)).scalar_one())


def big_batch(start: int, count: int) -> list[dict[str, Any]]:
    return [
        event("delivered", f"reader{n % 5000}@example.org", n, timestamp=1765350000 + n)
        for n in range(start, start + count)
    ]


def test_an_unsubscribe_posted_during_a_large_ingest_is_answered_before_it_ends(
    serve: Callable[..., Served],
) -> None:
    server = served(serve)
    with db.writing(server.engine) as conn:
        audience.create_list(conn, "weekly", public=True)
        audience.add_subscriber(conn, "quitter@example.org", "weekly", confirmed=True)
        public_id = conn.execute(select(subscribers.c.public_id)).scalar_one()
    link = tokens.unsubscribe_links(server.settings, "weekly")(public_id)
    link = link.replace(server.settings.base_url, server.url)
    batches = [big_batch(n * 12_000, 12_000) for n in range(4)]  # ~2 MB signed POSTs
    answers: list[int] = []

    def ingest() -> None:
        answers.extend(post(server, events).status_code for events in batches)

    worker = threading.Thread(target=ingest)
    worker.start()
    try:
        while stored(server) == 0:  # the ingest has begun writing
            pass
        answer = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=30)
        done_when_answered = stored(server)
        still_ingesting = worker.is_alive()
    finally:
        worker.join()
    assert answer.status_code == 200
    assert still_ingesting
    assert done_when_answered < 48_000
    assert answers == [200] * 4
    assert stored(server) == 48_000
    with db.reading(server.engine) as conn:
        assert (
            audience.suppressions_of(conn, "quitter@example.org")
            or conn.execute(select(memberships.c.status)).scalar_one() == "unsubscribed"
        )


def test_a_large_batch_posted_again_with_new_ids_stores_nothing_twice(
    serve: Callable[..., Served],
) -> None:
    server = served(serve)
    events = big_batch(0, 3000)
    assert post(server, events).text == "Received 3000 event(s), 3000 new."
    retried = [dict(e, sg_event_id="retry-" + e["sg_event_id"]) for e in events]
    assert post(server, retried).text == "Received 3000 event(s), 0 new."
    assert stored(server) == 3000


def soft(address: str, n: int, at: int) -> dict[str, Any]:
    return event("bounce", address, n, type="blocked", timestamp=at, reason="421 try later")


def test_three_soft_bounces_within_the_window_suppress_two_do_not(
    serve: Callable[..., Served],
) -> None:
    server = served(serve)
    day = 86_400
    start = 1765350000
    events = [
        soft("thrice@example.org", 1, start),
        soft("thrice@example.org", 2, start + day),
        event("deferred", "twice@example.org", 3, timestamp=start),  # counted, not a bounce
        soft("twice@example.org", 4, start),
        soft("twice@example.org", 5, start + 2 * day),
        soft("spread@example.org", 6, start),
        soft("spread@example.org", 7, start + 40 * day),
    ]
    assert post(server, events).status_code == 200
    # The third soft bounce arrives in a later POST; the 40-day-old one is outside the window.
    later = [
        soft("thrice@example.org", 8, start + 3 * day),
        soft("spread@example.org", 9, start + 41 * day),
    ]
    assert post(server, later).status_code == 200
    with db.reading(server.engine) as conn:
        kept = dict(conn.execute(select(suppressions.c.email, suppressions.c.reason)).all())
    assert kept == {"thrice@example.org": "bounced"}
