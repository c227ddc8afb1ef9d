"""Issue definitions: every validation names the file, the field and the line."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from newsletter.config import Settings
from newsletter.errors import IssueError, Problem
from newsletter.issues import load_issue, select
from newsletter.models import Article, Query
from newsletter.preflight import check_rates

GOOD = """\
title: Central Asia Weekly
date: 2025-12-10
subject: A subject
preheader: A preheader
intro: Hello.
rates: latest
template: digest
sections:
  - heading: Lead
    articles: [kyrgyzstan-dried-apricot-exports-china]
  - heading: Trade
    query: {tags_any: [topic/trade], days: 7}
"""


def write(settings: Settings, text: str, name: str = "2025-12-10.yaml") -> Path:
    path = settings.path("issues_dir") / name
    path.write_text(text, encoding="utf-8")
    return path


def problems(settings: Settings, text: str) -> list[Problem]:
    with pytest.raises(IssueError) as info:
        load_issue(write(settings, text), settings)
    return list(info.value.problems)


def only(found: list[Problem], field: str) -> Problem:
    matching = [p for p in found if p.field == field]
    assert len(matching) == 1, found
    return matching[0]


def test_sample_issue_resolves_all_six_seed_articles(repo: Path, settings: Settings) -> None:
    issue = load_issue(repo / "issues" / "2025-12-10.yaml", settings)
    assert len(issue.articles) == 6
    assert len({a.slug for a in issue.articles}) == 6
    assert issue.rates is not None
    assert issue.rates.date == dt.date(2025, 12, 10)
    assert len(issue.rate_history) == 7
    assert issue.warnings == ()


def test_good_definition_loads(settings: Settings) -> None:
    issue = load_issue(write(settings, GOOD), settings)
    assert [s.heading for s in issue.sections] == ["Lead", "Trade"]
    # the lead article is not picked again by the Trade query
    assert "kyrgyzstan-dried-apricot-exports-china" not in [
        a.slug for a in issue.sections[1].articles
    ]


def test_unknown_slug_has_did_you_mean_and_line(settings: Settings) -> None:
    text = GOOD.replace("kyrgyzstan-dried-apricot-exports-china", "kyrgyzstan-dried-apricot-export")
    found = only(problems(settings, text), "sections[0].articles[0]")
    assert "kyrgyzstan-dried-apricot-export'" in found.message
    assert "Did you mean 'kyrgyzstan-dried-apricot-exports-china'?" in found.message
    assert found.line == 10
    assert found.file is not None
    assert found.file.name == "2025-12-10.yaml"


def test_article_selected_twice(settings: Settings) -> None:
    text = GOOD.replace(
        "    query: {tags_any: [topic/trade], days: 7}",
        "    articles: [tajikistan-export-support-program-small-producers-farmers,"
        " kyrgyzstan-dried-apricot-exports-china]",
    )
    found = only(problems(settings, text), "sections[1].articles[1]")
    assert "already selected at sections[0].articles[0]" in found.message
    assert found.line == 12


def test_empty_section(settings: Settings) -> None:
    text = GOOD.replace("tags_any: [topic/trade]", "tags_any: [topic/sport]")
    found = only(problems(settings, text), "sections[1]")
    assert "selects no articles" in found.message
    assert found.line == 11


def test_missing_snapshot(settings: Settings) -> None:
    found = only(problems(settings, GOOD.replace("rates: latest", "rates: 2025-11-01")), "rates")
    assert "no rate snapshot for 2025-11-01" in found.message
    assert found.line == 6


def test_no_snapshot_on_or_before_the_date(settings: Settings) -> None:
    text = GOOD.replace("date: 2025-12-10", "date: 2025-01-01").replace("days: 7", "days: 400")
    found = [p for p in problems(settings, text) if p.field == "rates"]
    assert "no rate snapshot on or before 2025-01-01" in found[0].message


def test_stale_snapshot_is_a_warning_not_an_error(settings: Settings) -> None:
    text = GOOD.replace("date: 2025-12-10", "date: 2025-12-14").replace("days: 7", "days: 10")
    # It loads (no error); the warning is the preflight's, in one place (issue 10).
    issue = load_issue(write(settings, text), settings)
    assert issue.warnings == ()
    [warning] = [p for p in check_rates(issue, settings) if "days before" in p.message]
    assert warning.severity == "warning"
    assert "4 days before the issue" in warning.message


def test_unknown_template(settings: Settings) -> None:
    found = only(
        problems(settings, GOOD.replace("template: digest", "template: digets")), "template"
    )
    assert "unknown template 'digets'" in found.message
    assert "Did you mean 'digest'?" in found.message
    assert found.line == 7


def test_partials_and_path_tricks_are_not_templates(settings: Settings) -> None:
    for name in ("_layout", "../templates/digest", "DIGEST"):
        text = GOOD.replace("template: digest", f"template: '{name}'")
        assert "unknown template" in only(problems(settings, text), "template").message


def test_wrong_types(settings: Settings) -> None:
    text = (
        GOOD.replace("date: 2025-12-10", "date: next week")
        .replace("days: 7", "days: -3")
        .replace("subject: A subject", "subject: [a, list]")
    )
    found = problems(settings, text)
    assert "expected a date" in only(found, "date").message
    assert "expected text, got a list" in only(found, "subject").message
    assert "whole number from 1" in only(found, "sections[1].query.days").message


def test_unknown_keys_with_suggestion(settings: Settings) -> None:
    text = GOOD.replace("preheader:", "preheadr:").replace("days: 7", "day: 7")
    found = problems(settings, text)
    assert "Did you mean 'preheader'?" in only(found, "preheadr").message
    assert only(found, "preheadr").line == 4
    assert "Did you mean 'days'?" in only(found, "sections[1].query.day").message


def test_every_problem_is_reported_in_one_run(settings: Settings) -> None:
    text = (
        GOOD.replace("template: digest", "template: nope")
        .replace("kyrgyzstan-dried-apricot-exports-china", "no-such-article")
        .replace("rates: latest", "rates: 2020-01-01")
        .replace("intro:", "intr:")
    )
    fields = {p.field for p in problems(settings, text)}
    assert {"template", "sections[0].articles[0]", "rates", "intr"} <= fields


def test_malformed_yaml_names_file_and_line(settings: Settings) -> None:
    found = problems(settings, GOOD.replace("subject: A subject", "subject: [unclosed"))
    assert len(found) == 1
    assert found[0].file is not None
    assert found[0].file.name == "2025-12-10.yaml"
    assert found[0].line == 4  # where the parser gave up ...
    assert found[0].message.startswith("invalid YAML")
    assert "flow sequence that starts on line 3" in found[0].message  # ... and the culprit


def test_header_injection_in_subject_is_refused(settings: Settings) -> None:
    text = GOOD.replace("subject: A subject", 'subject: "Hi\\nBcc: victim@example.org"')
    assert "single line" in only(problems(settings, text), "subject").message


def test_section_needs_exactly_one_of_articles_or_query(settings: Settings) -> None:
    text = GOOD.replace("    query: {tags_any: [topic/trade], days: 7}\n", "")
    assert "either 'articles'" in only(problems(settings, text), "sections[1]").message


def test_error_message_lists_file_field_and_line(settings: Settings) -> None:
    text = GOOD.replace("template: digest", "template: nope")
    with pytest.raises(IssueError) as info:
        load_issue(write(settings, text), settings)
    assert "2025-12-10.yaml:7 [template]: error: unknown template 'nope'" in str(info.value)


# ---- queries ------------------------------------------------------------------------------


def article(slug: str, day: int, *tags: str, title: str = "") -> Article:
    return Article(slug, title or slug, dt.date(2025, 12, day), "https://x.org/", "", "", tags)


POOL = [
    article("a", 10, "country/kg", "topic/trade", title="Zeta"),
    article("b", 9, "country/kz", "topic/trade", title="Alpha"),
    article("c", 3, "country/kz", "topic/politics", title="Mid"),
    article("d", 11, "country/kz", "topic/trade"),  # after the issue date
]


def test_query_tags_any_all_window_order_limit() -> None:
    day = dt.date(2025, 12, 10)
    assert [a.slug for a in select(POOL, Query(tags_any=("topic/trade",)), day)] == ["a", "b"]
    assert [a.slug for a in select(POOL, Query(tags_all=("country/kz", "topic/trade")), day)] == [
        "b"
    ]
    assert [a.slug for a in select(POOL, Query(days=8), day)] == ["a", "b", "c"]
    assert [a.slug for a in select(POOL, Query(days=8, order="oldest"), day)] == ["c", "b", "a"]
    assert [a.slug for a in select(POOL, Query(days=8, order="title"), day)] == ["b", "c", "a"]
    assert [a.slug for a in select(POOL, Query(days=8, limit=1), day)] == ["a"]


def test_yaml_alias_bomb_is_refused_at_once(settings: Settings) -> None:
    # "Billion laughs": nine nested levels of ten aliases each would expand to 10^9 items.
    levels = "".join(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n" for i in range(1, 9))
    found = problems(settings, GOOD + "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + levels)
    assert len(found) == 1
    assert "anchors and aliases" in found[0].message
    assert found[0].line == 14  # the first line that uses an alias


@pytest.mark.parametrize("name", ["two words", "a<b>", "ünï"])
def test_issue_file_name_must_be_a_safe_name(settings: Settings, name: str) -> None:
    with pytest.raises(IssueError) as info:
        load_issue(write(settings, GOOD, f"{name}.yaml"), settings)
    assert "is the issue's name" in str(info.value)


def test_absurd_image_size_in_an_article_is_refused(settings: Settings) -> None:
    article = (
        settings.path("content_dir") / "articles" / "kyrgyzstan-dried-apricot-exports-china.md"
    )
    article.write_text(article.read_text().replace("width: 1200", "width: 100000"))
    found = problems(settings, GOOD)
    assert len(found) == 1  # the article's problem, not also "section selects nothing"
    assert "from 1 to 10000, got 100000" in found[0].message
    assert found[0].file == article
    assert found[0].field == "image.width"
