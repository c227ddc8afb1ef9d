"""Settings layering and secret hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.config import MIN_API_KEY, Secret, load_settings
from newsletter.errors import ConfigError


def test_layers_defaults_file_env_flags(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text('from_name = "File"\nsmtp_port = 2525\n')
    settings = load_settings(
        tmp_path,
        env={"NEWSLETTER_SMTP_PORT": "2626", "NEWSLETTER_BASE_URL": "https://env.example"},
        overrides={"base_url": "https://flag.example", "build_dir": None},
    )
    assert settings.from_name == "File"
    assert settings.smtp_port == 2626
    assert settings.base_url == "https://flag.example"
    assert settings.path("build_dir") == tmp_path.resolve() / "build"


def test_secret_keys_are_a_list_newest_first_and_never_printed(tmp_path: Path) -> None:
    new, old = (
        "nwkpWPtU7Oyl18fB8wBL_scrgqsis2OW4A7rBQ20wvw",
        "7nJAeE2k6pWH5yXu_8XnedmairCvet_Wabhp1yo64X8",
    )
    settings = load_settings(
        tmp_path,
        env={
            "NEWSLETTER_SECRET_KEY": f"{new}, {old}",
            "SENDGRID_API_KEY": "SG.zz-a-key-long-enough-zz",
        },
    )
    assert [k.reveal() for k in settings.secret_keys] == [new, old]
    assert isinstance(settings.sendgrid_api_key, Secret)
    shown = repr(settings) + str(settings)
    assert new not in shown
    assert "SG.zz-a-key-long-enough-zz" not in shown


def test_unknown_key_in_config_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text("form_name = 'typo'\n")
    with pytest.raises(ConfigError, match=r"newsletter\.toml.*form_name"):
        load_settings(tmp_path, env={})


def test_malformed_number_names_its_origin(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="NEWSLETTER_SMTP_PORT"):
        load_settings(tmp_path, env={"NEWSLETTER_SMTP_PORT": "twenty-five"})


@pytest.mark.parametrize("key", ["sendgrid_api_key", "secret_keys", "smtp_password"])
def test_secrets_in_the_config_file_are_refused(tmp_path: Path, key: str) -> None:
    (tmp_path / "newsletter.toml").write_text(f'{key} = "SG.committed-by-mistake"\n')
    with pytest.raises(ConfigError, match=f"{key} is a secret .* environment") as info:
        load_settings(tmp_path, env={})
    assert "SG.committed-by-mistake" not in str(info.value)


def test_database_password_is_not_in_the_repr(tmp_path: Path) -> None:
    url = "postgresql+psycopg://editor:hunter2@db.internal/newsletter"
    settings = load_settings(tmp_path, env={"NEWSLETTER_DATABASE_URL": url})
    assert settings.database == url
    assert "hunter2" not in repr(settings)


@pytest.mark.parametrize(
    "url",
    [
        "news.example.org",  # no scheme: links would be relative
        "ftp://news.example.org",
        "https://news.example.org/?list=weekly",  # "/u/TOKEN" would land in the query
        "https://news.example.org/#top",
        'https://news.example.org/a"b',  # would end the href in the HTML part
        "https://news.example.org/a&b",
    ],
)
def test_a_base_url_links_cannot_be_built_on_is_refused(tmp_path: Path, url: str) -> None:
    (tmp_path / "newsletter.toml").write_text(f"base_url = '{url}'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"newsletter\.toml key 'base_url'.*http\(s\) address"):
        load_settings(tmp_path, env={})


@pytest.mark.parametrize("url", ["https://news.example.org", "http://127.0.0.1:8000/news/"])
def test_ordinary_base_urls_are_accepted(tmp_path: Path, url: str) -> None:
    assert load_settings(tmp_path, env={"NEWSLETTER_BASE_URL": url}).base_url == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("api.sendgrid.com", "scheme"),  # no scheme: urllib cannot open it
        ("ftp://api.sendgrid.com", "scheme"),
        ("http://127.0.0.1:notaport", "port"),  # once marked a whole send `unknown`
        ("http://127.0.0.1:99999", "port"),
        ("https://", "host"),
        ("https://api.sendgrid.com/?region=eu", "query"),
        ("https://api.sendgrid.com/#v3", "fragment"),
        ("https://api.sendgrid.com/v3 ", "space"),
        ("https://api.send\ngrid.com", "control"),
        # The mailer adds /v3/mail/send: with it in the base, every batch was a 404 `failed`.
        ("https://api.sendgrid.com/v3", "the base URL, e.g. https://api.sendgrid.com"),
        ("https://api.sendgrid.com/v3/", "the base URL"),
        ("https://api.sendgrid.com/v3/mail/send", "the base URL"),
        ("https://proxy.example/sendgrid/V3", "the base URL"),
    ],
)
def test_a_sendgrid_url_urllib_cannot_open_is_refused_when_settings_load(
    tmp_path: Path, url: str, why: str
) -> None:
    with pytest.raises(ConfigError, match=rf"NEWSLETTER_SENDGRID_API_URL: sendgrid_api_url.*{why}"):
        load_settings(tmp_path, env={"NEWSLETTER_SENDGRID_API_URL": url})


def test_a_sendgrid_url_with_a_password_is_refused_without_repeating_it(tmp_path: Path) -> None:
    (tmp_path / "newsletter.toml").write_text("sendgrid_api_url = 'https://me:hunter2@api.x'\n")
    with pytest.raises(ConfigError, match="user name or password") as info:
        load_settings(tmp_path, env={})
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    "url", ["https://api.sendgrid.com", "http://127.0.0.1:8025", "https://eu.example/sg/"]
)
def test_ordinary_sendgrid_urls_are_accepted(tmp_path: Path, url: str) -> None:
    settings = load_settings(tmp_path, env={"NEWSLETTER_SENDGRID_API_URL": url})
    assert settings.sendgrid_api_url == url


GOOD_KEY = "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"
# Whitespace, line ends, controls, DEL, Latin-1, the BOM and zero-width and RTL marks.
BAD_KEY_CHARACTERS = st.sampled_from(
    [" ", "\n", "\r", "\t", "\x00", "\x1b", "\x7f", "é", "\u00a0", "\ufeff", "\u200b", "\u202e"]
)


@given(
    bad=BAD_KEY_CHARACTERS,
    at=st.integers(min_value=0, max_value=len(GOOD_KEY)),
)
def test_a_key_that_cannot_go_into_a_header_is_refused_and_never_echoed(bad: str, at: int) -> None:
    key = GOOD_KEY[:at] + bad + GOOD_KEY[at:]
    with pytest.raises(ConfigError, match="SENDGRID_API_KEY") as info:
        load_settings(Path("/nonexistent"), env={"SENDGRID_API_KEY": key})
    message = str(info.value) + repr(info.value.__cause__) + repr(info.value.__context__)
    # Not the key, nor either side of the bad character when that side is key-sized.
    for part in (key, key.strip(), GOOD_KEY, GOOD_KEY[:at], GOOD_KEY[at:]):
        assert len(part) < 12 or part not in message
    assert f"character {at + 1} of {len(key)}" in message


@given(key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=MIN_API_KEY))
def test_any_printable_ascii_key_is_taken_as_is(key: str) -> None:
    settings = load_settings(Path("/nonexistent"), env={"SENDGRID_API_KEY": key})
    assert settings.sendgrid_api_key == Secret(key)


@pytest.mark.parametrize("seconds", ["0", "-1", "nan", "inf", "1e308"])
def test_a_sendgrid_timeout_must_be_positive_and_finite(tmp_path: Path, seconds: str) -> None:
    with pytest.raises(ConfigError, match=r"NEWSLETTER_SENDGRID_TIMEOUT.*positive"):
        load_settings(tmp_path, env={"NEWSLETTER_SENDGRID_TIMEOUT": seconds})


@given(key=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=MIN_API_KEY - 1))
def test_a_key_too_short_to_be_a_sendgrid_key_is_refused_and_never_echoed(key: str) -> None:
    # A cut paste; and a key this short could not be told from ordinary words when redacted.
    if not key:
        return  # an empty SENDGRID_API_KEY means "no key" (the outbox), not a short one
    with pytest.raises(ConfigError, match=rf"SENDGRID_API_KEY: the key is {len(key)} char") as info:
        load_settings(Path("/nonexistent"), env={"SENDGRID_API_KEY": key})
    assert len(key) < 8 or key not in str(info.value)
