"""`newsletter send` and `status` as a user runs them: the default outbox, no credentials."""

from __future__ import annotations

import os
from pathlib import Path

from newsletter import db
from newsletter.config import load_settings
from tests.conftest import populate, run_newsletter


def newsletter(project: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    done = run_newsletter(project, *args, env=env)
    return done.returncode, done.stdout + done.stderr


def test_the_default_outbox_path_needs_no_provider_credentials(project: Path) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_SECRET_KEY": "OMhvhQENe_2cXzyglUVTh-Bd7-rIq5cmKfFpSrm7b7o",
        "NEWSLETTER_SEND_BATCH_SIZE": "4",
    }
    engine = db.connect(load_settings(project, env=env))
    readers = populate(engine, 10)
    engine.dispose()

    code, plan = newsletter(project, env, "send", "issues/2025-12-10.yaml", "--dry-run")
    assert code == 0, plan
    assert "to send 10 in 3 batch(es)" in plan
    assert not (project / "outbox").exists()

    code, declined = newsletter(project, env, "send", "issues/2025-12-10.yaml")
    assert code == 1, declined
    assert not (project / "outbox").exists()

    code, sent = newsletter(project, env, "send", "issues/2025-12-10.yaml", "--yes")
    assert code == 0, sent
    assert "sent 10 · failed 0 · unknown 0 · skipped 0" in sent
    files = sorted(p.name for p in (project / "outbox" / "2025-12-10").iterdir())
    assert files == sorted(f"{r}.eml" for r in readers)

    code, status = newsletter(project, env, "status", "2025-12-10")
    assert code == 0, status
    assert "sent 10 · failed 0 · unknown 0" in status
