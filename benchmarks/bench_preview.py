"""From saving a file to the refreshed preview: time to the reload event, then to the new page.

Starts `newsletter preview` on a copy of the sample project, listens to its event stream,
saves a template, the issue, an article and a rate snapshot in turn, and reports the
median over several saves of each. Run: `python benchmarks/bench_preview.py [--runs 9]`.
"""

from __future__ import annotations

import argparse
import json
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
ISSUE = "2025-12-10"
FILES = {
    "template": "templates/digest.mjml.j2",
    "issue": f"issues/{ISSUE}.yaml",
    "article": "content/articles/kyrgyzstan-dried-apricot-exports-china.md",
    "rates": "content/rates/2025-12-10.yaml",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listen(url: str, events: queue.Queue[tuple[float, dict[str, Any]]]) -> None:
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=None)) as http,
        http.stream("GET", f"{url}/events") as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.put((time.perf_counter(), json.loads(line[len("data: ") :])))


def wait_until_up(url: str) -> None:
    for _ in range(200):
        try:
            httpx.get(url + "/", timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit("the preview server did not start")


def one_save(
    url: str, path: Path, events: queue.Queue[tuple[float, dict[str, Any]]], n: int
) -> tuple[float, float]:
    """Append a harmless line (a comment) and time the event and the refreshed page."""
    text = path.read_text()
    marker = "{# bench %d #}" if path.suffix == ".j2" else "\n# bench %d\n"
    start = time.perf_counter()
    path.write_text(text.rstrip("\n") + (marker % n) + "\n")
    seen, _ = events.get(timeout=10)
    page = httpx.get(f"{url}/issues/{ISSUE}", timeout=10)
    frame = httpx.get(f"{url}/issues/{ISSUE}/email.html", timeout=10)
    done = time.perf_counter()
    assert page.status_code == 200, page.text[:500]
    assert frame.status_code == 200
    time.sleep(0.2)  # let the burst settle so saves do not merge
    while not events.empty():
        events.get()
    return (seen - start) * 1000, (done - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("content", "templates", "issues"):
            shutil.copytree(REPO / name, root / name)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [str(Path(sys.executable).parent / "newsletter"), "preview", "--port", str(port)]
        server = subprocess.Popen(command, cwd=root, stdout=subprocess.DEVNULL)
        try:
            wait_until_up(url)
            httpx.get(f"{url}/issues/{ISSUE}", timeout=30)  # warm: the first render compiles
            events: queue.Queue[tuple[float, dict[str, Any]]] = queue.Queue()
            threading.Thread(target=listen, args=(url, events), daemon=True).start()
            time.sleep(1.0)  # the watcher starts with the server; let it settle
            print(f"{'saved file':<10} {'event ms':>9} {'page ms':>9}   (median of {args.runs})")
            for label, relative in FILES.items():
                times = [one_save(url, root / relative, events, n) for n in range(args.runs)]
                event = statistics.median(t[0] for t in times)
                page = statistics.median(t[1] for t in times)
                print(f"{label:<10} {event:>9.0f} {page:>9.0f}")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
