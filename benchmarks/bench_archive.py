"""What the archive costs: `archive build` over N sent issues, and one served index or feed.

    python benchmarks/bench_archive.py [--issues 104] [--runs 5]

Builds the sample issue once, sends it under N issue names (two years of a weekly) to one
subscriber through the outbox (SQLite in a temporary folder), then measures, as medians:
the whole static build (catalogue, every page filled, written and swapped in), and what
one `newsletter serve` request for an index and for a feed costs once the server has
read each copy's headings (the catalogue is read from the database on every request).
"""

from __future__ import annotations

import argparse
import dataclasses
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from newsletter import audience, db, dispatch, site, tokens
from newsletter.build import build_issue
from newsletter.config import Settings, load_settings
from newsletter.mailers.outbox import OutboxMailer
from newsletter.models import AudienceSpec

REPO = Path(__file__).resolve().parent.parent
KEY = secrets.token_urlsafe(32)  # a throwaway signing key, strong enough for load_settings


def prepare(root: Path, issues: int) -> Settings:
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
        audience.create_list(conn, "weekly", "Central Asia Weekly", public=True)
        audience.add_subscriber(conn, "dana@example.org", "weekly", name="Dana", confirmed=True)
    sample = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    mailer = OutboxMailer(settings.path("outbox_dir"), settings)
    for number in range(issues):
        name = f"issue-{number:04d}"
        email = dataclasses.replace(sample, issue_name=name, content_hash=f"{name}-hash")
        dispatch.send_issue(
            engine,
            email,
            AudienceSpec("weekly"),
            mailer,
            lambda pid: tokens.unsubscribe_url(settings, pid, "weekly"),
            dispatch.SendOptions(),
        )
    engine.dispose()
    return settings


def median_seconds(work: object, runs: int) -> float:
    timings = []
    for _ in range(runs):
        start = time.perf_counter()
        work()  # type: ignore[operator]
        timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--issues", type=int, default=104)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        settings = prepare(Path(folder), args.issues)
        engine = db.connect(settings)
        out = Path(folder) / "site"

        def build() -> None:
            with db.reading(engine) as conn:
                found = site.catalogue(conn, db.now())
                files = site.files(conn, settings, found)
            site.write(files, out)

        received: set[str] = set()

        def served(make: object) -> None:
            with db.reading(engine) as conn:
                found = site.catalogue(conn, db.now(), received)
            make(settings, found, "weekly", "en")  # type: ignore[operator]

        whole = median_seconds(build, args.runs)
        served(site.index_page)  # the server's first request reads each copy's headings
        index = median_seconds(lambda: served(site.index_page), args.runs * 4)
        feed = median_seconds(lambda: served(site.feed), args.runs * 4)
        files = sum(1 for p in out.rglob("*") if p.is_file())
        print(f"{args.issues} issues, {files} files")
        print(f"archive build: {whole * 1000:.0f} ms ({whole / args.issues * 1000:.1f} ms/issue)")
        print(f"served index: {index * 1000:.1f} ms; served feed: {feed * 1000:.1f} ms")
        engine.dispose()


if __name__ == "__main__":
    main()
