"""The one exception tree of the project.

Every error a user can cause is a ``NewsletterError``; the CLI prints its message and
exits non-zero without a traceback. Foreign exceptions are translated once, at the
boundary where they happen, with ``raise ... from``::

    NewsletterError
    ├── UsageError             a command-line argument is malformed (names the option:
    │                          --at, --mode, --date...)
    ├── ConfigError            a setting is missing or malformed (names the setting)
    ├── ContentError           an article or rate file is malformed (names file and line)
    │   ├── UnreadableFileError  a file is missing, not a regular file, over its byte cap or
    │   │                      not UTF-8 (names the file)
    │   ├── YamlSyntaxError    a file is not valid YAML or nested too deeply (file and line)
    │   ├── ArticleFileError   article files are malformed (carries every Problem)
    │   ├── RatesError         ticker text or a rate snapshot cannot be read
    │   └── FeedError          a news feed cannot be fetched or read; nothing was written
    ├── IssueError             an issue definition failed validation (carries every Problem)
    ├── RenderError            a template failed to render or compile
    ├── StorageError           the database is unreachable, locked or inconsistent
    ├── AudienceError          a list, subscriber or address given by the user is unknown or invalid
    │   ├── AddressError       an email address is not valid (says why)
    │   └── ImportFileError    a subscriber CSV is malformed; nothing was imported (names
    │                          file and line)
    ├── TokenError             an unsubscribe/confirm token is invalid (always the same text)
    ├── WebhookError           a SendGrid event webhook POST is refused; nothing was stored
    │   ├── SignatureError     missing or bad signature, or a stale timestamp (one text)
    │   └── EventBatchError    the body is not a batch of events (names the index and field)
    ├── PreflightError         preflight found errors that block a send
    ├── PreviewError           the preview server or the browser cannot start (says why)
    ├── DispatchError          a send was refused before anything went out (changed content,
    │                          a clash with a pending schedule, nothing to cancel)
    ├── UnexpectedError        a foreign error stopped a command at the CLI's boundary (in
    │                          words, secrets redacted: never a traceback)
    └── MailerError            a mailer could not deliver
        ├── AuthError          the provider refused our credentials; stop everything
        ├── UnreachableError   the provider could not be reached, or refused for now (4xx);
        │                      nothing was accepted
        ├── RefusedError       the server refused this message for good (5xx)
        └── PayloadError       a request could not be built from the batch; none went out

Outside the tree, ``InterruptedBeforeSending`` is a ``KeyboardInterrupt`` (Ctrl-C stops the
program as ever) that also tells the sender nothing of the batch in hand went out, and
``SendInterrupted`` is the one a stopped send ends with, saying what it left.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding about an input file: where it is, what is wrong, what to do."""

    message: str
    file: Path | None = None
    field: str | None = None
    line: int | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        where = str(self.file) if self.file else ""
        if self.line is not None:
            where += f":{self.line}"
        if self.field:
            where += f" [{self.field}]" if where else f"[{self.field}]"
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.severity}: {self.message}"


class NewsletterError(Exception):
    """Base of every error the project raises on purpose."""


class UsageError(NewsletterError):
    """A command-line argument is malformed or names nothing."""


class ConfigError(NewsletterError):
    """A setting is missing or malformed."""


class ContentError(NewsletterError):
    """An article or rate snapshot cannot be read."""


class UnreadableFileError(ContentError):
    """A file cannot be read as input: missing, a folder, a device or FIFO, too large, or
    not UTF-8. `path` is the file, `reason` a clause saying what is wrong and what to do."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}.")


class YamlSyntaxError(ContentError):
    """A file is not valid YAML; `problem` says where."""

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        super().__init__(str(problem))


class ArticleFileError(ContentError):
    """One or more article files are malformed; `problems` holds every finding."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"Fix these article files:\n{lines}")


class RatesError(ContentError):
    """Ticker text or a rate snapshot cannot be parsed."""


class FeedError(ContentError):
    """A news feed cannot be fetched or is not RSS or Atom; no article was written."""


class IssueError(NewsletterError):
    """An issue definition failed validation; ``problems`` holds every finding."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(errors)} problem(s) in the issue definition:\n{lines}")


class RenderError(NewsletterError):
    """A template failed to render, or the MJML failed to compile."""


class StorageError(NewsletterError):
    """The database is unreachable, locked, or not in the expected state."""


class AudienceError(NewsletterError):
    """A list, subscriber or address named by the user is unknown or invalid."""


class AddressError(AudienceError):
    """An email address is not valid; the message says why."""


class ImportFileError(AudienceError):
    """A subscriber file cannot be imported; nothing was written.

    The file's fault, not the database's (a StorageError would make the web layer answer
    503, "try again", which no retry fixes). `path` and `line` (when known) say where,
    `reason` what is wrong and what to do.
    """

    def __init__(self, path: Path, reason: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {reason} Nothing was imported.")


class TokenError(NewsletterError):
    """A token is tampered, signed with an unknown key, or names nobody."""


class WebhookError(NewsletterError):
    """A SendGrid event webhook POST is refused; nothing of it was stored."""


class SignatureError(WebhookError):
    """The POST is not signed by SendGrid's key, or not recently: always the same text, so
    an answer never tells a forger which check failed."""

    def __init__(self) -> None:
        super().__init__("The request is not a verified SendGrid event webhook POST.")


class EventBatchError(WebhookError):
    """The verified body is not a JSON array of events; the message names the index and field."""


class PreflightError(NewsletterError):
    """Preflight checks found errors that block a send."""


class PreviewError(NewsletterError):
    """The preview server cannot listen, or the headless browser cannot start."""


class MailerError(NewsletterError):
    """A mailer could not deliver a message."""


class AuthError(MailerError):
    """The mail provider rejected our credentials; the whole send stops."""


class DispatchError(NewsletterError):
    """A send was refused before anything went out."""


class UnreachableError(MailerError):
    """The provider could not be reached (or kept rate-limiting); it accepted nothing."""


class RefusedError(MailerError):
    """The server answered that it will never take this message (a 5xx): do not retry."""


class PayloadError(MailerError):
    """A request could not be built from the batch, so none went out."""


class UnexpectedError(NewsletterError):
    """An error that is not ours stopped a command; the CLI tells it in words, no traceback."""


class InterruptedBeforeSending(KeyboardInterrupt):
    """Ctrl-C while no request of the batch had gone out (a rate-limit wait, say): its rows
    can go back to `pending` instead of `unknown`."""


class SendInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a send: how many it sent and failed, how many requests in flight it
    marked `unknown`, and how many claims it gave back to `pending`."""

    def __init__(self, sent: int, failed: int, unknown: int, released: int) -> None:
        super().__init__(sent, failed, unknown, released)
        self.sent, self.failed, self.unknown, self.released = sent, failed, unknown, released
