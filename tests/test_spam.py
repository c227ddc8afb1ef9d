"""SpamAssassin's verdict on what we send: each kind of message scores at most 0.5.

Debian's `spamassassin` with its shipped rules, local tests only (`-L`: no DNS blocklists,
no network), run on the files a reader's server would get: the built `message.eml`, an
outbox copy, a `--test` copy and a subscription confirmation. No rule of ours changes a
score; a failure lists the rules that fired, so the cause can be fixed in the message.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import lxml.html
import pytest

from newsletter.build import build_issue, write_files
from newsletter.config import Settings, load_settings
from newsletter.mailers.outbox import OutboxMailer
from newsletter.message import confirmation, to_bytes
from newsletter.models import Recipient, SendBatch
from newsletter.snapshot import browser, open_email
from tests.conftest import TEST_KEYS, run_newsletter

LIMIT = 0.5
ISSUE = "issues/2025-12-10.yaml"
ENV = {"NEWSLETTER_SECRET_KEY": TEST_KEYS, "NEWSLETTER_BASE_URL": "https://news.example.org"}
STATUS = re.compile(r"^X-Spam-Status: \w+, score=(-?[\d.]+) ", re.MULTILINE)


def spamassassin(message: bytes, home: Path) -> tuple[float, str]:
    """The score and the report of `spamassassin -t -L` on one message.

    HOME is a fresh folder, so no one's trained Bayes database or user rules take part.
    """
    if not shutil.which("spamassassin"):
        pytest.fail("spamassassin is missing: apt-get install spamassassin (.ci/run installs it).")
    home.mkdir(exist_ok=True)
    done = subprocess.run(
        ["spamassassin", "-t", "-L"],
        input=message,
        capture_output=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)},
        timeout=120,
        check=False,
    )
    output = done.stdout.decode("utf-8", "replace")
    found = STATUS.search(output)
    assert found, f"spamassassin gave no verdict: {done.stderr.decode(errors='replace')}"
    return float(found.group(1)), output.partition("Content analysis details:")[2]


def assert_clean(message: bytes, home: Path) -> None:
    score, report = spamassassin(message, home)
    assert score <= LIMIT, f"SpamAssassin scored {score} (limit {LIMIT}); rules fired:{report}"


@pytest.fixture
def sample(project: Path) -> Settings:
    return load_settings(project, env=ENV)


def test_the_built_message_eml(sample: Settings, tmp_path: Path) -> None:
    built = build_issue(sample.path("issues_dir") / "2025-12-10.yaml", sample)
    written = write_files(built, tmp_path / "out", sample)
    assert_clean((written.directory / "message.eml").read_bytes(), tmp_path / "home")


def test_an_outbox_copy(sample: Settings, tmp_path: Path) -> None:
    built = build_issue(sample.path("issues_dir") / "2025-12-10.yaml", sample)
    reader = Recipient(
        "aida@example.org", "Aida", "https://news.example.org/u/WyJwdWIxMjMiXQ.4Tto-_Lev"
    )
    batch = SendBatch("2025-12-10", "weekly", (reader,), ("1",))
    OutboxMailer(tmp_path / "outbox", sample).send_batch(built.email, batch)
    copy = tmp_path / "outbox" / "2025-12-10" / "aida@example.org.eml"
    assert_clean(copy.read_bytes(), tmp_path / "home")


def test_a_test_copy_from_the_command(project: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")} | ENV
    done = run_newsletter(project, "send", ISSUE, "--test", "ed@example.org", env=env)
    assert done.returncode == 0, done.stderr
    copy = project / "outbox" / "2025-12-10-test" / "ed@example.org.eml"
    assert b"Subject: [TEST] " in copy.read_bytes()
    assert_clean(copy.read_bytes(), tmp_path / "home")


def test_a_subscription_confirmation(sample: Settings, tmp_path: Path) -> None:
    message = confirmation(sample, "pub-1", "aida@example.org", "Aida", "weekly")
    assert_clean(to_bytes(message), tmp_path / "home")


def test_the_check_fails_and_names_the_rules_on_a_spammy_message(tmp_path: Path) -> None:
    """The limit is real: a message with no To and white-on-white text fails, naming both."""
    spammy = (
        b"From: x@example.org\r\nSubject: hi\r\nDate: Wed, 10 Dec 2025 06:00:00 +0000\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        b'<html><body bgcolor="#ffffff"><p>Hello there, reader.</p>'
        b'<font color="#ffffff">hidden words for filters</font></body></html>\r\n'
    )
    with pytest.raises(AssertionError) as failed:
        assert_clean(spammy, tmp_path / "home")
    assert "MISSING_HEADERS" in str(failed.value)
    assert "HTML_FONT_LOW_CONTRAST" in str(failed.value)


def test_the_preheader_is_hidden_without_a_colour(sample: Settings) -> None:
    """What replaced mj-preview's white-on-white: still the first text an inbox lists, still
    hidden (display:none for Gmail and Apple Mail, mso-hide:all for Outlook), with no colour
    for a filter to compare with the background; and Chromium draws none of it."""
    email = build_issue(sample.path("issues_dir") / "2025-12-10.yaml", sample).email
    doc = lxml.html.document_fromstring(email.html)
    assert doc.body is not None
    body_text = " ".join(doc.body.text_content().split())
    assert body_text.startswith(email.preheader)
    [hidden] = doc.find_class("preheader")
    style = hidden.get("style", "").replace(" ", "")
    assert "display:none" in style
    assert "mso-hide:all" in style
    assert "color" not in style
    with browser(sample) as chromium:
        for scheme in ("light", "dark"):
            page = open_email(chromium, email.html, width=375, scheme=scheme)
            try:
                assert page.locator(".preheader").bounding_box() is None, scheme
                assert email.preheader not in page.inner_text("body"), scheme
            finally:
                page.context.close()
