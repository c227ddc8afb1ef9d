"""The readers nobody subscribed as: the sample, a made-up one, a test copy's, the public's.

Each fills the per-recipient placeholders with links that can unsubscribe nobody.
"""

from __future__ import annotations

from newsletter import urls
from newsletter.config import Settings
from newsletter.errors import UsageError
from newsletter.models import Recipient


def sample_reader(settings: Settings) -> Recipient:
    """Who the preview and the screenshots render for unless told otherwise."""
    return Recipient(
        email="aida@example.org",
        first_name="Aida",
        unsubscribe_url=urls.preview_only_link(settings),
    )


def made_up_reader(spec: str, settings: Settings) -> Recipient:
    """`--as "Aida,aida@example.org"` (and the preview's NAME,EMAIL): a made-up reader."""
    name, sep, address = spec.partition(",")
    if not sep or "@" not in address or "\n" in spec or "\r" in spec:
        example = "--as 'Aida,aida@example.org'"
        raise UsageError(f"--as {spec!r}: expected NAME,EMAIL, e.g. {example}.")
    return Recipient(
        email=address.strip(),
        first_name=name.strip(),
        unsubscribe_url=urls.preview_only_link(settings),
    )


def previewed_subscriber(email: str, name: str, public_id: str, settings: Settings) -> Recipient:
    """A real subscriber as the preview shows them: their name, never a working token."""
    first = name.split()[0] if name.strip() else ""
    return Recipient(email, first, urls.preview_only_link(settings), public_id)


def proof_reader(address: str, settings: Settings) -> Recipient:
    """The addressee of a `[TEST]` copy: no name, and an unsubscribe link that does nothing."""
    return Recipient(address, "", urls.test_copy_link(settings))


def anonymous_reader(settings: Settings) -> Recipient:
    """The public copy is filled for nobody in particular, and never carries a real token."""
    return Recipient(
        email="", first_name="reader", unsubscribe_url=urls.public_unsubscribe_link(settings)
    )
