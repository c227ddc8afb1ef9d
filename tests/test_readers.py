"""Made-up readers (readers.py) and every public link (urls.py): one recipe each.

None of the readers nobody subscribed as may carry a link that unsubscribes anybody, and
every link is `base_url` joined with exactly one '/', whatever form base_url takes.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter import readers, tokens, urls
from newsletter.config import Secret, Settings
from newsletter.errors import TokenError
from newsletter.models import Recipient
from tests.conftest import TEST_KEYS

HOSTS = st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z]{2,8}){1,2}", fullmatch=True)
PREFIXES = st.lists(st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True), max_size=3)


def site(host: str, prefix: list[str], slashes: int) -> Settings:
    base = "https://" + host + "".join(f"/{p}" for p in prefix) + "/" * slashes
    keys = tuple(Secret(k) for k in TEST_KEYS.split(","))
    return Settings(root=Path(), secret_keys=keys, base_url=base)


def made_up(settings: Settings) -> list[Recipient]:
    return [
        readers.sample_reader(settings),
        readers.made_up_reader("Aida,aida@example.org", settings),
        readers.previewed_subscriber("dana@example.org", "Dana Z", "pub123", settings),
        readers.proof_reader("editor@newsroom.test", settings),
        readers.anonymous_reader(settings),
    ]


@given(host=HOSTS, prefix=PREFIXES, slashes=st.integers(0, 3))
def test_made_up_readers_unsubscribe_nobody(host: str, prefix: list[str], slashes: int) -> None:
    settings = site(host, prefix, slashes)
    base = settings.base_url.rstrip("/")
    for reader in made_up(settings):
        link = reader.unsubscribe_url
        assert link.startswith(base + "/")
        assert "//" not in link.removeprefix("https://")
        with pytest.raises(TokenError):
            tokens.verify(settings, "unsubscribe", link.rsplit("/", 1)[1])


@given(host=HOSTS, prefix=PREFIXES, slashes=st.integers(0, 3), public_id=st.text(min_size=1))
def test_every_link_is_base_url_and_one_slash(
    host: str, prefix: list[str], slashes: int, public_id: str
) -> None:
    settings = site(host, prefix, slashes)
    path = urlsplit(settings.base_url).path.rstrip("/")
    links = {
        "/u/": tokens.unsubscribe_url(settings, public_id, "weekly"),
        "/confirm/": tokens.confirm_url(settings, public_id, "weekly"),
        "/issues/": urls.web_copy_link(settings, "2025-12-10"),
        urls.PREVIEW_ONLY_PATH: urls.preview_only_link(settings),
        urls.TEST_COPY_PATH: urls.test_copy_link(settings),
    }
    for expected, link in links.items():
        parts = urlsplit(link)
        assert (parts.scheme, parts.netloc) == ("https", host)
        assert parts.path.startswith(path + expected), link
    # The fast per-send builder makes the very same links as the one-off one.
    assert tokens.unsubscribe_links(settings, "weekly")(public_id) == links["/u/"]
