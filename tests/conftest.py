"""Shared fixtures. Golden files change only with `pytest --update-golden`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings
from newsletter.models import RenderedEmail
from tests.fakes.sendgrid_server import FakeSendGrid, running

REPO = Path(__file__).resolve().parent.parent


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="Rewrite tests/golden/ from the current output (review the diff before committing).",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture
def repo() -> Path:
    return REPO


# --- dispatch: a fake SendGrid, a rendered email, settings pointing at the fake ------------

CANARY_KEY = "SG.canary-7f3d9b1e5a2c4d6f8a0b.never-print-me-9c1e3a5b7d"


@pytest.fixture
def fake_sendgrid() -> Iterator[FakeSendGrid]:
    with running(CANARY_KEY) as fake:
        yield fake


@pytest.fixture
def sendgrid_settings(tmp_path: Path, fake_sendgrid: FakeSendGrid) -> Settings:
    return load_settings(
        tmp_path,
        env={
            "SENDGRID_API_KEY": CANARY_KEY,
            "NEWSLETTER_SENDGRID_API_URL": fake_sendgrid.url,
            "NEWSLETTER_SENDGRID_TIMEOUT": "1.0",
        },
    )


@pytest.fixture
def rendered() -> RenderedEmail:
    return RenderedEmail(
        issue_name="2025-12-10",
        subject="Central Asia Weekly: apricots, rates and a trafficking report",
        preheader="This week in Central Asia",
        from_name="Central Asia Weekly",
        from_email="digest@news.example.org",
        html='<p>Hello -first_name_html-</p><a href="-unsubscribe_url_html-">Unsubscribe</a>',
        text="Hello -first_name-\nUnsubscribe: -unsubscribe_url-\n",
        mjml="<mjml></mjml>",
        content_hash="c0ffee",
    )
