"""Secrets out of error text, as the CLI prints it: the last guard, after validation.

A foreign message can quote a secret in several spellings: as given, stripped, escaped as
in a repr (`'SG.x\\n'`) or as bytes (`b'Bearer SG.x\\xc3\\xa9'`), or cut around a character
that broke it. Every spelling is replaced, and so is every long run of the secret's
printable characters, so no fragment long enough to matter survives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter fragments of a key are not worth hiding (and would blank ordinary words).
MIN_FRAGMENT = 8
_PRINTABLE_RUNS = re.compile(rf"[!-~]{{{MIN_FRAGMENT},}}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every spelling of every secret replaced by [redacted]."""
    spellings = {s for secret in secrets if secret for s in _spellings(secret)}
    for spelling in sorted(spellings, key=len, reverse=True):
        text = text.replace(spelling, REDACTED)
    return text


def _spellings(secret: str) -> set[str]:
    forms = {secret, secret.strip(), repr(secret)[1:-1]}
    for encoding in ("utf-8", "latin-1"):
        try:
            forms.add(repr(secret.encode(encoding))[2:-1])
        except UnicodeEncodeError:
            continue
    fragments = {run for form in forms for run in _PRINTABLE_RUNS.findall(form)}
    return {form for form in forms | fragments if len(form) >= MIN_FRAGMENT}
