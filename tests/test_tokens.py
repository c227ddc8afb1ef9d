"""Unsubscribe and confirmation tokens: signing, rotation, tampering."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer, URLSafeTimedSerializer

from newsletter import tokens
from newsletter.audience import new_public_id
from newsletter.config import Secret, Settings
from newsletter.errors import ConfigError, TokenError


def keyed(keys: str, tmp_path: Path | None = None) -> Settings:
    """Settings with these keys, made by hand: load_settings refuses keys this short (see
    test_trust_web), and the tokens pinned below were signed with them."""
    secrets = tuple(Secret(key.strip()) for key in keys.split(",") if key.strip())
    return Settings(root=tmp_path or Path(), secret_keys=secrets, base_url="https://n.test/")


def test_round_trip_carries_id_and_list_not_the_address() -> None:
    settings = keyed("k-new")
    token = tokens.sign(settings, "unsubscribe", "pub123", "weekly")
    claims = tokens.verify(settings, "unsubscribe", token)
    assert (claims.public_id, claims.list_name) == ("pub123", "weekly")
    assert "@" not in token


def test_unsubscribe_url_uses_the_base_url() -> None:
    url = tokens.unsubscribe_url(keyed("k-new"), "pub123", "weekly")
    assert url.startswith("https://n.test/u/")
    claims = tokens.verify(keyed("k-new"), "unsubscribe", url.rsplit("/", 1)[1])
    assert claims.public_id == "pub123"


def test_old_tokens_still_work_after_rotation() -> None:
    old = tokens.sign(keyed("k-old"), "unsubscribe", "pub123", "weekly")
    rotated = keyed("k-new, k-old")
    assert tokens.verify(rotated, "unsubscribe", old).public_id == "pub123"
    fresh = tokens.sign(rotated, "unsubscribe", "pub123", "weekly")
    assert tokens.verify(keyed("k-new"), "unsubscribe", fresh).public_id == "pub123"
    with pytest.raises(TokenError):
        tokens.verify(keyed("k-old"), "unsubscribe", fresh)


def test_key_dropped_from_the_list_no_longer_verifies() -> None:
    old = tokens.sign(keyed("k-old"), "unsubscribe", "pub123", "weekly")
    with pytest.raises(TokenError, match=tokens.INVALID):
        tokens.verify(keyed("k-new"), "unsubscribe", old)


def test_purposes_do_not_mix() -> None:
    settings = keyed("k-new")
    confirm = tokens.sign(settings, "confirm", "pub123", "weekly")
    with pytest.raises(TokenError):
        tokens.verify(settings, "unsubscribe", confirm)


def test_missing_key_names_the_setting() -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        tokens.sign(keyed(""), "unsubscribe", "pub123", "weekly")


def _verify_or_message(settings: Settings, token: str) -> str | tuple[str, str]:
    try:
        claims = tokens.verify(settings, "unsubscribe", token)
    except TokenError as exc:
        return str(exc)
    return (claims.public_id, claims.list_name)


@given(st.text(max_size=80))
def test_tampering_never_yields_other_claims(junk: str) -> None:
    """A changed token fails with the one message, or (base64 ignores a last char's spare
    bits) still says exactly what was signed; it never says anything else."""
    settings = keyed("k-new")
    good = tokens.sign(settings, "unsubscribe", "pub123", "weekly")
    for candidate in (junk, good[:-1] + junk, junk + good, good.replace(".", junk, 1)):
        outcome = _verify_or_message(settings, candidate)
        assert outcome in {tokens.INVALID, ("pub123", "weekly")}


def test_a_forged_payload_is_refused() -> None:
    settings = keyed("k-new")
    good = tokens.sign(settings, "unsubscribe", "pub123", "weekly")
    forged = tokens.sign(keyed("attacker"), "unsubscribe", "pub999", "weekly")
    spliced = forged.split(".")[0] + "." + good.split(".")[1]
    for candidate in (forged, spliced):
        with pytest.raises(TokenError, match=tokens.INVALID):
            tokens.verify(settings, "unsubscribe", candidate)


# Pinned before signing was sped up: links already in sent issues carry tokens like these.
# (Confirmation tokens carry their signing time since they expire; none is pinned.)
PINNED = {
    ("unsubscribe", "pub123"): "WyJwdWIxMjMiLCJ3ZWVrbHkiXQ.4TtoLevTVLK2uAd3snbP6pRjbCw",
}
# What stock itsdangerous made of a payload zlib could shorten (the leading dot says
# compressed); tokens are no longer compressed, but links carrying this one must still work.
COMPRESSED = ("a" * 32, ".eJyLVkokAJR0lMpTU7NzKpViAXaPEB4.ZMRAGJ_u0i6uoYxNr5x-CacgpJw")


@pytest.mark.parametrize(("purpose", "public_id"), list(PINNED))
def test_tokens_are_byte_identical_to_those_already_sent(
    purpose: tokens.Purpose, public_id: str
) -> None:
    settings = keyed("k-new, k-old")
    for _ in range(2):  # the first call derives and prepares the key, the second reuses it
        token = tokens.sign(settings, purpose, public_id, "weekly")
        assert token == PINNED[(purpose, public_id)]
        assert tokens.verify(settings, purpose, token).public_id == public_id


def test_compressed_tokens_already_sent_still_verify() -> None:
    settings = keyed("k-new, k-old")
    public_id, sent = COMPRESSED
    assert tokens.verify(settings, "unsubscribe", sent) == tokens.TokenClaims(public_id, "weekly")
    fresh = tokens.sign(settings, "unsubscribe", public_id, "weekly")
    assert not fresh.startswith(".")  # signed afresh: never compressed
    assert tokens.verify(settings, "unsubscribe", fresh) == tokens.TokenClaims(public_id, "weekly")


@given(st.text(max_size=40), st.text(max_size=20), st.sampled_from(["unsubscribe", "confirm"]))
def test_tokens_are_stock_itsdangerous_tokens(
    public_id: str, list_name: str, purpose: tokens.Purpose
) -> None:
    """Stock URLSafeSerializer over the newest key reads ours, and we read its; where it does
    not compress (every real id: random, 16 characters), the bytes are the same.
    Confirmation tokens are stock URLSafeTimedSerializer tokens (they expire)."""
    settings = keyed("k-new, k-old")
    kind = URLSafeTimedSerializer if purpose == "confirm" else URLSafeSerializer
    stock = kind(["k-old", "k-new"], salt=f"newsletter.{purpose}")
    ours = tokens.sign(settings, purpose, public_id, list_name)
    assert stock.loads(ours) == [public_id, list_name]
    theirs = stock.dumps([public_id, list_name])
    assert tokens.verify(settings, purpose, theirs) == tokens.TokenClaims(public_id, list_name)
    if not theirs.startswith(".") and purpose == "unsubscribe":
        assert ours == theirs


def test_real_subscriber_ids_sign_exactly_as_stock_itsdangerous() -> None:
    settings = keyed("k-new")
    stock = URLSafeSerializer(["k-new"], salt="newsletter.unsubscribe")
    for _ in range(2000):
        public_id = new_public_id()
        expected = stock.dumps([public_id, "weekly"])
        assert tokens.sign(settings, "unsubscribe", public_id, "weekly") == expected


@given(st.text(max_size=40), st.text(max_size=20))
def test_a_sends_link_maker_gives_exactly_the_unsubscribe_url(
    public_id: str, list_name: str
) -> None:
    settings = keyed("k-new, k-old")
    link = tokens.unsubscribe_links(settings, list_name)(public_id)
    assert link == tokens.unsubscribe_url(settings, public_id, list_name)
    token = link.removeprefix("https://n.test/u/")
    assert tokens.verify(settings, "unsubscribe", token) == tokens.TokenClaims(public_id, list_name)


def test_a_link_maker_needs_a_key_before_the_first_recipient() -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SECRET_KEY"):
        tokens.unsubscribe_links(keyed(""), "weekly")


def test_a_link_maker_refuses_a_base_url_html_would_escape() -> None:
    """Settings made by hand skip load_settings' check; the links would land in HTML as is."""
    odd = dataclasses.replace(keyed("k-new"), base_url="https://n.test/?a=1&b=2")
    with pytest.raises(ConfigError, match="base_url"):
        tokens.unsubscribe_links(odd, "weekly")
