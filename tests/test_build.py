"""`newsletter build`: golden output, determinism, the .eml, and errors without tracebacks."""

from __future__ import annotations

import difflib
import email
import email.policy
import re
from email.headerregistry import Address, Group
from email.message import EmailMessage
from pathlib import Path

import pytest

from newsletter.build import build_issue, write_files
from newsletter.config import Settings
from newsletter.message import WIRE
from newsletter.readers import made_up_reader
from tests.conftest import run_newsletter

GOLDEN = Path(__file__).parent / "golden" / "2025-12-10"
FILES = ("email.html", "email.txt", "email.mjml", "message.eml")


def build_sample(settings: Settings, out: Path) -> Path:
    built = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings)
    result = write_files(built, out, settings)
    assert [p.name for p in result.files] == list(FILES)
    return result.directory


@pytest.mark.parametrize("name", FILES)
def test_sample_issue_matches_golden(
    settings: Settings, tmp_path: Path, update_golden: bool, name: str
) -> None:
    produced = (build_sample(settings, tmp_path / "out") / name).read_bytes()
    golden = GOLDEN / name
    if update_golden:
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_bytes(produced)
        return
    assert golden.exists(), f"{golden} is missing: run `pytest --update-golden` and review it."
    expected = golden.read_bytes()
    if produced != expected:
        diff = difflib.unified_diff(
            expected.decode(errors="replace").splitlines(),
            produced.decode(errors="replace").splitlines(),
            "golden",
            "built",
            lineterm="",
            n=1,
        )
        pytest.fail(f"{name} differs from {golden}:\n" + "\n".join(list(diff)[:60]))


def test_same_inputs_give_byte_identical_files(settings: Settings, tmp_path: Path) -> None:
    first = build_sample(settings, tmp_path / "a")
    second = build_sample(settings, tmp_path / "b")
    for name in FILES:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_eml_is_multipart_alternative_utf8_with_list_unsubscribe(
    settings: Settings, tmp_path: Path
) -> None:
    raw = (build_sample(settings, tmp_path) / "message.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["Subject"] == "Kyrgyz apricots head to China; Kazakhstan courts Turkey"
    assert msg["From"] == "Central Asia Weekly <digest@news.example.org>"
    assert msg["Date"] == "Wed, 10 Dec 2025 06:00:00 +0000"
    # The build's own unsubscribe tag: `-unsubscribe_url-<key>-`, the key a hex digest.
    assert re.fullmatch(r"<-unsubscribe_url-[0-9a-f]{12}->", str(msg["List-Unsubscribe"]))
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    parts = [(p.get_content_type(), p.get_content_charset()) for p in msg.iter_parts()]
    assert parts == [("text/plain", "utf-8"), ("text/html", "utf-8")]
    text = next(p for p in msg.iter_parts() if p.get_content_type() == "text/plain")
    assert "Kazakhstan and Turkey Tighten Ties" in text.get_content()
    assert "▼ −0.28%" in text.get_content()


def test_preview_as_fills_every_placeholder(settings: Settings, tmp_path: Path) -> None:
    who = made_up_reader("Aida <Ali>,aida@example.org", settings)
    built = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings)
    result = write_files(built, tmp_path, settings, who)
    html = (result.directory / "email.html").read_text()
    text = (result.directory / "email.txt").read_text()
    msg = email.message_from_bytes(
        (result.directory / "message.eml").read_bytes(), policy=email.policy.default
    )
    assert "Hello Aida &lt;Ali&gt;," in html
    assert "Hello Aida <Ali>," in text
    for part in (html, text, str(msg)):
        assert "-first_name" not in part
        assert "-unsubscribe_url" not in part
    assert msg["To"].addresses[0].addr_spec == "aida@example.org"


def test_eml_without_a_reader_is_to_undisclosed_recipients_with_the_list_id(
    settings: Settings, tmp_path: Path
) -> None:
    """A message with no `To` is a spam sign; the file names no one, so it says so, and
    carries the List-Id every sent copy carries."""
    raw = (build_sample(settings, tmp_path) / "message.eml").read_bytes()
    assert b"\r\nTo: undisclosed-recipients:;\r\n" in raw
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert [g.display_name for g in msg["To"].groups] == ["undisclosed-recipients"]
    assert msg["To"].addresses == ()
    assert msg["List-Id"] == "Central Asia Weekly <weekly.news.example.org>"


@pytest.mark.parametrize(
    "group",
    [
        Group("undisclosed recipients\r\nBcc: eve@evil.example"),
        Group("=?utf-8?q?x=0D=0ABcc=3A_eve@evil.example?="),
        Group("list", [Address("Eve", addr_spec="eve@evil.example")]),
    ],
)
def test_only_an_empty_plainly_named_group_goes_into_to(group: Group) -> None:
    """The group form exists for `undisclosed-recipients:;`; nothing else rides on it."""
    message = EmailMessage(policy=WIRE)
    with pytest.raises(ValueError, match="only an empty group"):
        message["To"] = group


def test_eml_as_a_reader_is_to_that_reader(settings: Settings, tmp_path: Path) -> None:
    done = run_newsletter(
        settings.root, "build", "issues/2025-12-10.yaml", "--out", "out", "--as", "Aida,aida@x.test"
    )
    assert done.returncode == 0, done.stderr
    raw = (settings.root / "out" / "2025-12-10" / "message.eml").read_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == "Aida <aida@x.test>"
    assert msg["Date"] == "Wed, 10 Dec 2025 06:00:00 +0000"  # a build stays deterministic


def test_cli_build_prints_a_summary(project: Path) -> None:
    done = run_newsletter(project, "build", "issues/2025-12-10.yaml", "--out", "out")
    assert done.returncode == 0, done.stderr
    assert "6 articles" in done.stdout
    assert "KB" in done.stdout
    assert (project / "out" / "2025-12-10" / "message.eml").exists()


def test_cli_error_is_a_message_not_a_traceback(project: Path) -> None:
    issue = project / "issues" / "2025-12-10.yaml"
    issue.write_text(issue.read_text().replace("template: digest", "template: nope"))
    done = run_newsletter(project, "build", "issues/2025-12-10.yaml")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "2025-12-10.yaml:" in done.stderr
    assert "unknown template 'nope'" in done.stderr
    assert not (project / "build").exists()  # nothing half-written


def test_cli_missing_issue_file(project: Path) -> None:
    done = run_newsletter(project, "build", "issues/1999-01-01.yaml")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "1999-01-01.yaml" in done.stderr
    assert "cannot read" in done.stderr


def test_cli_rates_import_of_the_seed_front_page(project: Path) -> None:
    seed = Path(__file__).parent / "data" / "front-page-2025-12-10.txt"
    target = project / "content" / "rates" / "2025-12-11.yaml"
    done = run_newsletter(
        project, "rates", "import", str(seed), "--date", "2025-12-11", "--source", "Front page"
    )
    assert done.returncode == 0, done.stderr
    assert "TJS/USD = 0.10811 ▼ −0.28%" in done.stdout
    assert 'TMT: {value: "0.28490", change_pct: "0"}' in target.read_text()


def test_cli_rates_import_reports_bad_line(project: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ticker.txt"
    bad.write_text("• KGS/USD = 0.01144 0%\n• KZT/USD = 0.00193 -%\n")
    done = run_newsletter(
        project, "rates", "import", str(bad), "--date", "2025-12-11", "--source", "Front page"
    )
    assert done.returncode == 1
    assert "ticker.txt:2" in done.stderr
    assert not (project / "content" / "rates" / "2025-12-11.yaml").exists()


def test_long_unsubscribe_url_stays_a_plain_header(settings: Settings, tmp_path: Path) -> None:
    long_url = "https://news.example.org/u/" + "A" * 300
    from newsletter.build import build_issue
    from newsletter.message import build_message, to_bytes
    from newsletter.models import Recipient

    built = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    raw = to_bytes(build_message(built, settings, Recipient("a@example.org", "A", long_url)))
    assert f"List-Unsubscribe: <{long_url}>\r\n".encode() in raw
    headers, _, body = raw.partition(b"\r\n\r\n")
    assert b"=?utf-8?" not in headers  # no encoded-words in the headers
    assert max(len(line) for line in body.split(b"\r\n")) <= 76  # RFC 2045 for QP


def test_cli_prints_user_text_literally_never_as_markup(project: Path) -> None:
    issue = project / "issues" / "2025-12-10.yaml"
    issue.write_text(issue.read_text().replace("heading: Lead story", "heading: Lead [/] [b]story"))
    done = run_newsletter(project, "build", "issues/2025-12-10.yaml", "--out", "out")
    assert done.returncode == 0, done.stderr
    assert "Lead [/] [b]story" in done.stdout
    text = issue.read_text()
    subject = next(line for line in text.splitlines() if line.startswith("subject:"))
    issue.write_text(text.replace(subject, 'subject: "[/x]\\nsecond line"'))
    done = run_newsletter(project, "build", "issues/2025-12-10.yaml")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "[subject]: error: must be a single line." in done.stderr


def test_every_copy_has_its_own_message_id(settings: Settings) -> None:
    from newsletter.build import build_issue
    from newsletter.message import build_message
    from newsletter.models import Recipient

    built = build_issue(settings.path("issues_dir") / "2025-12-10.yaml", settings).email
    ids = {
        build_message(built, settings, Recipient(address, "A", "https://x.org/u/t"), prefix)[
            "Message-ID"
        ]
        for address in ("a@example.org", "b@example.org")
        for prefix in ("", "[TEST] ")
    }
    assert len(ids) == 4
    again = build_message(built, settings, Recipient("a@example.org", "A", "https://x.org/u/t"))
    assert again["Message-ID"] in ids  # still deterministic
