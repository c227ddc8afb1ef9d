"""Article text a reader sees: invisible controls and bidi overrides are refused where the
article loads (file, line, field), and a Cyrillic story without `lang:` is pointed out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from newsletter.build import check_file
from newsletter.config import load_settings
from newsletter.content import parse_article
from newsletter.errors import ArticleFileError
from newsletter.preflight import mostly_cyrillic

RUBINA = "dina-rubina-tashkent-event-suspended-gaza-comments"
SAMPLE = Path("issues") / "2025-12-10.yaml"
ARTICLE = """\
---
slug: naryn
title: {title}
date: 2025-12-10
url: https://news.example.org/naryn/
summary: {summary}
credit: {credit}
image:
  url: https://news.example.org/naryn.jpg
  alt: {alt}
  width: 1200
  height: 675
---

The dam opened on Monday.
"""
LINE_OF_FIELD = {"title": 3, "summary": 6, "credit": 7, "image.alt": 10}


def article(tmp_path: Path, **values: str) -> Path:
    fields = {"title": "The dam", "summary": "It opened.", "credit": "Photo: x", "alt": "A dam"}
    fields.update(values)
    path = tmp_path / "naryn.md"
    # JSON strings are YAML double-quoted strings: a C0 control is written as its escape
    # (as YAML requires), a bidi override as the character itself (as an editor pastes it).
    text = ARTICLE.format(**{k: json.dumps(v, ensure_ascii=False) for k, v in fields.items()})
    path.write_text(text, encoding="utf-8")
    return path


def test_a_clean_article_loads(tmp_path: Path) -> None:
    assert parse_article(article(tmp_path)).credit == "Photo: x"


@hsettings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["title", "summary", "credit", "alt"]),
    char=st.sampled_from(
        ["\u202e", "\u202a", "\u202d", "\u2066", "\u2067", "\u2069", "\u2028", "\x07", "\x1b"]
    ),
    before=st.text(alphabet="abc XYZ:@.", max_size=8),
)
def test_a_bidi_override_or_control_in_shown_text_is_refused_with_file_line_field(
    tmp_path_factory: pytest.TempPathFactory, field: str, char: str, before: str
) -> None:
    path = article(tmp_path_factory.mktemp("a"), **{field: f"{before}{char}iom.int"})
    with pytest.raises(ArticleFileError) as info:
        parse_article(path)
    [problem] = info.value.problems
    name = "image.alt" if field == "alt" else field
    assert (problem.file, problem.field, problem.line) == (path, name, LINE_OF_FIELD[name])
    assert f"U+{ord(char):04X}" in problem.message


def test_a_summary_written_over_several_lines_still_loads(tmp_path: Path) -> None:
    path = article(tmp_path)
    path.write_text(
        path.read_text().replace('summary: "It opened."', "summary: |\n  It opened\n  today."),
        encoding="utf-8",
    )
    assert parse_article(path).summary == "It opened\ntoday."


def test_mostly_cyrillic_counts_letters() -> None:
    assert mostly_cyrillic("Выставка в Ташкенте отменена, iTicket.uz")
    assert not mostly_cyrillic("Ticket sales in Tashkent (Ташкент) were suspended.")
    assert not mostly_cyrillic("2025 — 10 %")


def cyrillic_rubina(project: Path, lang: str = "") -> Path:
    path = project / "content" / "articles" / f"{RUBINA}.md"
    head, body = path.read_text(encoding="utf-8").split("\n---\n", 1)
    head = head.replace(
        "title: Uzbek-Born Author Dina Rubina’s Tashkent Event Suspended Amid Outrage Over "
        "Gaza Comments",
        "title: Выступление Дины Рубиной в Ташкенте отменено",
    )
    head = re.sub(r"summary: >-\n  .*\n", "summary: Продажа билетов приостановлена.\n", head)
    if lang:
        head += f"\nlang: {lang}"
    body = "\n\nПродажа билетов на встречу с писательницей Диной Рубиной приостановлена.\n"
    path.write_text(f"{head}\n---\n{body}", encoding="utf-8")
    return path


def language_warnings(project: Path) -> list[object]:
    settings = load_settings(project, env={})
    report = check_file(project / SAMPLE, settings).report
    return [p for p in report.problems if p.field == "lang"]


def test_a_cyrillic_article_without_lang_in_an_english_issue_is_warned(project: Path) -> None:
    path = cyrillic_rubina(project)
    [warning] = language_warnings(project)
    assert warning.file == path  # type: ignore[attr-defined]
    assert warning.severity == "warning"  # type: ignore[attr-defined]
    assert "add `lang: ru`" in warning.message  # type: ignore[attr-defined]


def test_with_its_lang_or_in_english_there_is_no_warning(project: Path) -> None:
    assert language_warnings(project) == []
    cyrillic_rubina(project, lang="ru")
    assert language_warnings(project) == []
