"""Secrets out of error text, as the CLI prints it: the last guard, after validation.

A foreign message can quote a secret in several spellings: as given, stripped, escaped as
in a repr (`'SG.x\\n'`) or as bytes (`b'Bearer SG.x\\xc3\\xa9'`), upper- or lower-cased, or
cut anywhere. Every whole secret is replaced, and so is every run of at least MIN_FRAGMENT
characters that appears, in any case, inside one of its spellings: no fragment long enough
to matter survives, wherever it was cut.
"""

from __future__ import annotations

from collections.abc import Iterable

REDACTED = "[redacted]"
# Shorter fragments of a key are not worth hiding (and would blank ordinary words).
MIN_FRAGMENT = 8
# A whole secret shorter than a fragment is still replaced, unless it is so short that
# doing so would blank ordinary text (no such secret is accepted as a key anyway).
MIN_WHOLE = 4


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret, and every fragment of one, replaced by [redacted]."""
    wanted = [s for s in secrets if len(s) >= MIN_WHOLE]
    for secret in sorted(wanted, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    grams = {g for secret in wanted for form in _spellings(secret) for g in _grams(form)}
    return _replace_runs(text, grams) if grams else text


def _spellings(secret: str) -> set[str]:
    forms = {secret, secret.strip(), repr(secret)[1:-1]}
    for encoding in ("utf-8", "latin-1"):
        try:
            forms.add(repr(secret.encode(encoding))[2:-1])
        except UnicodeEncodeError:
            continue
    return forms


def _grams(form: str) -> set[str]:
    """Every MIN_FRAGMENT-character window of `form`, lower-cased: any longer fragment of
    the secret is a chain of these, so marking where they occur marks the whole fragment."""
    folded = form.lower()
    return {folded[i : i + MIN_FRAGMENT] for i in range(len(folded) - MIN_FRAGMENT + 1)}


def _replace_runs(text: str, grams: set[str]) -> str:
    folded = text.lower()
    hidden = [False] * len(text)
    for start in range(len(text) - MIN_FRAGMENT + 1):
        if folded[start : start + MIN_FRAGMENT] in grams:
            hidden[start : start + MIN_FRAGMENT] = [True] * MIN_FRAGMENT
    out: list[str] = []
    for index, char in enumerate(text):
        if not hidden[index]:
            out.append(char)
        elif index == 0 or not hidden[index - 1]:
            out.append(REDACTED)
    return "".join(out)
