"""Benchmark: what the whole-request deadline costs per Mail Send request.

Usage: python benchmarks/bench_wire.py [--batches 50] [--runs 5]

The fake SendGrid (counting only) in its own process; in this one, the same prebuilt
1,000-recipient bodies posted through the `sendgrid` package's plain client (urllib, a
timeout per socket operation: the transport before issue 11) and through
`newsletter.mailers.wire.DeadlineClient` (the stage-recording, deadline-bound transport
the mailer uses), alternately (each going first in every other run), `--runs` times
each. Prints the median of each and their ratio, both measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import sendgrid

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from newsletter.config import load_settings  # noqa: E402
from newsletter.mailers.sendgrid import build_payload  # noqa: E402
from newsletter.mailers.wire import DeadlineClient  # noqa: E402
from newsletter.models import Recipient, RenderedEmail, SendBatch  # noqa: E402

KEY = "SG.benchmark-key-not-a-secret"
EMAIL = RenderedEmail(
    issue_name="2025-12-10",
    subject="Central Asia Weekly",
    preheader="This week",
    from_name="Central Asia Weekly",
    from_email="digest@news.example.org",
    html="<p>Hello -first_name_html-</p>" + "<p>" + "x" * 60_000 + "</p>",
    text="Hello -first_name-\n" + "x" * 20_000,
    mjml="<mjml></mjml>",
    content_hash="c0ffee",
)


def bodies(count: int) -> list[dict[str, Any]]:
    settings = load_settings(REPO, env={})
    link = "https://news.example.org/u/" + "x" * 90
    return [
        build_payload(
            EMAIL,
            SendBatch(
                "2025-12-10",
                "weekly",
                tuple(Recipient(f"r{b}.{i}@example.org", "Reader", link) for i in range(1000)),
                tuple(str(i) for i in range(1000)),
            ),
            settings,
        )
        for b in range(count)
    ]


def post_all(client: Any, payloads: list[dict[str, Any]]) -> float:
    started = time.perf_counter()
    for payload in payloads:
        response = client.mail.send.post(request_body=payload, timeout=30)
        assert response.status_code == 202, response.status_code
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.sendgrid_server", KEY],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().strip()
        api = sendgrid.SendGridAPIClient(api_key=KEY, host=url)
        plain = api.client
        deadline = DeadlineClient(
            host=api.host, request_headers=api.client.request_headers, version=3
        )
        payloads = bodies(args.batches)
        times: dict[str, list[float]] = {"plain": [], "deadline": []}
        clients = {"plain": plain, "deadline": deadline}
        for run in range(args.runs):
            # Alternate which goes first, so neither always follows the other's garbage.
            for name in sorted(clients, reverse=bool(run % 2)):
                times[name].append(post_all(clients[name], payloads))
    finally:
        fake.kill()
        fake.wait()
    per = {name: statistics.median(values) / args.batches * 1000 for name, values in times.items()}
    print(f"requests per run      {args.batches:>8} (1,000 recipients each), {args.runs} runs")
    print(f"plain urllib client   {per['plain']:>8.2f} ms per request (median)")
    print(f"deadline transport    {per['deadline']:>8.2f} ms per request (median)")
    print(f"ratio                 {per['deadline'] / per['plain']:>8.3f} x")


if __name__ == "__main__":
    main()
