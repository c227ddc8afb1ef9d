"""Settings layering and secret hygiene."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Secret, load_settings
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
        tmp_path, env={"NEWSLETTER_SECRET_KEY": f"{new}, {old}", "SENDGRID_API_KEY": "SG.zz"}
    )
    assert [k.reveal() for k in settings.secret_keys] == [new, old]
    assert isinstance(settings.sendgrid_api_key, Secret)
    shown = repr(settings) + str(settings)
    assert new not in shown
    assert "SG.zz" not in shown


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
