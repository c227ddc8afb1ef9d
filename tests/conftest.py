"""Shared fixtures. Golden files change only with `pytest --update-golden`."""

from __future__ import annotations

from pathlib import Path

import pytest

from newsletter.config import Settings, load_settings

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


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throwaway copy of the sample project (content, templates, issues) to break at will."""
    import shutil

    root = tmp_path / "project"
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    return root


@pytest.fixture
def settings(project: Path) -> Settings:
    return load_settings(project, env={})
