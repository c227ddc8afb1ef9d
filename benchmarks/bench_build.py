"""Build speed of the sample issue, against its two library stages, measured in one run.

    python benchmarks/bench_build.py [--runs 30] [--process-runs 15]

In-process: the median cost of `build_issue` (load + validate + resolve + render + inline)
against the median of mjml-python plus premailer on the very same input, interleaved so
that machine noise hits both alike, in CPU time of this process (wall time on a shared
2-core machine mostly measures the neighbours). Process: the median wall and CPU time of the whole
`newsletter build` command, with a bare `python -c pass` for scale.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mjml import mjml2html
from premailer import Premailer

from newsletter.build import build_issue
from newsletter.config import load_settings
from newsletter.issues import load_issue
from newsletter.render import render

ROOT = Path(__file__).resolve().parent.parent
ISSUE = ROOT / "issues" / "2025-12-10.yaml"


def premailer_stage(html: str) -> str:
    """premailer as DESIGN.md configures it: the library's own cost, nothing of ours."""
    return str(
        Premailer(
            html,
            allow_network=False,
            strip_important=False,
            disable_validation=True,
            cssutils_logging_level=logging.CRITICAL,
            remove_classes=False,
            disable_link_rewrites=True,
            align_floating_images=False,
        ).transform(pretty_print=False)
    )


def in_process(runs: int) -> dict[str, float]:
    settings = load_settings(ROOT, env={})
    mjml = render(load_issue(ISSUE, settings), settings).mjml
    compiled = str(mjml2html(mjml, disable_comments=True, fonts={}))
    build_issue(ISSUE, settings)  # warm caches for both sides alike
    premailer_stage(compiled)
    build, lib_mjml, lib_premailer = [], [], []
    for _ in range(runs):
        t0 = time.process_time()
        build_issue(ISSUE, settings)
        t1 = time.process_time()
        mjml2html(mjml, disable_comments=True, fonts={})
        t2 = time.process_time()
        premailer_stage(compiled)
        t3 = time.process_time()
        build.append(t1 - t0)
        lib_mjml.append(t2 - t1)
        lib_premailer.append(t3 - t2)
    med = {
        k: statistics.median(v) * 1000
        for k, v in {"build": build, "mjml": lib_mjml, "premailer": lib_premailer}.items()
    }
    med["ratio"] = med["build"] / (med["mjml"] + med["premailer"])
    return med


def child_run(cmd: list[str], cwd: Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall * 1000, cpu * 1000


def process(runs: int) -> dict[str, float]:
    exe = shutil.which("newsletter") or str(Path(sys.executable).parent / "newsletter")
    out = tempfile.mkdtemp(prefix="bench-build-")
    build_cmd = [exe, "build", str(ISSUE), "--out", out]
    bare_cmd = [sys.executable, "-c", "pass"]
    child_run(build_cmd, ROOT)  # first run pays for .pyc files, as no user run does twice
    walls, cpus, bare = [], [], []
    for _ in range(runs):
        wall, cpu = child_run(build_cmd, ROOT)
        walls.append(wall)
        cpus.append(cpu)
        bare.append(child_run(bare_cmd, ROOT)[0])
    shutil.rmtree(out)
    return {
        "wall": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "bare_python": statistics.median(bare),
        "wall_min": min(walls),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=60)
    parser.add_argument("--process-runs", type=int, default=15)
    args = parser.parse_args()
    inproc = in_process(args.runs)
    print(
        f"in-process (median of {args.runs}): build {inproc['build']:.1f} ms; "
        f"mjml-python {inproc['mjml']:.1f} ms + premailer {inproc['premailer']:.1f} ms; "
        f"ratio {inproc['ratio']:.2f}x (target <= 1.3x)"
    )
    proc = process(args.process_runs)
    print(
        f"process (median of {args.process_runs}): `newsletter build` wall {proc['wall']:.0f} ms "
        f"(min {proc['wall_min']:.0f}), CPU {proc['cpu']:.0f} ms (target < 500 ms wall); "
        f"bare `python -c pass` {proc['bare_python']:.0f} ms; load average "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    )


if __name__ == "__main__":
    main()
