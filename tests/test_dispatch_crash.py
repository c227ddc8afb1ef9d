"""Kill a real `newsletter send` with SIGKILL at chosen points; the rerun keeps the promise.

Faults come from outside the sender, as in life: the fake SendGrid takes a body and never
answers, or this test holds the SQLite write lock so the sender waits before its claim.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select

from newsletter import db, schema
from newsletter.config import load_settings
from tests.conftest import CANARY_KEY, populate
from tests.fakes.sendgrid_server import FakeSendGrid, Reply, errors_body

READERS = 40
BATCH = 10
ISSUE = "2025-12-10"


@dataclass
class Sender:
    """A project with subscribers, and the environment of a `newsletter send` against the fake."""

    root: Path
    database: Path
    env: dict[str, str]
    readers: list[str]

    def start(self, *extra: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
        return subprocess.Popen(
            [*command, *extra],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def run(self, *extra: str) -> tuple[int, str]:
        process = self.start(*extra)
        out, err = process.communicate(timeout=60)
        return process.returncode, (out + err).decode()

    def states(self) -> dict[str, str]:
        engine = db.engine_for(f"sqlite:///{self.database}")
        rows = schema.send_ledger
        with db.reading(engine) as conn:
            found = dict(conn.execute(select(rows.c.email, rows.c.state)).all())
        engine.dispose()
        return found


@pytest.fixture
def sender(project: Path, fake_sendgrid: FakeSendGrid) -> Sender:
    database = project / "newsletter.db"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{database}",
        "NEWSLETTER_SECRET_KEY": "n9mx2w-U5HmfQsmFKgCG0_X_mOrTJ3fUwl8NMThfXPY",
        "NEWSLETTER_SEND_BATCH_SIZE": str(BATCH),
        "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
        "NEWSLETTER_SENDGRID_TIMEOUT": "5",
        # The shortest lease: a run this host sees gone is settled once it missed two beats
        # (half the lease), so the rerun right after a kill finds its claims settled.
        "NEWSLETTER_SEND_LEASE": "1",
        "SENDGRID_API_KEY": CANARY_KEY,
    }
    engine = db.connect(load_settings(project, env=env))
    readers = populate(engine, READERS)
    engine.dispose()
    return Sender(project, database, env, readers)


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the sender never reached the point where the test kills it")
        time.sleep(0.01)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(10)  # reaped: the rerun must see a dead process, not a zombie


def received(fake: FakeSendGrid) -> collections.Counter[str]:
    return collections.Counter(address for _issue, address in fake.delivered)


@contextlib.contextmanager
def write_lock(database: Path) -> Iterator[None]:
    """Hold SQLite's write lock, as another writer would: the sender waits at its next write."""
    conn = sqlite3.connect(database, isolation_level=None, timeout=10)
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def assert_promise_kept(sender: Sender, fake: FakeSendGrid, output: str) -> None:
    """Nobody twice; everyone not `unknown` exactly once; `unknown` is reported, never resent."""
    counts = received(fake)
    states = sender.states()
    assert max(counts.values()) == 1
    assert {e for e, s in states.items() if s != "unknown"} | set(counts) == set(sender.readers)
    assert all(states[e] == "sent" for e in sender.readers if states[e] != "unknown")
    unknown = sum(1 for s in states.values() if s == "unknown")
    assert f"unknown {unknown}" in output


def test_killed_while_waiting_for_the_database_before_any_claim(
    sender: Sender, fake_sendgrid: FakeSendGrid
) -> None:
    with write_lock(sender.database):
        process = sender.start()
        time.sleep(2)  # started, rendered, and by now waiting for the lock this test holds
        kill(process)
    assert fake_sendgrid.mail_sends() == []
    assert "claimed" not in sender.states().values()
    code, output = sender.run()
    assert code == 0, output
    assert received(fake_sendgrid) == collections.Counter(sender.readers)
    assert_promise_kept(sender, fake_sendgrid, output)


def test_killed_after_sendgrid_accepted_before_the_ledger_update(
    sender: Sender, fake_sendgrid: FakeSendGrid
) -> None:
    # Batch 2 is taken (counted as delivered) and never answered: the sender waits on it.
    fake_sendgrid.push(Reply(), Reply(status=0, hang=30))
    process = sender.start()
    wait_until(lambda: len(fake_sendgrid.mail_sends()) == 2)
    kill(process)
    # The other twenty were never claimed: they have no ledger row yet.
    assert collections.Counter(sender.states().values()) == {"sent": 10, "claimed": 10}
    code, output = sender.run()
    assert code == 0, output
    second = {p["to"][0]["email"] for p in fake_sendgrid.mail_sends()[1].body["personalizations"]}
    assert {e for e, s in sender.states().items() if s == "unknown"} == second
    assert_promise_kept(sender, fake_sendgrid, output)
    assert received(fake_sendgrid) == collections.Counter(sender.readers)
    code, status = run_status(sender)
    assert "unknown 10" in status
    assert sum(f"unknown  {address}" in status for address in second) == 10


def test_killed_mid_run_while_answers_are_slow(sender: Sender, fake_sendgrid: FakeSendGrid) -> None:
    fake_sendgrid.push(*[Reply(delay=0.2)] * 10)
    process = sender.start()
    wait_until(lambda: len(fake_sendgrid.mail_sends()) == 3)
    kill(process)
    code, output = sender.run()
    assert code == 0, output
    assert_promise_kept(sender, fake_sendgrid, output)


def interruptible(sender: Sender) -> subprocess.Popen[bytes]:
    """`newsletter send` with Ctrl-C at its default (a shell may start the suite with SIGINT
    ignored, which a child would inherit and Python would then keep ignoring)."""
    command = [sys.executable, "-m", "newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
    return subprocess.Popen(
        command,
        cwd=sender.root,
        env=sender.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_ctrl_c_during_a_rate_limit_wait_gives_the_batch_back(
    sender: Sender, fake_sendgrid: FakeSendGrid
) -> None:
    # The first request is rate limited for long: the sender sleeps with its batch claimed.
    reset = str(int(time.time()) + 600)
    fake_sendgrid.push(Reply(429, headers=(("X-RateLimit-Reset", reset),), accept=False))
    process = interruptible(sender)
    wait_until(lambda: len(fake_sendgrid.mail_sends()) == 1)
    time.sleep(1.5)  # the 429 answer is read and the sender is in its wait, not its request
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err.decode()
    assert fake_sendgrid.delivered == []
    # Nothing went out during the wait: the batch is pending again, not unknown.
    assert collections.Counter(sender.states().values()) == {"pending": BATCH}
    said = err.decode()
    assert "sent 0 · failed 0 in this run" in said
    assert "0 in flight marked unknown" in said
    assert f"{BATCH} given back to pending" in said
    assert f"to continue: newsletter send issues/{ISSUE}.yaml --yes" in said
    code, output = sender.run()
    assert code == 0, output
    assert received(fake_sendgrid) == collections.Counter(sender.readers)
    assert_promise_kept(sender, fake_sendgrid, output)


def test_ctrl_c_with_a_request_in_flight_says_what_it_left_and_how_to_go_on(
    sender: Sender, fake_sendgrid: FakeSendGrid
) -> None:
    # Two batches answered, the third taken by the server and not answered yet.
    fake_sendgrid.push(Reply(), Reply(), Reply(delay=30))
    process = interruptible(sender)
    wait_until(lambda: len(fake_sendgrid.mail_sends()) == 3)
    time.sleep(0.5)  # the body is written; the sender waits for the answer
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    said = err.decode()
    assert process.returncode == 130, said
    assert "Traceback" not in said
    assert collections.Counter(sender.states().values()) == {"sent": 20, "unknown": BATCH}
    assert "sent 20 · failed 0 in this run" in said
    assert f"{BATCH} in flight marked unknown" in said
    assert "0 given back to pending" in said
    again = said.split("to continue: ")[1].split()
    assert again == ["newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
    # The printed command (run as the module) sends exactly the rest and leaves unknown alone.
    code, output = sender.run()
    assert code == 0, output
    assert_promise_kept(sender, fake_sendgrid, output)
    assert collections.Counter(sender.states().values()) == {"sent": 30, "unknown": BATCH}


def run_status(sender: Sender) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "status", ISSUE, "--details"],
        cwd=sender.root,
        env=sender.env,
        capture_output=True,
        timeout=60,
        check=False,
    )
    return done.returncode, (done.stdout + done.stderr).decode()


def test_two_send_processes_on_one_issue_share_it_without_overlap(
    project: Path, database_url: str, fake_sendgrid: FakeSendGrid
) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SECRET_KEY": "n9mx2w-U5HmfQsmFKgCG0_X_mOrTJ3fUwl8NMThfXPY",
        "NEWSLETTER_SEND_BATCH_SIZE": "5",
        "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
        "SENDGRID_API_KEY": CANARY_KEY,
    }
    engine = db.connect(load_settings(project, env=env))
    readers = populate(engine, READERS)
    engine.dispose()
    fake_sendgrid.push(*[Reply(delay=0.3)] * (READERS // 5))  # slow enough to overlap
    command = [sys.executable, "-m", "newsletter", "send", f"issues/{ISSUE}.yaml", "--yes"]
    both = [
        subprocess.Popen(
            command, cwd=project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=90)[0].decode() for p in both]
    assert [p.returncode for p in both] == [0, 0], outputs
    assert received(fake_sendgrid) == collections.Counter(readers)
    runs = [int(out.split("sent ")[-1].split(" ")[0]) for out in outputs]
    assert sum(runs) == READERS, runs
    assert min(runs) > 0, runs  # they really ran side by side


def test_ctrl_c_after_a_413_split_gives_back_the_waiting_halves_and_counts_what_was_sent(
    sender: Sender, fake_sendgrid: FakeSendGrid
) -> None:
    # Ten too large, then its first five too large: halves of 2 and 3 and the other 5 wait.
    # The 2 are accepted and recorded; the 3 are taken by the server and not answered yet.
    too_large = Reply(status=413, body=errors_body("too large"), accept=False)
    fake_sendgrid.push(too_large, too_large, Reply(), Reply(delay=30))
    process = interruptible(sender)
    wait_until(lambda: len(fake_sendgrid.mail_sends()) == 4)
    time.sleep(0.5)  # the body is written; the sender waits for the answer
    process.send_signal(signal.SIGINT)
    _out, err = process.communicate(timeout=30)
    said = err.decode()
    assert process.returncode == 130, said
    # The five that never left are pending again, not unknown; only the three in flight are.
    assert collections.Counter(sender.states().values()) == {"sent": 2, "unknown": 3, "pending": 5}
    assert "sent 2 · failed 0 in this run" in said
    assert "3 in flight marked unknown" in said
    assert "5 given back to pending" in said
    code, output = sender.run()
    assert code == 0, output
    assert_promise_kept(sender, fake_sendgrid, output)
    assert collections.Counter(sender.states().values()) == {"sent": 37, "unknown": 3}
