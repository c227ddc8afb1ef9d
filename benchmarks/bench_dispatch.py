"""Benchmark: send the sample issue from SQLite, through the ledger, to a fake SendGrid.

Usage: python benchmarks/bench_dispatch.py [--recipients 100000] [--floor-batches 100]

Three processes: the fake SendGrid (counting only, on 127.0.0.1), and, one after the
other, the sender and the floor. The sender runs `dispatch.send_issue` on a fresh SQLite
database of N confirmed subscribers (imported before the clock starts) with the real
sample issue, real unsubscribe tokens and the real `sendgrid` client; the plan that
`newsletter send` shows before it asks is timed on its own, first. The floor posts
prebuilt Mail Send bodies of the same shape through the same client, with no database:
what the network, JSON and the server cost anyway. Each child reports its wall time and
its own peak RSS (getrusage RUSAGE_SELF); the sender also its CPU time, which other jobs
on a shared machine disturb less than the wall time.
"""

from __future__ import annotations

import argparse
import csv
import json
import secrets
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
KEY = "SG.benchmark-key-not-a-secret"

SENDER = """
import json, resource, sys, time
from pathlib import Path
from newsletter import db, dispatch, tokens
from newsletter.build import build_issue
from newsletter.config import load_settings
from newsletter.models import AudienceSpec
from newsletter.mailers.sendgrid import SendGridMailer

root, env = Path(sys.argv[1]), json.loads(sys.argv[2])
settings = load_settings(root, env=env)
email = build_issue(root / "issues" / "2025-12-10.yaml", settings).email
engine = db.connect(settings)
mailer = SendGridMailer(settings)
links = tokens.unsubscribe_links(settings, "weekly")  # as `newsletter send` makes them
planned = time.perf_counter()
plan = dispatch.plan_send(engine, email, AudienceSpec("weekly"), mailer, dispatch.SendOptions())
plan_seconds = time.perf_counter() - planned
assert plan.to_send == int(sys.argv[3]), plan
before = resource.getrusage(resource.RUSAGE_SELF)
cpu_before = before.ru_utime + before.ru_stime
started = time.perf_counter()
report = dispatch.send_issue(
    engine, email, AudienceSpec("weekly"), mailer, links, dispatch.SendOptions()
)
elapsed = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": elapsed, "sent": report.sent, "batches": report.batches,
                  "plan_seconds": plan_seconds,
                  "peak_mb": usage.ru_maxrss / 1024,
                  "cpu": usage.ru_utime + usage.ru_stime - cpu_before}))
"""

FLOOR = """
import json, resource, sys, time
from pathlib import Path
from newsletter.build import build_issue
from newsletter.config import load_settings
from newsletter.models import Recipient, SendBatch
from newsletter.mailers.sendgrid import SendGridMailer, build_payload

root, env, batches = Path(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
settings = load_settings(root, env=env)
email = build_issue(root / "issues" / "2025-12-10.yaml", settings).email
link = settings.base_url + "/u/" + "x" * 90  # a token's length
def batch(b):
    people = tuple(Recipient(f"floor{b}.{i}@example.org", "Reader", link, "p") for i in range(1000))
    return SendBatch("floor", "weekly", people, tuple(str(i) for i in range(1000)))
bodies = [build_payload(email, batch(b), settings) for b in range(batches)]
mailer = SendGridMailer(settings)
started = time.perf_counter()
for body in bodies:
    outcome = mailer.post_payload(body, ("k",))
    assert outcome.results[0].state == "sent", outcome
elapsed = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": elapsed, "recipients": batches * 1000, "peak_mb": peak}))
"""

IMPORT = """
import sys
from pathlib import Path
from newsletter import audience, db
from newsletter.audience_csv import import_csv
from newsletter.config import load_settings
settings = load_settings(Path(sys.argv[1]), env={"NEWSLETTER_DATABASE_URL": sys.argv[2]})
engine = db.connect(settings)
with db.writing(engine) as conn:
    audience.create_list(conn, "weekly")
import_csv(engine, Path(sys.argv[3]), "weekly", confirmed=True)
"""


def child(code: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def populate(folder: Path, url: str, count: int) -> None:
    source = folder / "subscribers.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        for i in range(count):
            writer.writerow([f"reader{i}@mail{i % 97}.example.org", f"Reader {i}"])
    subprocess.run([sys.executable, "-c", IMPORT, str(REPO), url, str(source)], check=True)


def stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{url}/_stats", timeout=30) as response:
        result: dict[str, int] = json.loads(response.read())
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--floor-batches", type=int, default=100)
    args = parser.parse_args()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.sendgrid_server", KEY],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            database = f"sqlite:///{Path(tmp) / 'bench.db'}"
            populate(Path(tmp), database, args.recipients)
            env = {
                "NEWSLETTER_DATABASE_URL": database,
                "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(32),  # a weak key is refused
                "NEWSLETTER_SENDGRID_API_URL": url,
                "NEWSLETTER_SENDGRID_TIMEOUT": "30",
                "SENDGRID_API_KEY": KEY,
            }
            sent = child(SENDER, str(REPO), json.dumps(env), str(args.recipients))
            after_send = stats(url)
            floor = child(FLOOR, str(REPO), json.dumps(env), str(args.floor_batches))
        report(args.recipients, sent, after_send, floor)
    finally:
        fake.kill()
        fake.wait()


def report(count: int, sent: dict[str, Any], server: dict[str, int], floor: dict[str, Any]) -> None:
    assert sent["sent"] == count, sent
    assert server == {"delivered": count, "distinct": count}, server
    floor_per_100k = floor["seconds"] / floor["recipients"] * 100_000
    floor_same = floor_per_100k * count / 100_000
    print(f"recipients          {count:>12,}")
    print(f"plan_send           {sent['plan_seconds']:>11.2f} s  (the plan `send` shows first)")
    print(f"send_issue          {sent['seconds']:>11.2f} s  ({sent['batches']} requests)")
    print(f"  CPU (sender)      {sent['cpu']:>11.2f} s  (steadier than wall time)")
    print(f"  peak RSS          {sent['peak_mb']:>11.0f} MB")
    print(f"  per 100,000       {sent['seconds'] / count * 100_000:>11.2f} s")
    print(f"floor (no database) {floor_per_100k:>11.2f} s per 100,000")
    print(f"  floor sample      {floor['recipients']:>12,} recipients")
    print(f"ratio to the floor  {sent['seconds'] / floor_same:>11.2f} x")
    print(f"server received     {server['delivered']:>12,} ({server['distinct']:,} distinct)")


if __name__ == "__main__":
    main()
