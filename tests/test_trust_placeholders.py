"""Issue 9, item 2: no content can spell a per-recipient placeholder or template residue.

The attack: articles, the issue and the rate snapshot carry text built from the tag
alphabet (`-`, `_html`, field names, `{{`/`{%`/`}}`, entities, the real tags of an earlier
build). The proof is on the receiving side: the .eml the outbox wrote, and the JSON the
fake SendGrid received with its substitutions applied as SendGrid applies them.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import itertools
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import lxml.html
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter import build, inert, placeholders
from newsletter.build import build_issue, write_files
from newsletter.config import load_settings
from newsletter.mailers.outbox import OutboxMailer
from newsletter.mailers.sendgrid import RetryPolicy, SendGridMailer
from newsletter.models import Recipient, RenderedEmail, SendBatch
from tests.conftest import CANARY_KEY, REPO, run_newsletter
from tests.fakes.sendgrid_server import FakeSendGrid, running

GOLDEN = REPO / "tests" / "golden" / "2025-12-10"
LEAD = "kyrgyzstan-dried-apricot-exports-china"
# The tags an earlier build really placed (the golden build's): content that copies them
# must not be filled either.
EARLIER_TAGS = sorted(
    set(re.findall(r"-[a-z_]+-[0-9a-f]{12}-", (GOLDEN / "email.txt").read_text()))
    | set(re.findall(r"-[a-z_]+-[0-9a-f]{12}-", (GOLDEN / "email.html").read_text()))
)
FIELD_WORDS = ["first_name", "email", "unsubscribe_url", "nickname", "FIRST_NAME", "Email"]
DELIMITERS = ["{{", "{%", "{#", "}}", "%}", "#}", "{", "}", "%", "#"]
TAG_ALPHABET = ["-", "-", "_", "_html", "x", "0a1b", *FIELD_WORDS, *DELIMITERS, *EARLIER_TAGS]
# Forms Markdown decodes into the alphabet: entities and backslash escapes.
MARKDOWN_ONLY = ["&#95;", "&#45;", "&lowbar;", "\\{", "\\-", "\\_"]
URL_SAFE = [p for p in TAG_ALPHABET if not re.search(r"[\s<>\"'#%]", p)] + ["%2D", "/", "&e="]

text_pieces = st.lists(st.sampled_from([*TAG_ALPHABET, " "]), min_size=1, max_size=10).map("".join)
markdown_pieces = st.lists(
    st.sampled_from([*TAG_ALPHABET, *MARKDOWN_ONLY, " "]), min_size=1, max_size=10
).map("".join)
url_pieces = st.lists(st.sampled_from(URL_SAFE), min_size=1, max_size=8).map("".join)
# A title must not be blank once YAML strips it: the loader requires one.
titles = text_pieces.filter(lambda s: s.strip() != "")

# What each recipient's values look like: nothing in the alphabet spells them.
READER = Recipient(
    email="qwzaddr@victim.test",
    first_name="Qwzname",
    unsubscribe_url="https://news.example.org/u/QwzTOKEN.sig",
)
CANARIES = {"first_name": "Qwzname", "email": "qwzaddr@victim.test", "unsubscribe_url": "QwzTOKEN"}


# ---- the project under attack ----------------------------------------------------------


class Project:
    """A copy of the sample project whose lead article, issue and rates the tests rewrite."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.article = root / "content" / "articles" / f"{LEAD}.md"
        self.issue = root / "issues" / "2025-12-10.yaml"
        self.rates = root / "content" / "rates" / "2025-12-10.yaml"
        self.originals = {p: p.read_text() for p in (self.article, self.issue, self.rates)}
        self.settings = load_settings(root, env={})
        self._stamps = itertools.count(1)

    def restore(self) -> None:
        for path, text in self.originals.items():
            self._write(path, text)

    def _write(self, path: Path, text: str) -> None:
        path.write_text(text, encoding="utf-8")
        # Parsed files are memoized by mtime and size: give every write its own mtime.
        stamp = 1_700_000_000_000_000_000 + next(self._stamps) * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))

    def write_article(self, front: dict[str, Any], body: str) -> None:
        original = self.originals[self.article]
        _, front_text, _ = original.split("---\n", 2)
        data = yaml.safe_load(front_text) | front
        dumped = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=10_000)
        self._write(self.article, f"---\n{dumped}---\n\n{body}\n")

    def write_issue(self, changes: dict[str, Any]) -> None:
        data = yaml.safe_load(self.originals[self.issue])
        for key, value in changes.items():
            if key == "heading":
                data["sections"][0]["heading"] = value
            else:
                data[key] = value
        self._write(self.issue, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))

    def write_rates_source(self, source: str) -> None:
        data = yaml.safe_load(self.originals[self.rates])
        data["source"] = source
        self._write(self.rates, yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("attack") / "project"
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    return Project(root)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeSendGrid]:
    with running(CANARY_KEY) as server:
        yield server


@pytest.fixture(scope="module")
def placed(project: Project) -> dict[str, int]:
    """How many times the templates place each field in each part (clean sample build)."""
    project.restore()
    clean = build_issue(project.issue, project.settings).email
    tags = clean.tags
    counts = {}
    for name in placeholders.FIELDS:
        counts[f"html:{name}"] = clean.html.count(tags.html(name))
        counts[f"text:{name}"] = clean.text.count(tags.text(name))
        counts[f"subject:{name}"] = 0
    assert counts["html:first_name"] == counts["text:first_name"] == 1
    assert counts["html:unsubscribe_url"] == counts["text:unsubscribe_url"] == 1
    return counts


# ---- the receiving side -----------------------------------------------------------------


def outbox_copy(project: Project, rendered: RenderedEmail, folder: str) -> dict[str, str]:
    """What the outbox wrote for READER: the parsed .eml's subject, HTML and text."""
    out = project.root / "outbox" / folder
    shutil.rmtree(out, ignore_errors=True)
    batch = SendBatch(rendered.issue_name, "weekly", (READER,), ("k1",))
    outcome = OutboxMailer(out, project.settings).send_batch(rendered, batch)
    assert [r.state for r in outcome.results] == ["sent"]
    (path,) = (out / rendered.issue_name).iterdir()
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return {"subject": str(message["Subject"]), **parts(message)}


def parts(message: email.message.EmailMessage) -> dict[str, str]:
    found = {}
    for kind, name in (("html", "html"), ("plain", "text")):
        body = message.get_body((kind,))
        assert body is not None
        found[name] = str(body.get_content()).replace("\r\n", "\n")
    return found


def sendgrid_copy(project: Project, fake: FakeSendGrid, rendered: RenderedEmail) -> dict[str, str]:
    """What SendGrid would deliver to READER: the received body, substituted as SendGrid does
    (every occurrence of each tag in the subject and in every content part)."""
    pointed = load_settings(
        project.root,
        env={
            "SENDGRID_API_KEY": CANARY_KEY,
            "NEWSLETTER_SENDGRID_API_URL": fake.url,
            "NEWSLETTER_SENDGRID_TIMEOUT": "5",
        },
    )
    mailer = SendGridMailer(pointed, retry=RetryPolicy(attempts=1, base=0.01, cap=0.01))
    before = len(fake.mail_sends())
    batch = SendBatch(rendered.issue_name, "weekly", (READER,), ("k1",))
    assert [r.state for r in mailer.send_batch(rendered, batch).results] == ["sent"]
    received = fake.mail_sends()[before:]
    assert len(received) == 1
    body = received[0].body
    (person,) = body["personalizations"]
    delivered = {
        "subject": body["subject"],
        "text": body["content"][0]["value"],
        "html": body["content"][1]["value"],
    }
    for tag, value in person.get("substitutions", {}).items():
        delivered = {part: text.replace(tag, value) for part, text in delivered.items()}
    return delivered


def assert_only_placed(delivered: dict[str, str], placed: dict[str, int]) -> None:
    """Each recipient value appears exactly where (and as often as) the templates put it."""
    for part in ("subject", "html", "text"):
        for name, canary in CANARIES.items():
            assert delivered[part].count(canary) == placed[f"{part}:{name}"], (part, name)


def seen(text: str) -> str:
    """What a reader sees: joiners are invisible, runs of white space are one space."""
    return " ".join(text.replace(inert.JOINER, "").split())


def visible_html(html: str) -> str:
    return seen(lxml.html.document_fromstring(html).text_content())


# ---- the attack -------------------------------------------------------------------------


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    title=titles,
    summary=text_pieces,
    credit=text_pieces,
    alt=text_pieces,
    quoted=markdown_pieces,
    prose=markdown_pieces,
    link_query=url_pieces,
    image_query=url_pieces,
    url_query=url_pieces,
    subject=text_pieces,
    preheader=text_pieces,
    intro=markdown_pieces,
    heading=text_pieces,
    source=text_pieces,
)
def test_no_content_can_spell_a_placeholder_on_either_mailer(
    project: Project,
    fake: FakeSendGrid,
    placed: dict[str, int],
    title: str,
    summary: str,
    credit: str,
    alt: str,
    quoted: str,
    prose: str,
    link_query: str,
    image_query: str,
    url_query: str,
    subject: str,
    preheader: str,
    intro: str,
    heading: str,
    source: str,
) -> None:
    image_url = f"https://tracker.example/p.gif?e={image_query}"
    project.write_article(
        {
            "title": title,
            "summary": f"Y {summary}",  # required: never blank
            "credit": credit,
            "url": f"https://news.example.org/a/?q={url_query}",
            "image": {"url": image_url, "alt": f"A {alt}", "width": 600, "height": 300},
        },
        f"Code: `{quoted}`\n\n{prose}\n\n[a link](https://t.example/?q={link_query})\n",
    )
    project.write_issue(
        {
            "subject": f"S {subject}",
            "preheader": f"P {preheader}",
            "intro": intro,
            "heading": f"H {heading}",
        }
    )
    project.write_rates_source(f"R {source}")

    checked = build.check_file(project.issue, project.settings)
    rendered = checked.email
    for delivered in (
        outbox_copy(project, rendered, "attack"),
        sendgrid_copy(project, fake, rendered),
    ):
        assert_only_placed(delivered, placed)
        # What was typed reaches the reader as typed.
        html = visible_html(delivered["html"])
        for typed in (title, quoted, f"S {subject}", f"H {heading}", f"R {source}"):
            assert seen(typed) in html
        assert seen(title) in seen(delivered["text"])
        assert seen(delivered["subject"]) == seen(f"S {subject}")
        doc = lxml.html.document_fromstring(delivered["html"])
        assert unquote(image_url) in [unquote(s) for s in doc.xpath("//img/@src")]
        # Attributes too: MRML spells some characters in them as `\u{...}` text.
        assert seen(f"A {alt}") in [seen(a) for a in doc.xpath("//img/@alt")]
        assert seen(doc.findtext(".//title") or "") == seen(f"S {subject}")
    # Nothing typed is taken for template residue: the issue can be sent.
    assert checked.report.errors == (), [str(p) for p in checked.report.errors]


def test_the_warnings_name_the_article_and_the_issue_with_their_lines(project: Project) -> None:
    project.restore()
    project.write_article(
        {"title": "On {{ user.name }}", "image": None},
        "First paragraph.\n\nThen `-first_name-` in a code span.",
    )
    project.write_issue({"subject": "Weekly -email-", "heading": "Lead {% story"})
    project.write_rates_source("Ticker {{ x }}")
    report = build.check_file(project.issue, project.settings).report
    assert report.errors == ()
    where = {(p.file, p.field, p.line) for p in report.warnings if "looks like" in p.message}
    article_lines = project.article.read_text().splitlines()
    title_line = next(i for i, s in enumerate(article_lines, 1) if s.startswith("title:"))
    body_line = next(i for i, s in enumerate(article_lines, 1) if "-first_name-" in s)
    issue_lines = project.issue.read_text().splitlines()
    subject_line = next(i for i, s in enumerate(issue_lines, 1) if s.startswith("subject:"))
    heading_line = next(i for i, s in enumerate(issue_lines, 1) if "heading: Lead" in s)
    rates_lines = project.rates.read_text().splitlines()
    source_line = next(i for i, s in enumerate(rates_lines, 1) if s.startswith("source:"))
    assert where == {
        (project.article, "title", title_line),
        (project.article, "body", body_line),
        (project.issue, "subject", subject_line),
        (project.issue, "sections[0].heading", heading_line),
        (project.rates, "source", source_line),
    }


JINJA_ARTICLE = """\
---
slug: jinja-for-editors
title: "Templates for editors: {{ name }} and {% if %}"
date: 2025-12-10
url: https://news.example.org/2025/12/10/jinja-for-editors/
summary: "How {{ reader.first_name }} becomes a name, and why -first_name- does too."
tags: [topic/education]
---

Jinja fills `{{ first_name }}`; a block reads `{% for item in items %}…{% endfor %}`
and a comment `{# like this #}`. Our mailer's tags look like -first_name_html- and
-unsubscribe_url-, and a tracker could try https://t.example/p.gif?u=-email_html-.
"""


def test_an_article_about_jinja_is_sent_with_warnings_and_check_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "project"
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    article = root / "content" / "articles" / "jinja-for-editors.md"
    article.write_text(JINJA_ARTICLE, encoding="utf-8")
    issue = root / "issues" / "2025-12-10.yaml"  # the lead story, shown in full
    issue.write_text(
        issue.read_text().replace(f"articles: [{LEAD}]", "articles: [jinja-for-editors]")
    )

    result = run_newsletter(root, "check", "--json", "--no-gates")  # the preflight's findings
    assert result.returncode == 0, result.stdout + result.stderr
    (report,) = json.loads(result.stdout)
    assert report["ok"]
    mine = [p for p in report["problems"] if p["file"] and p["file"].endswith(article.name)]
    assert {(p["severity"], p["field"], p["line"]) for p in mine} == {
        ("warning", "title", 3),
        ("warning", "summary", 6),
        ("warning", "body", 10),
    }
    assert not [p for p in report["problems"] if p["severity"] == "error"]

    settings = load_settings(root, env={})
    sample = Recipient("aida@example.org", "Aida", "https://news.example.org/u/tok")
    built = write_files(build_issue(issue, settings), tmp_path / "out", settings, sample)
    html = (built.directory / "email.html").read_text()
    text = (built.directory / "email.txt").read_text()
    assert "{% for item in items %}…{% endfor %}" in visible_html(html)
    assert "{% for item in items %}…{% endfor %}" in seen(text)
    assert "-first_name_html- and -unsubscribe_url-," in visible_html(html)
    assert html.count("aida@example.org") == 0  # the tracker's -email_html- stayed text
    assert html.count("Aida") == 1  # "Hello Aida," only


def test_template_residue_is_still_an_error_against_the_template(project: Project) -> None:
    """An old-style tag or a leaked `{{` in a template is the template's error; the same
    characters in an article are a warning on the article."""
    project.restore()
    layout = project.root / "templates" / "_layout.mjml.j2"
    original = layout.read_text()
    leaky = original.replace("Hello {{ ph.first_name }},", "Hello -first_name_html- {{ '{{' }},")
    assert leaky != original
    layout.write_text(leaky)
    try:
        report = build.check_file(project.issue, project.settings).report
    finally:
        layout.write_text(original)
    errors = {(p.file, p.message.split(";")[0]) for p in report.errors}
    template = project.root / "templates" / "digest.mjml.j2"
    assert (template, "unknown placeholder -first_name_html- in the html") in errors
    assert any(f == template and "template syntax '{{'" in m for f, m in errors)


def test_tags_from_an_earlier_build_are_never_filled(project: Project) -> None:
    project.restore()
    project.write_issue({"subject": "A new week"})  # new content: a new key
    rendered = build_issue(project.issue, project.settings).email
    assert not set(EARLIER_TAGS) & rendered.tags.all()
    stale = " ".join(EARLIER_TAGS)
    assert placeholders.fill(stale, READER, part="html", tags=rendered.tags) == stale
    assert placeholders.fill(stale, READER, part="text", tags=rendered.tags) == stale


def test_the_key_follows_the_content_and_builds_stay_deterministic(project: Project) -> None:
    project.restore()
    first = build_issue(project.issue, project.settings).email
    again = build_issue(project.issue, project.settings).email
    assert (first.html, first.text, first.tags) == (again.html, again.text, again.tags)
    project.write_issue({"subject": "Another subject"})
    other = build_issue(project.issue, project.settings).email
    assert other.tags.key != first.tags.key
    assert re.fullmatch(r"[0-9a-f]{12}", other.tags.key)


# ---- the pieces, on their own -----------------------------------------------------------


@given(st.lists(st.sampled_from([*TAG_ALPHABET, inert.JOINER, "a"]), max_size=20).map("".join))
def test_inert_text_leaves_no_shape_and_reads_the_same(typed: str) -> None:
    made = inert.text(typed)
    assert inert.SHAPES.search(made) is None
    assert made.replace(inert.JOINER, "") == typed.replace(inert.JOINER, "")
    assert inert.text(made) == made


@given(st.lists(st.sampled_from([*URL_SAFE, "%", "#", "%7B"]), max_size=20).map("".join))
def test_inert_urls_leave_no_shape_and_mean_the_same(typed: str) -> None:
    made = inert.url(typed)
    assert inert.SHAPES.search(made) is None
    assert not {"{", "}"} & set(made)
    assert unquote(made) == unquote(typed)


@given(st.lists(st.sampled_from([*TAG_ALPHABET, *MARKDOWN_ONLY, " ", "\n", "`"]), max_size=25))
def test_markdown_html_never_spells_a_shape(pieces: list[str]) -> None:
    from newsletter.markdown import to_html
    from newsletter.text import wrap_markdown

    source = "".join(pieces)
    assert inert.SHAPES.search(to_html(source)) is None
    assert inert.SHAPES.search(wrap_markdown(source)) is None if source.strip() else True


@given(st.sampled_from(placeholders.FIELDS), st.sampled_from(placeholders.FIELDS))
def test_a_value_holding_another_tag_is_not_filled_again(into: str, carried: str) -> None:
    tags = placeholders.Tags("0123456789ab")
    values = {"first_name": "Ann", "email": "ann@x.test", "unsubscribe_url": "https://u.test/t"}
    values[into] = tags.text(carried)
    reader = Recipient(values["email"], values["first_name"], values["unsubscribe_url"])
    body = tags.text(into)
    assert placeholders.fill(body, reader, part="text", tags=tags) == tags.text(carried)


def test_the_golden_build_has_keyed_tags() -> None:
    assert EARLIER_TAGS, "the golden files should hold the sample build's tags"
    assert all(re.fullmatch(r"-[a-z_]+-[0-9a-f]{12}-", t) for t in EARLIER_TAGS)


CARD = "content/articles/tajikistan-export-support-program-small-producers-farmers.md"


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    word=st.text(alphabet="abcxyz", min_size=60, max_size=120),
    tag=st.sampled_from(["-email_html-", "-first_name-", "-unsubscribe_url-", "-x_html-"]),
)
def test_a_long_word_ending_in_a_tag_shape_is_never_cut_into_a_template_error(
    tmp_path_factory: pytest.TempPathFactory, word: str, tag: str
) -> None:
    """The text part wraps card summaries at 72 columns: Jinja's wordwrap cut a long word at
    its hyphen, the tag-shaped end began a line, and preflight blocked the issue with an
    error blamed on templates/digest.txt.j2."""
    root = tmp_path_factory.mktemp("wrap")
    for name in ("content", "templates", "issues"):
        shutil.copytree(REPO / name, root / name)
    article = root / CARD
    text = article.read_text(encoding="utf-8")
    start = text.index("summary:")
    end = text.index("\ntags:", start)
    article.write_text(text[:start] + f'summary: "{word}{tag}"' + text[end:], encoding="utf-8")
    checked = build.check_file(root / "issues" / "2025-12-10.yaml", load_settings(root, env={}))
    assert checked.report.errors == ()
    assert f"{word}{tag}" in seen(checked.email.text)
