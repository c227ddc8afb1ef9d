"""The words a story shows in a section: its first sentence (brief, cards) and a lead's
excerpt, with abbreviations, headings and reference links as editors write them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.markdown import to_html
from newsletter.render import ABBREVIATIONS, excerpt, first_sentence


@pytest.mark.parametrize(
    ("text", "first"),
    [
        ("Dr. Aliyev opened the dam. Water flows.", "Dr. Aliyev opened the dam."),
        ("The U.N. said it would help. Aid follows.", "The U.N. said it would help."),
        ("J. R. Smith wrote it. Then he left.", "J. R. Smith wrote it."),
        ("St. Petersburg hosts it. More soon.", "St. Petersburg hosts it."),
        ("Prices rose 5% in March. 2026 will tell.", "Prices rose 5% in March."),
        ("“We are ready.” The minister left.", "“We are ready.”"),
        ("Is it open? Yes.", "Is it open?"),
        ("It went on… and on. Then stopped.", "It went on… and on."),
        ("No full stop at all", "No full stop at all"),
        ("One sentence, e.g. this one.", "One sentence, e.g. this one."),
    ],
)
def test_the_first_sentence_survives_abbreviations_and_initials(text: str, first: str) -> None:
    assert first_sentence(text) == first


_word = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=2, max_size=9)
_capital = _word.map(str.capitalize)
# Tokens that end in a full stop inside a sentence: titles, initials, dotted abbreviations.
_dotted = st.one_of(
    st.sampled_from(sorted(ABBREVIATIONS)).map(lambda w: w.capitalize() + "."),
    st.sampled_from("ABCDEFGHIJKLMNOPQRSTUVWXYZ").map(lambda c: c + "."),
    st.sampled_from(["U.N.", "U.S.", "e.g.", "i.e.", "a.m."]),
)


@given(
    st.lists(st.one_of(_word, st.tuples(_dotted, _capital).map(" ".join)), min_size=1),
    _word.filter(lambda w: w.casefold() not in ABBREVIATIONS),
    st.sampled_from(".!?"),
    _capital,
    st.lists(_word),
)
def test_a_sentence_ends_where_a_capital_follows_a_real_end(
    middle: list[str], last: str, end: str, next_word: str, rest: list[str]
) -> None:
    first = " ".join(["The", *middle, last]) + end
    text = " ".join([first, next_word, *rest]) + "."
    assert first_sentence(text) == first


def test_a_lead_that_opens_with_a_heading_keeps_its_first_paragraph() -> None:
    long = " ".join(["word"] * 150)
    kept, truncated = excerpt(f"## Background\n\n{long}\n\nMore after.\n", 100)
    assert kept == f"## Background\n\n{long}\n"
    assert truncated
    assert "<p>word" in to_html(kept)


def test_a_heading_is_never_the_last_thing_kept() -> None:
    kept, truncated = excerpt("First words here.\n\n## Next part\n\nA second paragraph.\n", 3)
    assert kept == "First words here.\n"
    assert truncated


def test_reference_links_keep_their_definitions() -> None:
    story = (
        "The ministry published [the report][r] on Monday.\n\n"
        "A second paragraph cites [the data][d].\n\n"
        "[r]: https://example.org/report\n"
        '[d]: https://example.org/data "Data"\n'
    )
    kept, truncated = excerpt(story, 8)
    assert truncated
    html = to_html(kept)
    assert '<a href="https://example.org/report" rel="noopener noreferrer">the report</a>' in html
    assert "[the report]" not in html
    assert "[r]" not in html
    whole, truncated = excerpt(story, 100)
    assert not truncated
    assert '<a href="https://example.org/data"' in to_html(whole)
