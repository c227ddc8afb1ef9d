"""What linking bare URLs costs: the sample's article bodies through markdown-it, measured
in one run, interleaved, in CPU time of this process.

    python benchmarks/bench_linkify.py [--runs 15] [--loops 20]

Three parsers on the same six bodies: markdown-it without linkify (before), ours
(`newsletter.markdown._parser`: linkify with a scheme-only pretest), and ours with
linkify-it's stock pretest, which also searches for fuzzy hosts and emails that are off.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from markdown_it import MarkdownIt

from newsletter.markdown import SchemeLinkify, _parser

ROOT = Path(__file__).resolve().parent.parent


class StockPretest(SchemeLinkify):
    def pretest(self, text: str) -> bool:
        return bool(super(SchemeLinkify, self).pretest(text))


def parsers() -> dict[str, MarkdownIt]:
    stock = type(_parser())("commonmark", {"html": False, "linkify": True, "typographer": False})
    stock.enable("linkify")
    stock.linkify = StockPretest()
    plain = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    return {"no linkify": plain, "ours": _parser(), "stock pretest": stock}


def timed(render: Callable[[str], str], bodies: list[str], loops: int) -> float:
    start = time.process_time()
    for _ in range(loops):
        for body in bodies:
            render(body)
    return (time.process_time() - start) / loops * 1000


def main() -> None:
    args = argparse.ArgumentParser()
    args.add_argument("--runs", type=int, default=15)
    args.add_argument("--loops", type=int, default=20)
    options = args.parse_args()
    articles = sorted((ROOT / "content" / "articles").glob("*.md"))
    bodies = [path.read_text().split("---", 2)[2] for path in articles]
    samples: dict[str, list[float]] = {name: [] for name in parsers()}
    for _ in range(options.runs):
        for name, parser in parsers().items():
            samples[name].append(timed(parser.render, bodies, options.loops))
    base = statistics.median(samples["no linkify"])
    for name, times in samples.items():
        median = statistics.median(times)
        print(f"{name:>14}: {median:6.2f} ms per {len(bodies)} bodies ({median / base:.2f}x)")


if __name__ == "__main__":
    main()
