"""Signed unsubscribe and confirmation tokens: an opaque subscriber id and a list, never an address.

Tokens do not expire: an unsubscribe link in an issue from last year must still work.
Keys come from NEWSLETTER_SECRET_KEY, newest first; the newest signs, every listed key
verifies, so a key can be rotated out slowly by keeping it at the end of the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadData, URLSafeSerializer

from newsletter.config import Settings
from newsletter.errors import ConfigError, TokenError

Purpose = Literal["unsubscribe", "confirm"]
INVALID = "This link is not valid."  # one message for every kind of bad token


@dataclass(frozen=True)
class TokenClaims:
    subscriber_id: str  # the public id
    list_name: str


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeSerializer:
    if not settings.secret_keys:
        raise ConfigError(
            "The setting secret_keys is empty: set NEWSLETTER_SECRET_KEY to a long random "
            "value (several, comma-separated and newest first, while rotating keys)."
        )
    # itsdangerous signs with the last key and verifies with all of them.
    keys = [key.reveal() for key in reversed(settings.secret_keys)]
    # The salt separates purposes: a confirmation token cannot unsubscribe, and vice versa.
    return URLSafeSerializer(keys, salt=f"newsletter.{purpose}")


def sign(settings: Settings, purpose: Purpose, subscriber_id: str, list_name: str) -> str:
    return _serializer(settings, purpose).dumps([subscriber_id, list_name])


def verify(settings: Settings, purpose: Purpose, token: str) -> TokenClaims:
    """The claims of a token, or TokenError with the same text whatever went wrong."""
    try:
        payload = _serializer(settings, purpose).loads(token)
    except BadData as exc:
        raise TokenError(INVALID) from exc
    if (
        not isinstance(payload, list)
        or len(payload) != 2
        or not all(isinstance(part, str) for part in payload)
    ):
        raise TokenError(INVALID)
    return TokenClaims(payload[0], payload[1])


def unsubscribe_url(settings: Settings, subscriber_public_id: str, list_name: str) -> str:
    token = sign(settings, "unsubscribe", subscriber_public_id, list_name)
    return f"{settings.base_url.rstrip('/')}/u/{token}"


def confirm_url(settings: Settings, subscriber_public_id: str, list_name: str) -> str:
    token = sign(settings, "confirm", subscriber_public_id, list_name)
    return f"{settings.base_url.rstrip('/')}/confirm/{token}"
