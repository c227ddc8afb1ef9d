"""Preflight: one test per check, each with an input that trips it and one that does not."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from newsletter import build, preflight
from newsletter.config import Settings, load_settings
from newsletter.errors import PreflightError, Problem
from newsletter.models import (
    Article,
    Image,
    Issue,
    IssueSpec,
    Query,
    Rate,
    RateSnapshot,
    RenderedEmail,
    Section,
    SectionSpec,
)

SETTINGS = Settings(root=Path("/nonexistent"))
DATE = dt.date(2025, 12, 10)
ADDRESS = SETTINGS.postal_address


def article(slug: str, date: dt.date = DATE) -> Article:
    return Article(
        slug=slug,
        title=f"Title {slug}",
        date=date,
        url=f"https://news.example.org/{slug}/",
        summary=f"Summary of {slug}.",
        body="Body.",
        image=Image(f"https://news.example.org/{slug}.jpg", f"Photo for {slug}", 1200, 675),
        path=Path(f"content/articles/{slug}.md"),
    )


def snapshot(date: dt.date = DATE, **values: str) -> RateSnapshot:
    values = values or {
        "KGS": "0.01144",
        "KZT": "0.00193",
        "TJS": "0.10811",
        "UZS": "0.0000812",
        "TMT": "0.28490",
    }
    rates = tuple(Rate(c, Decimal(v), Decimal("0")) for c, v in values.items())
    as_of = dt.datetime(date.year, date.month, date.day, 9, tzinfo=dt.UTC)
    return RateSnapshot(date, "USD", as_of, "test", rates, Path(f"content/rates/{date}.yaml"))


def issue(*articles: Article, rates: RateSnapshot | None = None, days: int = 7) -> Issue:
    articles = articles or (article("alpha"), article("beta"))
    spec = IssueSpec(
        name="2025-12-10",
        path=Path("issues/2025-12-10.yaml"),
        title="Weekly",
        date=DATE,
        subject="Central Asia this week: apricots and trade",
        preheader="Dried apricots reach China; Tajikistan backs small exporters.",
        intro="Hello",
        rates=DATE,
        sections=(SectionSpec("News", query=Query(days=days)),),
    )
    snap = rates or snapshot()
    # A full 7-day trend ending at the snapshot, as a resolved issue has.
    week = tuple(
        dataclasses.replace(snap, date=snap.date - dt.timedelta(days=n)) for n in range(6, -1, -1)
    )
    return Issue(spec, (Section("News", tuple(articles)),), snap, week)


def card(a: Article) -> str:
    link = f"{a.url}?utm_source=newsletter"
    assert a.image is not None
    return f"""
    <div class="card" style="margin:0px auto;max-width:600px;">
      <div style="font-size:0px;"><a href="{link}"><img src="{a.image.url}" alt="{a.image.alt}"
        width="568"></a></div>
      <div style="font-size:20px;"><a href="{link}">{a.title}</a></div>
      <div style="font-size:16px;">{a.summary} <a href="{link}">Read more</a></div>
    </div>"""


def html_for(the_issue: Issue, *, footer: str | None = None, extra: str = "") -> str:
    footer = (
        footer
        if footer is not None
        else f"""
      <div style="font-size:13px;">{ADDRESS}<br>
        <a href="https://news.example.org/issues/2025-12-10/">View in browser</a> ·
        <a href="-unsubscribe_url-">Unsubscribe</a></div>"""
    )
    cards = "".join(card(a) for a in the_issue.articles)
    return f"""<!doctype html><html lang="en"><head><title>Weekly</title>
    <style>@media only screen and (min-width:480px) {{ .c {{ width:100% !important; }} }}</style>
    </head><body><div style="display:none;font-size:1px;">{the_issue.spec.preheader}</div>
    <div style="font-size:16px;">Hello -first_name_html-,</div>{cards}{extra}{footer}
    </body></html>"""


def text_for(the_issue: Issue) -> str:
    lines = ["Hello -first_name-,"]
    for a in the_issue.articles:
        lines += [a.title, f"{a.url}?utm_source=newsletter", ""]
    lines += [
        ADDRESS,
        "View in browser: https://news.example.org/issues/2025-12-10/",
        "Unsubscribe: -unsubscribe_url-",
    ]
    return "\n".join(lines)


def email(
    the_issue: Issue, html: str | None = None, text: str | None = None, **fields: str
) -> RenderedEmail:
    return RenderedEmail(
        issue_name=the_issue.name,
        subject=fields.get("subject", the_issue.spec.subject),
        preheader=fields.get("preheader", the_issue.spec.preheader),
        from_name="Central Asia Weekly",
        from_email="digest@news.example.org",
        html=html if html is not None else html_for(the_issue),
        text=text if text is not None else text_for(the_issue),
        mjml="",
        content_hash="0",
    )


def run(
    the_issue: Issue | None = None,
    *,
    history: tuple[preflight.PastIssue, ...] = (),
    settings: Settings = SETTINGS,
    **kwargs: str,
) -> list[Problem]:
    the_issue = the_issue or issue()
    return list(
        preflight.check(the_issue, email(the_issue, **kwargs), settings, history=history).problems
    )


def messages(problems: list[Problem]) -> str:
    return "\n".join(str(p) for p in problems)


def test_a_clean_issue_has_no_findings() -> None:
    assert run() == []


def test_size_warns_near_gmail_clip_and_errors_above_it() -> None:
    the_issue = issue()
    padding = "x" * (95 * 1024)
    near = run(the_issue, html=html_for(the_issue, extra=f"<!-- {padding} -->"))
    over = run(the_issue, html=html_for(the_issue, extra=f"<!-- {padding}{padding} -->"))
    assert [p.severity for p in near] == ["warning"]
    assert "close to Gmail's ~102 KB clip" in near[0].message
    assert [p.severity for p in over] == ["error"]
    assert "Gmail clips" in over[0].message
    assert run(the_issue, html=html_for(the_issue, extra="<!-- small -->")) == []


def test_size_report_names_each_articles_share() -> None:
    big = dataclasses.replace(article("big"), summary="y" * 20_000)
    the_issue = issue(article("small"), big)
    report = preflight.check(the_issue, email(the_issue), SETTINGS)
    shares = {b.label: b.size for b in report.blocks}
    assert shares["article big"] > 20_000 > shares["article small"] > 200
    assert sum(shares.values()) == report.html_bytes


@pytest.mark.parametrize(
    ("img", "expected"),
    [
        ('<img src="data:image/png;base64,iVBORw0KGgo=" alt="x">', "base64"),
        ('<img src="http://news.example.org/x.jpg" alt="x">', "not an absolute https URL"),
        ('<img src="/images/x.jpg" alt="x">', "not an absolute https URL"),
        ('<img src="https://news.example.org/x.jpg">', "no alt text"),
        ('<img src="https://news.example.org/x.jpg" alt=" ">', "no alt text"),
    ],
)
def test_images_need_alt_text_and_https(img: str, expected: str) -> None:
    the_issue = issue()
    found = run(the_issue, html=html_for(the_issue, extra=img))
    assert expected in messages(found)
    fine = '<img src="https://news.example.org/x.jpg" alt="A chart">'
    assert run(the_issue, html=html_for(the_issue, extra=fine)) == []


@pytest.mark.parametrize(
    ("href", "expected"),
    [
        ("http://news.example.org/", "uses http"),
        ("https:/news.example.org", "not a well-formed"),
        ("https://news.example.org:99x/", "not a well-formed"),
        ("javascript:alert(1)", "not a well-formed"),
        ("mailto:editor", "not a well-formed mailto"),
        ("#top", "not a well-formed"),
    ],
)
def test_links_must_be_https_or_mailto(href: str, expected: str) -> None:
    the_issue = issue()
    found = run(the_issue, html=html_for(the_issue, extra=f'<a href="{href}">x</a>'))
    assert expected in messages(found)
    fine = "mailto:editor@news.example.org?subject=Hello"
    text = f"{text_for(the_issue)}\n{fine}"
    assert (
        run(the_issue, html=html_for(the_issue, extra=f'<a href="{fine}">x</a>'), text=text) == []
    )


def test_every_html_link_is_also_in_the_text_part() -> None:
    the_issue = issue()
    extra = '<a href="mailto:editor@news.example.org">Write to us</a>'
    missing = run(the_issue, html=html_for(the_issue, extra=extra))
    assert [p.field for p in missing] == ["text"]
    assert "mailto:editor@news.example.org" in missing[0].message
    text = text_for(the_issue) + "\nWrite to us: mailto:editor@news.example.org"
    assert run(the_issue, html=html_for(the_issue, extra=extra), text=text) == []


def test_placeholder_links_match_their_text_form() -> None:
    the_issue = issue()
    text_without_unsubscribe = text_for(the_issue).replace("-unsubscribe_url-", "")
    found = run(the_issue, text=text_without_unsubscribe)
    assert "link -unsubscribe_url- is in the HTML part but not in the text" in messages(found)


def test_subject_and_preheader_lengths() -> None:
    long_subject = "Central Asia this week: apricots, trade, trafficking, Turkey and education"
    found = run(subject=long_subject, preheader="p" * 120)
    assert {(p.field, p.severity) for p in found} == {
        ("subject", "warning"),
        ("preheader", "warning"),
    }
    assert {p.field for p in run(subject="", preheader="")} == {"subject", "preheader"}
    assert run(subject="Central Asia this week", preheader="Apricots reach China.") == []


@pytest.mark.parametrize(
    ("html_extra", "text_extra", "expected"),
    [
        ("<p>Hello {{ first_name }}</p>", "", "template syntax '{{'"),
        ("", "Rates {% for r in rates %}", "template syntax '{%'"),
        ("<p>Hello -first_name-</p>", "", "-first_name- is in the html"),
        ("", "Hello -first_name_html-", "-first_name_html- is in the text"),
        ("<p>Hi -nickname_html-</p>", "", "unknown placeholder -nickname_html-"),
        # The unsubscribe URL has one tag for both parts; its old HTML tag is never filled.
        (
            '<a href="-unsubscribe_url_html-">x</a>',
            "",
            "unknown placeholder -unsubscribe_url_html-",
        ),
        ("<p>UZS: None</p>", "", "'None' appears in the html"),
        ("", "KZT nan", "'nan' appears in the text"),
        ('<a href="https://news.example.org/" title="None">x</a>', "", "'None' appears"),
    ],
)
def test_residue_of_templates_and_values(html_extra: str, text_extra: str, expected: str) -> None:
    the_issue = issue()
    text = text_for(the_issue) + "\nhttps://news.example.org/\n" + text_extra
    found = run(the_issue, html=html_for(the_issue, extra=html_extra), text=text)
    assert expected in messages(found)


def test_residue_leaves_english_and_urls_alone() -> None:
    the_issue = issue()
    prose = (
        "<p>None of the victims spoke. Read how-to-email-your-mp and "
        "<a href='https://news.example.org/first_name-guide/'>it</a>.</p>"
    )
    text = text_for(the_issue) + "\nhttps://news.example.org/first_name-guide/"
    assert run(the_issue, html=html_for(the_issue, extra=prose), text=text) == []


def test_subject_with_template_residue() -> None:
    assert "template syntax '{{' is left in the subject" in messages(
        run(subject="Weekly {{ issue.date }}")
    )


@pytest.mark.parametrize(
    ("footer", "expected"),
    [
        (f"<div>{ADDRESS}</div>", "no unsubscribe link"),
        (
            f'<div>{ADDRESS} <a href="-unsubscribe_url-" style="display:none">Unsubscribe</a>'
            "</div>",
            "hidden",
        ),
        (
            f'<div style="font-size:0px">{ADDRESS} <a href="-unsubscribe_url-">Unsubscribe</a>'
            "</div>",
            "hidden",
        ),
        ('<div><a href="-unsubscribe_url-">Unsubscribe</a></div>', "postal address"),
        (
            f'<div style="display:none">{ADDRESS}</div><a href="-unsubscribe_url-">Unsubscribe</a>',
            "postal address",
        ),
    ],
)
def test_footer_needs_visible_unsubscribe_and_address(footer: str, expected: str) -> None:
    the_issue = issue()
    found = run(the_issue, html=html_for(the_issue, footer=footer))
    assert expected in messages([p for p in found if p.field == "html"])


def test_address_split_over_lines_still_counts() -> None:
    the_issue = issue()
    lines = ADDRESS.replace(", ", ",<br>\n")
    footer = f'<div>{lines} <a href="-unsubscribe_url-">Unsubscribe</a></div>'
    text = text_for(the_issue).replace(
        "View in browser: https://news.example.org/issues/2025-12-10/", ""
    )
    assert run(the_issue, html=html_for(the_issue, footer=footer), text=text) == []


def test_document_needs_lang_and_title() -> None:
    the_issue = issue()
    html = html_for(the_issue).replace(' lang="en"', "").replace("<title>Weekly</title>", "")
    found = run(the_issue, html=html)
    assert {p.message.split(" ")[0] for p in found} == {"<html>", "the"}
    assert all(p.severity == "warning" for p in found)


def test_article_older_than_the_window_or_after_the_issue() -> None:
    old = article("old", DATE - dt.timedelta(days=7))
    future = article("future", DATE + dt.timedelta(days=1))
    found = run(issue(old, future, days=7))
    assert {(p.file, p.field) for p in found} == {(old.path, "date"), (future.path, "date")}
    edge = article("edge", DATE - dt.timedelta(days=6))
    assert run(issue(edge, days=7)) == []


def test_article_already_sent_in_one_of_the_last_issues() -> None:
    past = [
        preflight.PastIssue("2025-11-05", dt.date(2025, 11, 5), frozenset({"alpha"})),
        preflight.PastIssue("2025-11-12", dt.date(2025, 11, 12), frozenset({"gamma"})),
        preflight.PastIssue("2025-12-03", dt.date(2025, 12, 3), frozenset({"beta"})),
    ]
    settings = dataclasses.replace(SETTINGS, history_issues=2)
    found = run(history=tuple(past), settings=settings)
    assert ["beta" in p.message and "2025-12-03" in p.message for p in found] == [True]
    later = preflight.PastIssue("2025-12-17", dt.date(2025, 12, 17), frozenset({"alpha"}))
    assert run(history=(later,)) == []


def test_rates_stale_incomplete_or_imprecise() -> None:
    stale = run(issue(rates=snapshot(DATE - dt.timedelta(days=3))))
    assert [p.field for p in stale] == ["date"]
    incomplete = run(issue(rates=snapshot(KGS="0.01144", KZT="0.00193")))
    assert "no TJS, UZS, TMT" in messages(incomplete)
    coarse = run(
        issue(
            rates=snapshot(
                KGS="0.01144", KZT="0.00193", TJS="0.10811", UZS="0.00008", TMT="0.28490"
            )
        )
    )
    assert [p.field for p in coarse] == ["rates.UZS"]
    assert "UZS/USD = 0.00008 keeps 1 significant digit" in coarse[0].message
    assert run(issue(rates=snapshot(DATE - dt.timedelta(days=2)))) == []


def test_significant_digits_count_what_was_given() -> None:
    assert preflight.significant_digits(Decimal("0.00008")) == 1
    assert preflight.significant_digits(Decimal("0.28490")) == 5
    assert preflight.significant_digits(Decimal("12.5")) == 3


def test_report_as_json_keeps_every_finding() -> None:
    the_issue = issue()
    report = preflight.check(the_issue, email(the_issue, subject=""), SETTINGS)
    data = report.as_dict()
    assert data["ok"] is False
    assert data["problems"][0]["field"] == "subject"
    assert data["html_bytes"] == report.html_bytes


# ---- the real sample issue, through load, render and check -------------------------------


def test_sample_issue_has_no_errors_and_flags_the_one_digit_rate(project: Path) -> None:
    settings = load_settings(project, env={})
    checked = build.check_file(project / "issues" / "2025-12-10.yaml", settings)
    assert checked.report.errors == ()
    assert [p.field for p in checked.report.warnings] == ["rates.UZS"]
    labels = [b.label for b in checked.report.blocks]
    assert len([label for label in labels if label.startswith("article ")]) == 6
    assert "rates" in labels


def test_repeats_are_found_in_earlier_issue_files(project: Path) -> None:
    (project / "issues" / "2025-12-03.yaml").write_text(
        "title: Central Asia Weekly\ndate: 2025-12-03\nsubject: Apricots\nintro: Hi\n"
        "rates: 2025-12-03\nsections:\n  - heading: Lead\n"
        "    articles: [kyrgyzstan-dried-apricot-exports-china]\n"
    )
    (project / "issues" / "2025-11-01.yaml").write_text("title: [broken\n")
    settings = load_settings(project, env={})
    report = build.check_file(project / "issues" / "2025-12-10.yaml", settings).report
    repeats = [p for p in report.warnings if "already in issue 2025-12-03" in p.message]
    assert "kyrgyzstan-dried-apricot-exports-china" in repeats[0].message
    # The broken file cannot be dated: a warning on it, never an error of this issue.
    [broken] = [p for p in report.problems if "2025-11-01" in str(p.file)]
    assert broken.severity == "warning"
    assert "cannot read this earlier issue" in broken.message
    only_one = load_settings(project, env={"NEWSLETTER_HISTORY_ISSUES": "0"})
    report = build.check_file(project / "issues" / "2025-12-10.yaml", only_one).report
    assert not any("already in issue" in p.message for p in report.warnings)


def test_check_command_exits_non_zero_on_errors_only(project: Path) -> None:
    # --no-gates: these test the preflight; the gates have tests/test_accessibility.py.
    command = [str(Path(sys.executable).parent / "newsletter"), "check", "--json", "--no-gates"]
    clean = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stderr
    assert json.loads(clean.stdout)[0]["ok"] is True
    layout = project / "templates" / "_layout.mjml.j2"
    layout.write_text(layout.read_text().replace("{{ ph.unsubscribe_url }}", "{{ links.archive }}"))
    blocked = subprocess.run(
        [*command[:2], "issues/2025-12-10.yaml"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert blocked.returncode == 1
    assert "no unsubscribe link" in blocked.stdout


def test_errors_block_a_send_and_warnings_do_not() -> None:
    the_issue = issue()
    warned = preflight.check(the_issue, email(the_issue, preheader=""), SETTINGS)
    warned.raise_for_errors()  # a warning alone lets the send go on
    blocked = preflight.check(the_issue, email(the_issue, subject=""), SETTINGS)
    with pytest.raises(PreflightError, match=r"(?s)1 preflight error\(s\).*subject is empty"):
        blocked.raise_for_errors()


def test_findings_point_at_the_file_to_fix() -> None:
    the_issue = issue()
    text = text_for(the_issue).replace("-unsubscribe_url-", "")
    found = run(the_issue, subject="", text=text)
    files = {p.field: p.file for p in found}
    assert files["subject"] == Path("issues/2025-12-10.yaml")
    assert files["text"] == Path("/nonexistent/templates/digest.txt.j2")


def test_check_command_reports_an_issue_that_does_not_load_among_the_others(
    project: Path,
) -> None:
    (project / "issues" / "2025-12-17.yaml").write_text("title: Weekly\ndate: 2025-12-17\n")
    # --no-gates: these test the preflight; the gates have tests/test_accessibility.py.
    command = [str(Path(sys.executable).parent / "newsletter"), "check", "--json", "--no-gates"]
    done = subprocess.run(command, cwd=project, capture_output=True, text=True, check=False)
    assert done.returncode == 1
    reports = {r["issue"]: r for r in json.loads(done.stdout)}
    assert reports["2025-12-10"]["ok"] is True
    broken = reports["2025-12-17"]
    assert broken["ok"] is False
    assert any(p["field"] == "subject" for p in broken["problems"])
    table = subprocess.run(command[:2], cwd=project, capture_output=True, text=True, check=False)
    assert "issues/2025-12-17.yaml [subject]" in table.stdout
