"""Checking the sample issue's gates: accessibility (axe-core in Chromium, four views, plus
the email rules) and client support, browser start included. Target: < 2 s.

Reports the median of several runs of each part, measured in one process after one
warm-up (imports, the dataset's parse), and the whole `check_gates` call:
`python benchmarks/bench_gates.py [--runs 7]`. Prints the load average, since the machine
is shared and a loaded one mostly slows Chromium.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import lxml.html

from newsletter.accessibility import check_accessibility
from newsletter.build import check_file, check_gates
from newsletter.clients import check_clients, families
from newsletter.config import load_settings
from newsletter.snapshot import browser

REPO = Path(__file__).resolve().parent.parent


def timed(action: Callable[[], object], runs: int) -> list[float]:
    action()  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        action()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (Playwright's driver, and
    through it Chromium): a figure the machine's load does not inflate, unlike wall time."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    runs = parser.parse_args().runs
    settings = load_settings(REPO, env={})
    checked = check_file(REPO / "issues" / "2025-12-10.yaml", settings)
    chosen = families(settings.client_families)

    def clients() -> None:
        check_clients(lxml.html.document_fromstring(checked.email.html), chosen)

    def launch() -> None:
        with browser(settings):
            pass

    def axe_warm() -> None:
        with browser(settings) as chromium:
            start = time.perf_counter()
            check_accessibility(checked.issue, checked.email, settings, chromium)
            warm.append((time.perf_counter() - start) * 1000)

    cpu: list[float] = []

    def whole() -> None:
        before = _cpu()
        check_gates(checked, settings)
        cpu.append((_cpu() - before) * 1000)

    warm: list[float] = []
    parts = {
        "client support (lxml + tinycss2)": timed(clients, runs),
        "Chromium start and stop": timed(launch, runs),
        "whole check_gates (browser start included)": timed(whole, runs),
    }
    parts["CPU time of one whole check_gates, Chromium's included"] = cpu[1:]
    timed(axe_warm, runs)
    parts["accessibility in a started browser"] = warm[1:]
    print(f"load average {os.getloadavg()[0]:.1f} · {runs} runs, median (min–max) in ms")
    for label, times in parts.items():
        print(f"  {label}: {statistics.median(times):.0f} ({min(times):.0f}–{max(times):.0f})")


if __name__ == "__main__":
    main()
