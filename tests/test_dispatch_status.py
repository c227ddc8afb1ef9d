"""`newsletter status`: progress, the workers running a send, and every recipient that did
not arrive, unknown first. Run as the real command against a ledger written by the ledger's
own functions."""

from __future__ import annotations

import datetime as dt
import re
from contextlib import chdir
from pathlib import Path
from typing import NamedTuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from sqlalchemy.engine import Engine

from newsletter import audience, db, ledger, schema
from newsletter.config import Settings, load_settings
from newsletter.errors import ConfigError
from newsletter.models import SendResult
from tests.conftest import populate, run_newsletter

ISSUE = "2025-12-10"
# What must never reach the terminal raw: C0 but LF, DEL, C1, bidi and line separators.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


class Person(NamedTuple):
    public_id: str
    email: str
    first_name: str


def people(count: int, prefix: str) -> list[Person]:
    return [Person(f"p{prefix}{i}", f"{prefix}{i:05d}@example.org", "") for i in range(count)]


def claimed_run(engine: Engine, count: int, prefix: str = "r") -> tuple[int, list[str]]:
    """A run that claimed `count` recipients; returns its id and the claimed keys."""
    with db.writing(engine) as conn:
        ledger.open_send(conn, ISSUE, "weekly", "c0ffee", allow_changed=False)
        run_id = ledger.start_run(conn, ISSUE)
        claimed, _skipped = ledger.claim_new(conn, ISSUE, run_id, people(count, prefix), "weekly")
    return run_id, [c.key for c in claimed]


def settle(engine: Engine, run_id: int, *results: SendResult) -> None:
    with db.writing(engine) as conn:
        ledger.record(conn, run_id, results)


def status(settings: Settings, *extra: str) -> str:
    env = {
        "NEWSLETTER_DATABASE_URL": settings.database,
        "PATH": "/usr/bin:/bin",
    }
    done = run_newsletter(settings.root, "status", ISSUE, *extra, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_details_lists_every_unknown_then_every_failed_and_says_how_many(
    engine: Engine, db_settings: Settings
) -> None:
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    run_id, keys = claimed_run(engine, 1520)
    # Failed addresses sort before the unknown ones, so an order by address alone fails.
    failed = SendResult(tuple(keys[:20]), "failed", error="from.email: Invalid from address.")
    unknown = SendResult(tuple(keys[20:]), "unknown", error="no answer")
    settle(engine, run_id, failed, unknown)
    lines = status(db_settings, "--details").splitlines()
    listed = [line.split()[:2] for line in lines if line.split()[0] in ("unknown", "failed")]
    assert len(listed) == 1520  # past the 1,000 rows it used to stop at
    assert [state for state, _email in listed] == ["unknown"] * 1500 + ["failed"] * 20
    emails = [email for _state, email in listed]
    assert len(set(emails)) == 1520
    assert emails[:1500] == sorted(emails[:1500])
    assert lines[-1].strip() == "listed 1520: 1500 unknown first, then 20 failed"


def test_status_shows_workers_with_their_progress_and_a_silent_one(
    engine: Engine, db_settings: Settings
) -> None:
    populate(engine, 5)  # five on the list the ledger has no row for yet
    run_id, keys = claimed_run(engine, 30)
    settle(engine, run_id, SendResult(tuple(keys[:10]), "sent", message_id="m"))
    quiet = db.now() - dt.timedelta(seconds=90)
    with db.writing(engine) as conn:
        conn.execute(
            update(schema.send_runs)
            .where(schema.send_runs.c.id == run_id)
            .values(host="worker-b.example", pid=4242, heartbeat_at=quiet)
        )
    said = status(db_settings)
    assert "in flight 20" in said
    assert "progress: 10 of 35 settled (28.6%); 5 on the list not claimed yet" in said
    assert "workers: 1" in said
    worker = next(line for line in said.splitlines() if "worker-b.example" in line)
    assert "pid 4242" in worker
    assert "sent 10" in worker
    assert "silent past the 60 s lease" in worker


def test_status_after_every_worker_finished_shows_none(
    engine: Engine, db_settings: Settings
) -> None:
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    run_id, keys = claimed_run(engine, 3)
    settle(engine, run_id, SendResult(tuple(keys), "sent", message_id="m"))
    with db.writing(engine) as conn:
        ledger.finish_run(conn, run_id)
    said = status(db_settings)
    assert "workers: none running" in said
    assert "progress: 3 of 3 settled (100.0%)" in said


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SEND_LEASE", "0"),
        ("SEND_LEASE", "-5"),
        ("SEND_LEASE", "nan"),
        ("SEND_LEASE", "1e-6"),  # would beat in a tight loop
        ("SEND_LEASE", "0.5"),
        ("SEND_RATE_LIMIT", "-1"),
    ],
)
def test_a_lease_or_rate_out_of_range_is_refused_naming_the_variable(
    tmp_path: Path, name: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=f"NEWSLETTER_{name}") as refused:
        load_settings(tmp_path, env={f"NEWSLETTER_{name}": value})
    assert name.lower() in str(refused.value)


def test_lease_and_rate_defaults_and_overrides(tmp_path: Path) -> None:
    assert (
        load_settings(tmp_path, env={}).send_lease,
        load_settings(tmp_path, env={}).send_rate_limit,
    ) == (60.0, 0.0)
    chosen = load_settings(
        tmp_path, env={"NEWSLETTER_SEND_LEASE": "15", "NEWSLETTER_SEND_RATE_LIMIT": "250"}
    )
    assert (chosen.send_lease, chosen.send_rate_limit) == (15.0, 250.0)


# Controls, bidi overrides, line separators, Rich markup and emoji codes: what a host name
# or an address in the ledger could carry to the editor's terminal.
DANGEROUS = st.text(
    st.sampled_from(list("\x1b\x9b\r\n\t\x00\x07\x7f\u202e\u2028\u2066[]/:;ab.-@")), max_size=20
)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_status_shows_hostile_host_names_and_addresses_as_data(
    engine: Engine, db_settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    from newsletter import cli

    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    run_id, keys = claimed_run(engine, 1)
    settle(engine, run_id, SendResult(tuple(keys), "unknown", error="no answer"))
    with db.writing(engine) as conn:  # that run ended; another, running, whose host we vary
        ledger.finish_run(conn, run_id)
        live = ledger.start_run(conn, ISSUE)

    @given(host=DANGEROUS, address=DANGEROUS, error=DANGEROUS)
    @settings(
        max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    def shown(host: str, address: str, error: str) -> None:
        with db.writing(engine) as conn:
            runs, rows = schema.send_runs, schema.send_ledger
            conn.execute(update(runs).where(runs.c.id == live).values(host=host))
            conn.execute(update(rows).values(email=f"x{address}", error=error))
        capsys.readouterr()
        with chdir(db_settings.root):
            cli.status(ISSUE, details=True)
        out = capsys.readouterr().out
        assert not UNSAFE.search(out), repr(out)
        lines = out.splitlines()
        assert len(lines) == 8  # one line per worker and per row, whatever they hold
        assert lines[4].startswith("    ")  # the worker, on its own line
        assert lines[5].startswith("  proof: 1 of the unknown")
        assert lines[6].startswith("  unknown  x")

    shown()
