"""Benchmark: import a generated 1,000,000-row subscriber CSV; wall time and peak RSS.

Usage: python benchmarks/bench_import.py [--rows N] [--runs 3] [--postgres URL]

Each run imports into a fresh database in a child process (so the child's peak RSS is
the import's alone, read with getrusage(RUSAGE_CHILDREN)); the median of the runs is
reported.
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

CHILD = """
import sys
from pathlib import Path
from newsletter import audience, db
from newsletter.audience_csv import import_csv
from newsletter.config import load_settings

settings = load_settings(root=Path(sys.argv[1]), env={"NEWSLETTER_DATABASE_URL": sys.argv[2]})
engine = db.connect(settings)
with db.writing(engine) as conn:
    audience.create_list(conn, "weekly")
report = import_csv(engine, Path(sys.argv[3]), "weekly", confirmed=True)
assert report.added == int(sys.argv[4]), report
"""


def generate(path: Path, rows: int) -> None:
    locales = ("en", "ru", "ky", "kk", "uz")
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name", "locale", "city"])
        for i in range(rows):
            writer.writerow(
                [f"Reader.{i}@Mail{i % 97}.example.org", f"Reader {i}", locales[i % 5], "Bishkek"]
            )


def one_run(folder: Path, url: str, source: Path, rows: int) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), url, str(source), str(rows)], check=True
    )
    elapsed = time.perf_counter() - started
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (KiB on Linux).
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak < before:
        raise RuntimeError("peak RSS went down; cannot attribute it to this run")
    return elapsed, peak / 1024


def postgres_schema(base: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with create_engine(base).begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False), schema


def drop_schema(base: str, schema: str) -> None:
    with create_engine(base).begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--postgres", default="", help="PostgreSQL URL; default: SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "subscribers.csv"
        generate(source, args.rows)
        times, peaks = [], []
        for run in range(args.runs):
            folder = Path(tmp) / f"run{run}"
            schema = ""
            if args.postgres:
                url, schema = postgres_schema(args.postgres)
            else:
                url = f"sqlite:///{folder / 'newsletter.db'}"
            try:
                elapsed, peak = one_run(folder, url, source, args.rows)
            finally:
                if schema:
                    drop_schema(args.postgres, schema)
            times.append(elapsed)
            peaks.append(peak)
            print(f"run {run + 1}: {elapsed:.1f} s, peak RSS so far {peak:.0f} MB", flush=True)
    backend = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"{backend}, {args.rows:,} rows: median {statistics.median(times):.1f} s, "
        f"peak RSS {max(peaks):.0f} MB"
    )


if __name__ == "__main__":
    main()
