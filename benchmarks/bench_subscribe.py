"""Does POST /subscribe answer a new address in the same time as a known one?

    python benchmarks/bench_subscribe.py [--rounds 60] [--gap 0.2]

Starts `newsletter serve` on a throwaway SQLite database with a public list and one
confirmed subscriber, then posts the form alternately with a fresh address and with the
known one, `gap` seconds apart (so the confirmation worker has finished between posts,
as it would between an attacker's probes), and prints the median and quartiles of the
wall time each answer took, as a client sees it. Interleaved so that the neighbours'
noise on a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from newsletter import audience, db
from newsletter.config import load_settings


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--gap", type=float, default=0.2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "NEWSLETTER_SECRET_KEY": secrets.token_urlsafe(32),
            "NEWSLETTER_SUBSCRIBE_PER_CLIENT_HOUR": "1000000",
            "NEWSLETTER_SUBSCRIBE_PER_HOUR": "1000000",
        }
        engine = db.connect(load_settings(root, env=env))
        with db.writing(engine) as conn:
            audience.create_list(conn, "weekly", public=True)
            audience.add_subscriber(conn, "known@example.org", "weekly", confirmed=True)
        engine.dispose()
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            print(measure(f"http://127.0.0.1:{port}", args.rounds, args.gap))
        finally:
            server.terminate()
            server.wait(timeout=30)


def measure(url: str, rounds: int, gap: float) -> str:
    with httpx.Client(base_url=url, timeout=10) as client:
        while True:
            try:
                client.get("/subscribe")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        times: dict[str, list[float]] = {"new": [], "known": []}
        for n in range(rounds):
            for kind in times:
                address = f"new{n}@example.org" if kind == "new" else "known@example.org"
                time.sleep(gap)
                start = time.perf_counter()
                answer = client.post("/subscribe", data={"email": address, "list": "weekly"})
                times[kind].append((time.perf_counter() - start) * 1000)
                assert answer.status_code == 200, answer.status_code
    return "\n".join(f"{kind:>5}: {describe(values)}" for kind, values in times.items())


def describe(values: list[float]) -> str:
    q1, median, q3 = statistics.quantiles(values, n=4)
    return f"median {median:.1f} ms (quartiles {q1:.1f}-{q3:.1f} ms, {len(values)} posts)"


if __name__ == "__main__":
    main()
