"""The client-support gate: small emails with one known feature each, against the vendored
Can I Email data, and the command that refreshes that data."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import lxml.html
import pytest

from newsletter.clients import FAMILIES, check_clients, families, load
from newsletter.clients.dataset import DATA_DIR
from newsletter.clients.refresh import vendor
from newsletter.config import load_settings
from newsletter.errors import ConfigError

EVERY_CLIENT = families(FAMILIES)


def email(body: str, head: str = "") -> lxml.html.HtmlElement:
    """A small email: a doctype-less page with `body` in a layout table."""
    return lxml.html.document_fromstring(
        f'<html lang="en" dir="ltr"><head><title>t</title>{head}</head><body>'
        f'<table role="presentation"><tr><td>{body}</td></tr></table></body></html>'
    )


def test_display_flex_is_a_warning_for_outlook_on_windows_naming_what_falls_back() -> None:
    doc = email('<div style="display:flex"><p>One</p><p>Two</p></div>')
    report = check_clients(doc, families(["outlook-windows", "apple-mail-ios"]))
    [flex] = [g for g in report.gaps if g.slug == "css-display-flex"]
    assert flex.client == "outlook-windows"
    assert flex.support == "not supported"
    assert flex.count == 1
    assert flex.written == ("display:flex",)
    assert flex.selector == (
        "body > table:nth-child(1) > tbody > tr:nth-child(1) > td:nth-child(1) > div:nth-child(1)"
    )
    assert flex.snippet == '<div style="display:flex">'
    assert flex.fallback == "the flex items stack one under another as plain blocks"
    assert flex.is_warning
    [(family, warned)] = [(f, g) for f, g in report.warnings if g.slug == "css-display-flex"]
    assert warned.message(family.name) == (
        "Outlook (Windows): display:flex is not supported (used 1×, first "
        '<div style="display:flex">); there the flex items stack one under another as '
        "plain blocks."
    )
    # Apple Mail on iOS lays flex out: nothing about it for that client.
    assert not [g for g in report.for_client("apple-mail-ios") if g.slug == "css-display-flex"]


def test_a_partial_border_radius_is_reported_with_the_dataset_note_and_is_no_warning() -> None:
    doc = email('<a href="https://x.example" style="border-radius:4px">Go</a>')
    report = check_clients(doc, families(["yahoo", "outlook-windows"]))
    radius = {g.client: g for g in report.gaps if g.slug == "css-border-radius"}
    assert radius["yahoo"].support == "partial"
    assert radius["yahoo"].notes == (
        "Partial support. Shorthand for setting elliptical borders with the slash `/` "
        "notation is not supported e.g. `border-radius: 27% 73% 70% 30% / 30% 34% 66% 70%;`.",
    )
    assert not radius["yahoo"].is_warning  # corners, not layout
    assert radius["outlook-windows"].support == "not supported"
    assert radius["outlook-windows"].notes[0].startswith("Round corners can be used in VML")
    assert not radius["outlook-windows"].is_warning  # square corners change no layout
    listed = report.as_dict()["clients"]
    yahoo = next(c for c in listed if c["client"] == "yahoo")
    assert "css-border-radius" in [g["feature"] for g in yahoo["partial"]]
    assert "css-border-radius" not in [g["feature"] for g in yahoo["not_supported"]]


def test_media_queries_in_a_style_block_fall_back_to_the_desktop_layout() -> None:
    head = "<style>@media (max-width: 480px) { .col { width: 100% !important; } }</style>"
    doc = email("<p>Text</p>", head=head)
    report = check_clients(doc, families(["outlook-windows"]))
    media = next(g for g in report.gaps if g.slug == "css-at-media")
    assert media.selector is None  # a rule applies to no single element
    assert media.is_warning
    assert "columns do not stack on phones" in (media.fallback or "")
    # The rule inside the query is parsed too: its !important is a use of its own.
    assert "css-important" in {g.slug for g in check_clients(doc, EVERY_CLIENT).gaps}


def test_longhands_count_as_their_shorthand_and_values_as_their_own_feature() -> None:
    doc = email(
        '<td style="padding-left:8px;border-top-left-radius:3px;'
        'background-image:linear-gradient(red, blue);width:calc(100% - 2px)">x</td>'
    )
    used = {g.slug for g in check_clients(doc, EVERY_CLIENT).gaps}
    assert {"css-border-radius", "css-linear-gradient", "css-unit-calc"} <= used


def test_the_setting_chooses_the_clients(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, env={"NEWSLETTER_CLIENT_FAMILIES": "mail-ru,yahoo"})
    chosen = families(settings.client_families)
    assert [f.key for f in chosen] == ["mail-ru", "yahoo"]
    doc = email('<div style="display:flex">x</div>')
    report = check_clients(doc, chosen)
    assert {g.client for g in report.gaps} <= {"mail-ru", "yahoo"}
    assert [c["client"] for c in report.as_dict()["clients"]] == ["mail-ru", "yahoo"]
    with pytest.raises(ConfigError, match=r"setting client_families: unknown client family "):
        families(["outlook-windows", "lotus-notes"])


def test_a_fully_supported_email_has_no_gaps_in_apple_mail_on_macos() -> None:
    doc = email("<p>Plain text</p>")
    assert check_clients(doc, families(["apple-mail-macos"])).gaps == ()


def test_the_vendored_dataset_carries_its_licence_source_and_date() -> None:
    data = load()
    assert len(data.features) > 250
    assert data.features["css-display-flex"].title == "display:flex"
    licence = (DATA_DIR / "LICENSE").read_text(encoding="utf-8")
    assert licence.startswith("MIT License")
    source = json.loads((DATA_DIR / "SOURCE.json").read_text(encoding="utf-8"))
    assert source["package"].startswith("caniemail@")
    assert source["dataset_updated"] == data.updated


def _npm_tarball(path: Path, dataset: dict[str, object]) -> Path:
    files = {
        "package/package.json": json.dumps(
            {"name": "caniemail", "version": "9.9.9", "license": "MIT", "repository": "x/y"}
        ).encode(),
        "package/data/caniemail.json": json.dumps(dataset).encode(),
        "package/LICENSE": b"MIT License\n\nCopyright (c) test\n",
    }
    with tarfile.open(path, "w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_refresh_vendors_the_data_licence_and_source_from_an_npm_tarball(tmp_path: Path) -> None:
    dataset: dict[str, object] = {
        "api_version": "1",
        "last_update_date": "2030-01-02 03:04:05 +0000",
        "data": [],
    }
    tarball = _npm_tarball(tmp_path / "caniemail-9.9.9.tgz", dataset)
    out = tmp_path / "data"
    out.mkdir()
    source = vendor(tarball, out)
    assert source["package"] == "caniemail@9.9.9"
    assert json.loads((out / "caniemail.json").read_text()) == dataset
    assert (out / "LICENSE").read_text().startswith("MIT License")
    written = json.loads((out / "SOURCE.json").read_text())
    assert written["dataset_updated"] == "2030-01-02 03:04:05 +0000"
