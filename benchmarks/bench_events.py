"""How fast are SendGrid's events stored, and does an unsubscribe still answer meanwhile?

    python benchmarks/bench_events.py [--events 1000000] [--rounds 5] [--postgres URL]

1. A 768 KB batch (SendGrid's largest POST): parse + store, median of `rounds`, each round
   with fresh event ids on the same growing table.
2. `events` events in 768 KB batches, one after another (parse + store; building the JSON is
   not counted), into an empty table: the total.
3. A real `newsletter serve` on the same database: while a thread posts signed 768 KB
   batches to it, one-click unsubscribes are posted every 0.2 s; their wall times (as the
   client sees them) are printed as median and maximum.

On SQLite (a throwaway file) by default; with --postgres, in a fresh schema of that
server, dropped afterwards.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import create_engine, select, text
from sqlalchemy.engine import Engine, make_url

from newsletter import audience, db, tokens, webhook
from newsletter.config import Settings, load_settings
from newsletter.schema import subscribers, suppressions

BATCH_BYTES = 768 * 1024
KINDS = ("processed", "delivered", "open", "click", "deferred", "bounce")


def events(start: int) -> Iterator[dict[str, Any]]:
    """SendGrid-shaped events, numbered from `start`: unique ids and fingerprints."""
    n = start
    while True:
        kind = KINDS[n % len(KINDS)]
        item: dict[str, Any] = {
            "email": f"reader{n % 50_000:05d}@example.org",
            "timestamp": 1765350000 + n,
            "event": kind,
            "sg_event_id": f"ZGVsaXZlcmVk-{n:012d}",
            "sg_message_id": f"14c5d75ce93.dfd.64b469.filter0001.{n // 3}.0",
            "newsletter_issue": "2025-12-10",
            "newsletter_key": str(n // 3 + 1),
            "category": ["newsletter", "weekly"],
            "ip": "203.0.113.7",
            "useragent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64)",
        }
        if kind == "click":
            item["url"] = f"https://news.example.org/articles/{n % 40}?utm_source=newsletter"
        if kind == "bounce":
            item["type"] = "blocked"
            item["reason"] = "421 4.7.0 try again later"
        yield item
        n += 1


def batch(start: int) -> tuple[bytes, int]:
    """One body of at most 768 KB from event `start` on; and how many events it holds."""
    parts: list[bytes] = []
    size = 2
    for item in events(start):
        encoded = json.dumps(item).encode()
        if size + len(encoded) + 1 > BATCH_BYTES:
            break
        parts.append(encoded)
        size += len(encoded) + 1
    return b"[" + b",".join(parts) + b"]", len(parts)


def store(engine: Engine, settings: Settings, body: bytes) -> float:
    started = time.perf_counter()
    webhook.ingest(engine, webhook.parse_events(body), settings)
    return time.perf_counter() - started


def measure_batches(engine: Engine, settings: Settings, total: int, rounds: int) -> str:
    done, spent = 0, 0.0
    cpu = time.process_time()
    while done < total:
        body, count = batch(done)
        spent += store(engine, settings, body)
        done += count
    # CPU of this process (parsing, and on SQLite the database work too), building the JSON
    # included: on a shared machine the wall time says as much about the neighbours.
    cpu = time.process_time() - cpu
    one = []
    for _ in range(rounds):
        body, count = batch(done)
        one.append(store(engine, settings, body))
        done += count
    size = len(body) / 1024
    return (
        f"{done:,} events in 768 KB batches: {spent:.1f} s wall "
        f"({done / spent:,.0f} events/s), {cpu:.1f} s CPU of this process\n"
        f"one 768 KB batch ({count:,} events, {size:.0f} KB): median "
        f"{statistics.median(one) * 1000:.0f} ms of {rounds} (max {max(one) * 1000:.0f} ms)"
    )


def measure_unsubscribe(root: Path, env: dict[str, str], key: ec.EllipticCurvePrivateKey) -> str:
    settings = load_settings(root, env=env)
    engine = db.connect(settings)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly", public=True)
        for i in range(60):
            audience.add_subscriber(conn, f"quitter{i}@example.org", "weekly", confirmed=True)
        ids = conn.execute(select(subscribers.c.public_id)).scalars().all()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(url)
        links = tokens.unsubscribe_links(settings, "weekly")
        return _race(url, engine, key, [links(p).replace(settings.base_url, url) for p in ids])
    finally:
        server.terminate()
        server.wait(timeout=30)
        engine.dispose()


def _race(url: str, engine: Engine, key: ec.EllipticCurvePrivateKey, links: list[str]) -> str:
    stop = threading.Event()
    posted = [0]

    def ingest() -> None:
        start = 10_000_000
        with httpx.Client(timeout=120) as client:
            while not stop.is_set():
                body, count = batch(start)
                stamp = str(int(time.time()))
                signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
                headers = {
                    webhook.SIGNATURE_HEADER: base64.b64encode(signature).decode(),
                    webhook.TIMESTAMP_HEADER: stamp,
                }
                answer = client.post(url + webhook.PATH, content=body, headers=headers)
                assert answer.status_code == 200, answer.text
                start += count
                posted[0] += count

    worker = threading.Thread(target=ingest)
    worker.start()
    times = []
    try:
        time.sleep(1.0)
        with httpx.Client(timeout=30) as client:
            for link in links:
                started = time.perf_counter()
                answer = client.post(link, data={"List-Unsubscribe": "One-Click"})
                times.append((time.perf_counter() - started) * 1000)
                assert answer.status_code == 200, answer.status_code
                time.sleep(0.2)
    finally:
        stop.set()
        worker.join()
    with db.reading(engine) as conn:
        gone = len(conn.execute(select(suppressions.c.id)).all())
    return (
        f"unsubscribe during ingest: median {statistics.median(times):.0f} ms, "
        f"max {max(times):.0f} ms over {len(times)} posts ({gone} stored) "
        f"while {posted[0]:,} events were ingested"
    )


def wait_for(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "/subscribe", timeout=2)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", default="")
    args = parser.parse_args()
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    with tempfile.TemporaryDirectory() as folder, database(args.postgres, Path(folder)) as url:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(32),
            "NEWSLETTER_DATABASE_URL": url,
            "NEWSLETTER_SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(public).decode(),
        }
        settings = load_settings(Path(folder), env=env)
        engine = db.connect(settings)
        print("postgresql" if args.postgres else "sqlite")
        print(measure_batches(engine, settings, args.events, args.rounds))
        engine.dispose()
        print(measure_unsubscribe(Path(folder), env, key))


class database:
    """A SQLite file in `folder`, or a fresh schema on the PostgreSQL server at `url`."""

    def __init__(self, url: str, folder: Path) -> None:
        self.url, self.folder, self.schema = url, folder, f"bench_{uuid.uuid4().hex[:12]}"

    def __enter__(self) -> str:
        if not self.url:
            return f"sqlite:///{self.folder / 'events.db'}"
        with create_engine(self.url).begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{self.schema}"'))
        query = {"options": f"-csearch_path={self.schema}"}
        return make_url(self.url).update_query_dict(query).render_as_string(hide_password=False)

    def __exit__(self, *_exc: object) -> None:
        if self.url:
            with create_engine(self.url).begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{self.schema}" CASCADE'))


if __name__ == "__main__":
    main()
