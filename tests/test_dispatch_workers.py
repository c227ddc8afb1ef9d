"""Several real `newsletter send` workers on one issue: heartbeats, leases, a shared rate.

Every worker is a child process running the real command against the fake SendGrid; the
faults come from outside, as in life (SIGKILL, SIGSTOP, slow answers). Assertions are on
what the server received, address by address, against what the ledger says.
"""

from __future__ import annotations

import collections
import csv
import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.engine import Engine

from newsletter import audience, db, ledger, schema
from newsletter.audience_csv import import_csv
from newsletter.config import load_settings
from tests.conftest import CANARY_KEY, TEST_KEYS, populate
from tests.fakes.sendgrid_counting import CountingSendGrid, running
from tests.fakes.sendgrid_server import Reply

ISSUE = "2025-12-10"


@pytest.fixture
def counting() -> Iterator[CountingSendGrid]:
    with running(CANARY_KEY) as fake:
        yield fake


@dataclass
class Workers:
    """A project on a test database, and how to start `newsletter send` workers on it."""

    root: Path
    env: dict[str, str]
    logs: list[Path]

    def start(self) -> subprocess.Popen[bytes]:
        log = self.root / f"worker-{len(self.logs)}.log"
        self.logs.append(log)
        command = [sys.executable, "-m", "newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
        with log.open("wb") as output:  # a file, not a pipe: nobody has to drain it
            return subprocess.Popen(
                command, cwd=self.root, env=self.env, stdout=output, stderr=subprocess.STDOUT
            )

    def output(self, number: int) -> str:
        return self.logs[number].read_text(encoding="utf-8", errors="replace")

    def engine(self) -> Engine:
        return db.connect(load_settings(self.root, env=self.env))

    def states(self) -> dict[str, str]:
        engine = self.engine()
        rows = schema.send_ledger
        with db.reading(engine) as conn:
            found = dict(conn.execute(select(rows.c.email, rows.c.state)).all())
        engine.dispose()
        return found

    def runs(self) -> list[tuple[int, int, bool, int]]:
        """(run id, pid, finished, sent) of every run, in order."""
        engine = self.engine()
        runs = schema.send_runs
        query = select(runs.c.id, runs.c.pid, runs.c.finished_at.is_not(None), runs.c.sent)
        with db.reading(engine) as conn:
            found = [tuple(r) for r in conn.execute(query.order_by(runs.c.id))]
        engine.dispose()
        return found


def workers_on(root: Path, database_url: str, fake: CountingSendGrid, **extra: str) -> Workers:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SECRET_KEY": TEST_KEYS,
        "NEWSLETTER_SENDGRID_API_URL": fake.url,
        "NEWSLETTER_SENDGRID_TIMEOUT": "30",
        "SENDGRID_API_KEY": CANARY_KEY,
        **{f"NEWSLETTER_{k.upper()}": v for k, v in extra.items()},
    }
    return Workers(root, env, [])


def wait_until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def finish(process: subprocess.Popen[bytes], seconds: float = 600) -> int:
    return process.wait(seconds)


def import_readers(workers: Workers, count: int) -> list[str]:
    """`count` confirmed subscribers on the weekly list, through the real CSV import."""
    addresses = [f"reader{i:06d}@example.org" for i in range(count)]
    source = workers.root / "subscribers.csv"
    with source.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        writer.writerows([address, f"Reader {i}"] for i, address in enumerate(addresses))
    engine = workers.engine()
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    import_csv(engine, source, "weekly", confirmed=True)
    # Statistics for the planner on the audience, as autovacuum would gather them a little
    # later: right after a bulk import it reads the audience page by page with a plan that
    # costs a second a page at this size. Not the ledger: analyzed empty, it would make
    # the plan's count of new recipients scan the growing ledger once per subscriber.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("ANALYZE subscribers, memberships, suppressions"))
    engine.dispose()
    return addresses


def test_three_workers_on_200000_recipients_one_killed_each_once_or_unknown(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("several workers on one issue is the PostgreSQL mode")
    workers = workers_on(project, database_url, counting, send_lease="2")
    readers = import_readers(workers, 200_000)
    # Slow answers: each worker spends most of its time with a request in flight, so the
    # SIGKILL below lands while the server may already have taken the killed batch.
    counting.push(*[Reply(delay=0.1)] * 200)
    processes = [workers.start() for _ in range(3)]
    wait_until(lambda: counting.stats()["delivered"] >= 40_000, 300, "40,000 deliveries")
    wait_until(lambda: len(workers.runs()) == 3, 60, "all three workers to be sending")
    victim = processes[0]
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    # A live worker settles the dead one's claims within the lease (2 s), while still sending.

    def settled() -> bool:
        return next(r for r in workers.runs() if r[1] == victim.pid)[2]

    wait_until(settled, 10, "a live worker to settle the killed one")
    assert any(p.poll() is None for p in processes[1:]), "settled only after the others ended"
    assert [finish(p) for p in processes[1:]] == [0, 0], [workers.output(n) for n in (1, 2)]

    states = workers.states()
    counts = collections.Counter(address for _issue, address in counting.delivered)
    assert set(states) == set(readers)
    assert set(states.values()) <= {"sent", "unknown"}
    for address in readers:
        if states[address] == "sent":
            assert counts[address] == 1, address
        else:  # unknown: the server took it once or never, and the ledger says so
            assert counts[address] <= 1, address
    unknown = [a for a in readers if states[a] == "unknown"]
    assert len(unknown) <= 1000  # at most the one batch the killed worker had in flight
    assert set(counts) <= set(readers)
    survivors = [r for r in workers.runs() if r[1] != victim.pid]
    assert all(finished and sent > 0 for _id, _pid, finished, sent in survivors), survivors
    assert sum(r[3] for r in workers.runs()) == len(readers) - len(unknown)


def test_two_workers_together_keep_to_the_shared_rate_ceiling(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    rate, batch, readers_count = 100, 10, 1000
    workers = workers_on(
        project, database_url, counting, send_rate_limit=str(rate), send_batch_size=str(batch)
    )
    engine = workers.engine()
    readers = populate(engine, readers_count)
    engine.dispose()
    processes = [workers.start() for _ in range(2)]
    assert [finish(p, 120) for p in processes] == [0, 0], [workers.output(n) for n in (0, 1)]
    delivered = collections.Counter(address for _issue, address in counting.delivered)
    assert delivered == collections.Counter(readers)
    assert all(sent > 0 for *_rest, sent in workers.runs())  # both really sent
    # Counts per one-second window as the server saw them; the tolerance is one batch for
    # the window's edge and one for the network's jitter between two workers' requests.
    assert counting.most_in_window(1.0) <= rate + 2 * batch
    assert counting.most_in_window(5.0) <= 5 * rate + 2 * batch


def set_host(workers: Workers, host: str) -> None:
    """Make the running worker's run look as if it ran on another machine: only its
    heartbeat can then tell the others that it is alive."""
    engine = workers.engine()
    with db.writing(engine) as conn:
        conn.execute(update(schema.send_runs).values(host=host))
    engine.dispose()


def recover(workers: Workers, lease: float) -> int:
    engine = workers.engine()
    with db.writing(engine) as conn:
        settled = ledger.recover(conn, ISSUE, dt.timedelta(seconds=lease))
    engine.dispose()
    return settled


def test_a_worker_blocked_in_a_request_longer_than_the_lease_keeps_its_claims(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    workers = workers_on(project, database_url, counting, send_lease="1", send_batch_size="10")
    engine = workers.engine()
    readers = populate(engine, 20)
    engine.dispose()
    counting.push(Reply(delay=4))  # the first request is answered after four leases
    process = workers.start()
    wait_until(counting.arrived.is_set, 30, "the first request")
    set_host(workers, "another-machine")
    time.sleep(2.5)  # well past the lease, with the request still unanswered
    assert recover(workers, 1.0) == 0  # its heartbeat kept it alive
    assert finish(process, 60) == 0, workers.output(0)
    assert set(workers.states().values()) == {"sent"}
    assert collections.Counter(a for _i, a in counting.delivered) == collections.Counter(readers)


def test_a_worker_settled_as_dead_records_nothing_over_it_and_stops(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    workers = workers_on(project, database_url, counting, send_lease="1", send_batch_size="10")
    engine = workers.engine()
    populate(engine, 30)
    engine.dispose()
    counting.push(Reply(delay=3))  # taken at once, answered (202) three seconds later
    process = workers.start()
    wait_until(counting.arrived.is_set, 30, "the first request")
    set_host(workers, "another-machine")
    process.send_signal(signal.SIGSTOP)  # silent: no heartbeat, as a frozen VM would be
    try:
        time.sleep(1.5)
        assert recover(workers, 1.0) == 10
    finally:
        process.send_signal(signal.SIGCONT)
    assert finish(process, 60) == 1
    output = workers.output(0)
    assert "took it for dead" in output, output
    assert "Traceback" not in output
    # The 202 that came back later did not turn the reported `unknown` into `sent`, and the
    # worker claimed nobody after it learnt it had been settled.
    assert collections.Counter(workers.states().values()) == {"unknown": 10}
    assert len(counting.delivered) == 10
    # ...but the operator is told, and the rows keep the message id: not resent blindly.
    assert "SendGrid accepted 10 of the recipients marked `unknown`" in output, output
    rows = schema.send_ledger
    engine = workers.engine()
    with db.reading(engine) as conn:
        kept = conn.execute(select(rows.c.message_id, rows.c.error)).all()
    engine.dispose()
    assert all(message_id and "accepted" in error for message_id, error in kept), kept


def status_of(workers: Workers) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "status", ISSUE],
        cwd=workers.root,
        env=workers.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return (done.stdout + done.stderr).decode()


def test_a_frozen_worker_on_this_host_is_settled_once_silent_past_the_lease(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    workers = workers_on(project, database_url, counting, send_lease="1", send_batch_size="10")
    engine = workers.engine()
    populate(engine, 20)
    engine.dispose()
    counting.push(Reply(delay=3))
    process = workers.start()
    wait_until(counting.arrived.is_set, 30, "the first request")
    process.send_signal(signal.SIGSTOP)  # alive on this host, but silent
    try:
        time.sleep(1.5)
        said = status_of(workers)
        assert "dead (silent past the 1 s lease)" in said, said
        assert recover(workers, 1.0) == 10  # its process exists: only the lease can tell
    finally:
        process.send_signal(signal.SIGCONT)
    assert finish(process, 60) == 1
    assert "took it for dead" in workers.output(0)
    assert "workers: none running" in status_of(workers)


def gone_pid() -> int:
    """The id of a process that has ended and been reaped: absent on this host."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    return ended.pid


def test_a_live_worker_whose_pid_is_not_here_keeps_its_claims_while_it_beats(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    # Another container sharing this host name: its pid means nothing here, its heartbeat
    # does. The running worker's run is given a pid that does not exist on this host.
    workers = workers_on(project, database_url, counting, send_lease="4", send_batch_size="10")
    engine = workers.engine()
    readers = populate(engine, 20)
    engine.dispose()
    counting.push(Reply(delay=4))
    process = workers.start()
    wait_until(counting.arrived.is_set, 30, "the first request")
    engine = workers.engine()
    with db.writing(engine) as conn:
        conn.execute(update(schema.send_runs).values(pid=gone_pid()))
    engine.dispose()
    assert recover(workers, 4.0) == 0  # fresh heartbeat: not taken for dead
    assert "dead" not in status_of(workers)
    assert finish(process, 60) == 0, workers.output(0)
    assert set(workers.states().values()) == {"sent"}
    assert collections.Counter(a for _i, a in counting.delivered) == collections.Counter(readers)


def test_a_worker_whose_clock_is_behind_stamps_its_run_on_the_database_clock(
    project: Path, database_url: str, counting: CountingSendGrid
) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite is one machine's file: its clock is the worker's")
    faketime = shutil.which("faketime")
    if faketime is None:
        pytest.fail("the faketime Debian package is needed (.ci/test installs it)")
    workers = workers_on(project, database_url, counting, send_batch_size="10")
    engine = workers.engine()
    populate(engine, 20)
    engine.dispose()
    counting.push(Reply(delay=3))  # the run is in its first request, within its first beat
    log = workers.root / "skewed.log"
    workers.logs.append(log)
    send = [sys.executable, "-m", "newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
    with log.open("wb") as output:  # a real process on a host two minutes slow
        process = subprocess.Popen(
            [faketime, "-f", "-120s", *send],
            cwd=workers.root,
            env={**workers.env, "FAKETIME_DONT_FAKE_MONOTONIC": "1"},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_until(counting.arrived.is_set, 30, "the first request")
    set_host(workers, "another-machine")
    engine = workers.engine()
    # started_at is only ever stamped by start_run (a claim beats, which restamps
    # heartbeat_at): on the host's clock it would be two minutes in the past, and the
    # run would look silent that long until its first claim.
    with db.reading(engine) as conn:
        lag = conn.execute(
            text("SELECT extract(epoch FROM clock_timestamp() - started_at) FROM send_runs")
        ).scalar_one()
    engine.dispose()
    assert 0 <= lag < 30, lag
    assert recover(workers, 60.0) == 0  # not taken for two minutes silent
    assert finish(process, 60) == 0, workers.output(0)
    assert set(workers.states().values()) == {"sent"}
