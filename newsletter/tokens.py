"""Signed unsubscribe and confirmation tokens: an opaque subscriber id and a list, never an address.

Unsubscribe tokens do not expire: an unsubscribe link in an issue from last year must still
work. Confirmation tokens carry their signing time and expire after `confirm_token_days`: a
double opt-in link is for the days after someone asked, not for whoever finds it later.
Keys come from NEWSLETTER_SECRET_KEY, newest first; the newest signs, every listed key
verifies, so a key can be rotated out slowly by keeping it at the end of the list.

Tokens are itsdangerous URL-safe tokens, signed through its extension points for speed (a
send signs one per recipient): the key is derived once, the keyed HMAC is prepared once,
and the payload is never compressed. Stock itsdangerous reads and writes the same tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring
from typing import Any, ClassVar, Literal

from itsdangerous import BadData, Signer, URLSafeSerializer, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, want_bytes
from itsdangerous.signer import HMACAlgorithm

from newsletter import urls
from newsletter.config import Secret, Settings
from newsletter.errors import ConfigError, TokenError

Purpose = Literal["unsubscribe", "confirm"]
INVALID = "This link is not valid."  # one message for every kind of bad token


@dataclass(frozen=True)
class TokenClaims:
    public_id: str  # the subscriber's opaque public id, never the address
    list_name: str


class _OnceDerivedSigner(Signer):
    """itsdangerous's Signer, deriving each (salt, key) signing key once per process.

    The stock Signer hashes salt and secret again on every sign and verify (a send signs
    one token per recipient); the derived key, hence every token, is exactly the same.
    """

    _derived: ClassVar[dict[tuple[str, bytes, bytes], bytes]] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        secret = self.secret_keys[-1] if secret_key is None else want_bytes(secret_key)
        slot = (self.key_derivation, self.salt, secret)
        derived = self._derived.get(slot)
        if derived is None:
            derived = self._derived[slot] = super().derive_key(secret)
        return derived


class _PreparedHMAC(HMACAlgorithm):
    """itsdangerous's HMAC, keyed once per key: each signature copies the keyed state
    instead of hashing the key again (same bytes, a third of the cost)."""

    def __init__(self) -> None:
        # hashlib.sha1 is itsdangerous's default digest, passed as the C constructor so
        # that `hmac` takes OpenSSL's fast path instead of the pure-Python one.
        super().__init__(hashlib.sha1)
        self._keyed: dict[bytes, hmac.HMAC] = {}

    def get_signature(self, key: bytes, value: bytes) -> bytes:
        keyed = self._keyed.get(key)
        if keyed is None:
            keyed = self._keyed[key] = hmac.new(key, digestmod=self.digest_method)
        mac = keyed.copy()
        mac.update(value)
        return mac.digest()


class _CompactJSON:
    """itsdangerous's token JSON (no spaces, non-ASCII kept), built faster: `json.dumps`
    with options builds a new encoder every call, a tenth of a token's cost."""

    _encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))

    def dumps(self, obj: Any) -> str:
        if isinstance(obj, list) and all(type(item) is str for item in obj):
            # Every payload we sign: the very string the encoder makes, with its own quoting.
            return "[" + ",".join(map(encode_basestring, obj)) + "]"
        return self._encoder.encode(obj)

    def loads(self, payload: str | bytes) -> Any:
        return json.loads(payload)


class _TokenSerializer(URLSafeSerializer):
    """URLSafeSerializer that never tries to compress (half of a stock token's cost).

    A payload is an id and a list name, which zlib almost never shortens; where it would,
    the token is a few characters longer. Loading is unchanged, so compressed tokens in
    links already sent still verify.
    """

    def dump_payload(self, obj: Any) -> bytes:
        return base64_encode(self.serializer.dumps(obj))


def _serializer(settings: Settings, purpose: Purpose) -> URLSafeSerializer:
    if not settings.secret_keys:
        raise ConfigError(
            "The setting secret_keys is empty: set NEWSLETTER_SECRET_KEY to a long random "
            "value (several, comma-separated and newest first, while rotating keys)."
        )
    return _keyed_serializer(settings.secret_keys, purpose)


@lru_cache(maxsize=16)
def _keyed_serializer(secret_keys: tuple[Secret, ...], purpose: Purpose) -> URLSafeSerializer:
    # itsdangerous signs with the last key and verifies with all of them.
    keys = [key.reveal() for key in reversed(secret_keys)]
    # The salt separates purposes: a confirmation token cannot unsubscribe, and vice versa.
    return _TokenSerializer(
        keys,
        salt=f"newsletter.{purpose}",
        serializer=_CompactJSON(),
        signer=_OnceDerivedSigner,
        signer_kwargs={"algorithm": _PreparedHMAC()},
    )


@lru_cache(maxsize=16)
def _timed_serializer(secret_keys: tuple[Secret, ...]) -> URLSafeTimedSerializer:
    # Stock itsdangerous: one confirmation token per form post, speed does not matter here.
    keys = [key.reveal() for key in reversed(secret_keys)]
    return URLSafeTimedSerializer(keys, salt="newsletter.confirm")


def _timed(settings: Settings) -> URLSafeTimedSerializer:
    _serializer(settings, "confirm")  # the same error when no key is set
    return _timed_serializer(settings.secret_keys)


def sign(settings: Settings, purpose: Purpose, public_id: str, list_name: str) -> str:
    if purpose == "confirm":
        return _timed(settings).dumps([public_id, list_name])
    # What URLSafeSerializer.dumps does, minus building a new Signer for every token.
    serializer = _serializer(settings, purpose)
    payload = serializer.dump_payload([public_id, list_name])
    return _signer(serializer).sign(payload).decode("ascii")


@lru_cache(maxsize=16)
def _signer(serializer: URLSafeSerializer) -> Signer:
    return serializer.make_signer()


def verify(settings: Settings, purpose: Purpose, token: str) -> TokenClaims:
    """The claims of a token, or TokenError with the same text whatever went wrong
    (an expired confirmation token included)."""
    try:
        if purpose == "confirm":
            max_age = round(settings.confirm_token_days * 86400)
            payload = _timed(settings).loads(token, max_age=max_age)
        else:
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


def unsubscribe_url(settings: Settings, public_id: str, list_name: str) -> str:
    token = sign(settings, "unsubscribe", public_id, list_name)
    return urls.unsubscribe_link(settings, token)


def unsubscribe_links(settings: Settings, list_name: str) -> Callable[[str], str]:
    """`unsubscribe_url` for one list, as a send calls it once per recipient.

    The same URLs, assembled in one step from itsdangerous's own pieces (the derived key,
    its separator and base64) with everything shared by the whole send computed once:
    half the cost of `sign` per token. A test holds both to the same bytes.
    """
    signer = _signer(_serializer(settings, "unsubscribe"))
    keyed = hmac.new(signer.derive_key(), digestmod=hashlib.sha1)  # as _PreparedHMAC
    prefix = urls.unsubscribe_link(settings, "")
    if html.escape(prefix) != prefix:
        # load_settings refuses such a base_url; Settings made by hand may not have been.
        raise ConfigError(
            f"base_url {settings.base_url!r} holds characters HTML escapes (& < > \" '); "
            "unsubscribe links are placed in the HTML part as they are."
        )
    tail = "," + encode_basestring(list_name) + "]"  # the payload is [subscriber id, list]

    def link(public_id: str) -> str:
        payload = base64_encode("[" + encode_basestring(public_id) + tail)
        mac = keyed.copy()
        mac.update(payload)
        return prefix + (payload + signer.sep + base64_encode(mac.digest())).decode("ascii")

    return link


def confirm_url(settings: Settings, public_id: str, list_name: str) -> str:
    token = sign(settings, "confirm", public_id, list_name)
    return urls.confirm_link(settings, token)
