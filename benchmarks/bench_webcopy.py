"""Web copies served per second by a real `newsletter serve`, and what they cost an unsubscribe.

    python benchmarks/bench_webcopy.py [--seconds 10]

Sends the sample issue to one subscriber (outbox mailer, SQLite in a temporary folder),
starts `newsletter serve` in a child process, then: one client fetching
`/issues/2025-12-10/` back to back for `--seconds` (copies per second, and the server's
CPU time per copy, the figure the machine's other load disturbs least), and the median
time of `GET /u/<token>` (the unsubscribe page) alone and while two clients fetch web
copies as fast as they can.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from newsletter import audience, db, dispatch, tokens
from newsletter.build import build_issue
from newsletter.config import load_settings
from newsletter.mailers.outbox import OutboxMailer
from newsletter.models import AudienceSpec

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2025-12-10"
KEY = "bench-key-0123456789abcdef0123456789abcdef"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def prepare(root: Path) -> tuple[dict[str, str], str]:
    """A copy of the sample project with the issue sent; the env to serve it and a token path."""
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    env = {
        "NEWSLETTER_DATABASE_URL": f"sqlite:///{root / 'newsletter.db'}",
        "NEWSLETTER_SECRET_KEY": KEY,
        "NEWSLETTER_BASE_URL": "https://news.test",
    }
    settings = load_settings(root, env=env)
    engine = db.connect(settings)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        public_id = audience.add_subscriber(
            conn, "dana@example.org", "weekly", name="Dana", confirmed=True
        )
    email = build_issue(settings.path("issues_dir") / f"{ISSUE}.yaml", settings).email
    dispatch.send_issue(
        engine,
        email,
        AudienceSpec("weekly"),
        OutboxMailer(settings.path("outbox_dir"), settings),
        lambda pid: tokens.unsubscribe_url(settings, pid, "weekly"),
        dispatch.SendOptions(),
    )
    engine.dispose()
    token_path = urlsplit(tokens.unsubscribe_url(settings, public_id, "weekly")).path
    return env, token_path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux: /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def copies_per_second(base: str, seconds: float, server: int) -> tuple[float, float]:
    """Copies per second for one client, and the server's CPU milliseconds per copy."""
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get(f"/issues/{ISSUE}/").status_code == 200
        done, start, cpu = 0, time.perf_counter(), cpu_seconds(server)
        while time.perf_counter() - start < seconds:
            http.get(f"/issues/{ISSUE}/").raise_for_status()
            done += 1
        rate = done / (time.perf_counter() - start)
        return rate, (cpu_seconds(server) - cpu) * 1000 / done


def unsubscribe_page_ms(base: str, path: str, runs: int = 40) -> float:
    with httpx.Client(base_url=base, timeout=30) as http:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            http.get(path).raise_for_status()
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def under_load(base: str, path: str) -> float:
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                http.get(f"/issues/{ISSUE}/")

    threads = [threading.Thread(target=hammer) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        return unsubscribe_page_ms(base, path)
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        env, token_path = prepare(root)
        port = free_port()
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
        child = subprocess.Popen(
            [sys.executable, "-m", "newsletter", "serve", "--port", str(port)],
            cwd=root,
            env={**child_env, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    httpx.get(f"{base}/unsubscribe", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.1)
            rate, cpu_ms = copies_per_second(base, args.seconds, child.pid)
            idle = unsubscribe_page_ms(base, token_path)
            loaded = under_load(base, token_path)
        finally:
            child.terminate()
            child.wait(timeout=10)
    print(f"web copies, one client:                 {rate:8.1f} per second")
    print(f"server CPU per web copy:                 {cpu_ms:8.2f} ms")
    print(f"unsubscribe page, idle server (median):  {idle:8.2f} ms")
    print(f"unsubscribe page, 2 clients on copies:   {loaded:8.2f} ms")


if __name__ == "__main__":
    main()
