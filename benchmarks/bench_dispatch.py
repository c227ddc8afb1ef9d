"""Benchmark: send the sample issue from SQLite, through the ledger, to a fake SendGrid.

Usage: python benchmarks/bench_dispatch.py [--recipients 100000] [--floor-batches 100]
       python benchmarks/bench_dispatch.py --postgres URL --workers 1,2,3 [--recipients N]
       python benchmarks/bench_dispatch.py --command [--recipients N]

With --postgres, each worker count gets a fresh schema on that server with N subscribers,
and that many sender processes (each `send_issue`, as `newsletter send` workers are) start
together on the one issue; the floor then runs as many posting processes at once, so the
ratio compares like with like (the fake server, one Python process, is shared by all).
With --command, the whole `newsletter send ISSUE --yes` is timed as a user runs it
(start-up, build, preflight, plan and send) against the same floor.

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

WORKER = """
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
links = tokens.unsubscribe_links(settings, "weekly")
print("ready", flush=True)
sys.stdin.readline()  # every worker starts at once
started = time.time()
report = dispatch.send_issue(
    engine, email, AudienceSpec("weekly"), mailer, links, dispatch.SendOptions()
)
ended = time.time()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"started": started, "ended": ended, "sent": report.sent,
                  "peak_mb": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime}))
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
if engine.dialect.name == "postgresql":  # statistics, as autovacuum would gather them soon
    from sqlalchemy import text
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE subscribers, memberships, suppressions"))
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


def together(code: str, count: int, *args: str) -> list[dict[str, Any]]:
    """`count` children of `code`, released at the same moment once all are ready."""
    children = [
        subprocess.Popen(
            [sys.executable, "-c", code, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for process in children:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
    for process in children:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = []
    for process in children:
        out, _err = process.communicate()
        assert process.returncode == 0
        results.append(json.loads(out.strip().splitlines()[-1]))
    return results


PARALLEL_FLOOR = FLOOR.replace(
    "started = time.perf_counter()",
    "print('ready', flush=True)\n"
    "sys.stdin.readline()\nstarted = time.perf_counter()\nbegan = time.time()",
).replace('"peak_mb": peak}', '"peak_mb": peak, "started": began, "ended": time.time()}')


def postgres_schema(url: str) -> tuple[str, Any]:
    """A fresh schema on the server at `url`: its URL, and the engine that drops it."""
    import uuid

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
    return scoped.render_as_string(hide_password=False), (admin, name)


def drop_schema(handle: Any) -> None:
    from sqlalchemy import text

    admin, name = handle
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
    admin.dispose()


def bench_workers(args: argparse.Namespace, url: str) -> None:
    for count in [int(n) for n in args.workers.split(",")]:
        database, handle = postgres_schema(args.postgres)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                populate(Path(tmp), database, args.recipients)
            env = bench_env(database, url)
            before = stats(url)["delivered"]
            runs = together(WORKER, count, str(REPO), json.dumps(env))
            delivered = stats(url)["delivered"] - before
            floors = together(
                PARALLEL_FLOOR, count, str(REPO), json.dumps(env), str(args.floor_batches // count)
            )
        finally:
            drop_schema(handle)
        report_workers(args.recipients, count, runs, delivered, floors)


def report_workers(
    total: int, count: int, runs: list[dict[str, Any]], delivered: int, floors: list[dict[str, Any]]
) -> None:
    assert sum(r["sent"] for r in runs) == total == delivered, (runs, delivered)
    wall = max(r["ended"] for r in runs) - min(r["started"] for r in runs)
    floor_wall = max(f["ended"] for f in floors) - min(f["started"] for f in floors)
    floor_rate = sum(f["recipients"] for f in floors) / floor_wall
    print(f"PostgreSQL, {count} worker(s), {total:,} recipients")
    print(f"  wall (first start to last end) {wall:>8.2f} s  total {total / wall:>9,.0f} /s")
    for number, run in enumerate(runs, 1):
        seconds = run["ended"] - run["started"]
        print(
            f"  worker {number}: sent {run['sent']:>9,} in {seconds:>7.2f} s  "
            f"{run['sent'] / seconds:>8,.0f} /s  CPU {run['cpu']:>6.2f} s  "
            f"peak {run['peak_mb']:>4.0f} MB"
        )
    print(f"  floor, {count} poster(s) at once  {floor_rate:>9,.0f} /s")
    print(f"  ratio to the floor             {floor_rate / (total / wall):>8.2f} x")


def bench_env(database: str, url: str) -> dict[str, str]:
    return {
        "NEWSLETTER_DATABASE_URL": database,
        "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(32),  # a weak key is refused
        "NEWSLETTER_SENDGRID_API_URL": url,
        "NEWSLETTER_SENDGRID_TIMEOUT": "30",
        "SENDGRID_API_KEY": KEY,
    }


def bench_command(args: argparse.Namespace, url: str) -> None:
    """The whole command as a user runs it, against the floor in the same session."""
    import os
    import time

    with tempfile.TemporaryDirectory() as tmp:
        database = f"sqlite:///{Path(tmp) / 'bench.db'}"
        populate(Path(tmp), database, args.recipients)
        env = bench_env(database, url)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "newsletter", "send", "issues/2025-12-10.yaml", "--yes"],
            cwd=REPO,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - started
        assert stats(url) == {"delivered": args.recipients, "distinct": args.recipients}
        floor = child(FLOOR, str(REPO), json.dumps(env), str(args.floor_batches))
    floor_same = floor["seconds"] / floor["recipients"] * args.recipients
    print(f"newsletter send --yes, {args.recipients:,} SQLite recipients: {seconds:.2f} s")
    print(f"  floor for as many: {floor_same:.2f} s; ratio {seconds / floor_same:.2f} x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=100_000)
    parser.add_argument("--floor-batches", type=int, default=100)
    parser.add_argument("--postgres", default="", help="a PostgreSQL URL: bench workers there")
    parser.add_argument("--workers", default="1,2,3", help="worker counts, with --postgres")
    parser.add_argument("--command", action="store_true", help="time `newsletter send --yes`")
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
        if args.postgres:
            bench_workers(args, url)
            return
        if args.command:
            bench_command(args, url)
            return
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
