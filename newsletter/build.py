"""`newsletter build`: an issue definition in, email.html/.txt/.mjml and message.eml out."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from newsletter import placeholders
from newsletter.atomic import write_bytes
from newsletter.config import Settings
from newsletter.errors import UsageError
from newsletter.issues import load_issue
from newsletter.message import build_message, to_bytes
from newsletter.models import Issue, Recipient, RenderedEmail
from newsletter.render import render


@dataclass(frozen=True)
class BuildResult:
    issue: Issue
    email: RenderedEmail
    directory: Path
    files: tuple[Path, ...]


def build_issue(issue_path: Path, settings: Settings) -> RenderedEmail:
    """Load, validate, resolve and render one issue (pure: nothing is written)."""
    return render(load_issue(issue_path, settings), settings)


def build_to_disk(
    issue_path: Path, settings: Settings, out_dir: Path, preview_as: Recipient | None = None
) -> BuildResult:
    """Build and write the four files; `preview_as` fills the placeholders for a preview."""
    issue = load_issue(issue_path, settings)
    email = render(issue, settings)
    html, text = email.html, email.text
    if preview_as is not None:
        html = placeholders.fill(html, preview_as, part="html", tags=email.tags)
        text = placeholders.fill(text, preview_as, part="text", tags=email.tags)
    message = to_bytes(build_message(email, settings, preview_as))
    directory = out_dir / issue.name
    outputs = {
        "email.html": html.encode("utf-8"),
        "email.txt": text.encode("utf-8"),
        "email.mjml": email.mjml.encode("utf-8"),
        "message.eml": message,
    }
    files = tuple(write_bytes(directory / name, data) for name, data in outputs.items())
    return BuildResult(issue, email, directory, files)


def preview_recipient(spec: str, settings: Settings) -> Recipient:
    """`--as "Aida,aida@example.org"`: a sample recipient for a preview build."""
    name, sep, address = spec.partition(",")
    if not sep or "@" not in address or "\n" in spec or "\r" in spec:
        example = "--as 'Aida,aida@example.org'"
        raise UsageError(f"--as {spec!r}: expected NAME,EMAIL, e.g. {example}.")
    return Recipient(
        email=address.strip(),
        first_name=name.strip(),
        unsubscribe_url=f"{settings.base_url.rstrip('/')}/u/preview-only-not-a-real-token",
    )
