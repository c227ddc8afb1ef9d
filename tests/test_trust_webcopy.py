"""The public web copy is what was sent, and draft articles never reach a public page.

Attacks: whatever is done to the issue file, the articles or the templates after a send,
the page at `/issues/<name>/` (a real uvicorn server, read over HTTP) stays byte-equal to
the stored copy whose hash the ledger records, filled for an anonymous reader; no name
tells an unsent issue from an unknown one; a draft article dated inside a sent issue's
window is never selected, and naming one in an issue is an error on that issue's line.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event
from sqlalchemy.engine import Engine

from newsletter import audience, copies, db, dispatch, ledger, placeholders, tokens
from newsletter.archive import WebCopies
from newsletter.build import build_issue
from newsletter.config import Settings
from newsletter.errors import DispatchError, IssueError
from newsletter.issues import select
from newsletter.mailers import Mailer
from newsletter.mailers.outbox import OutboxMailer
from newsletter.mailers.sendgrid import SendGridMailer
from newsletter.models import Article, AudienceSpec, Query, RenderedEmail
from newsletter.readers import anonymous_reader
from newsletter.web import create_app
from tests.conftest import REPO, TEST_KEYS, run_newsletter, uvicorn_port

ISSUE = "2025-12-10"
SECRET_TITLE = "Embargoed: Central Bank Devalues the Som Tomorrow"
# What content may say: the characters that break HTML, YAML, templates and placeholders.
PIECES = [*"<>&\"'{}%#-_=?:\n\r\t\\ /", "{{", "}}", "{%", "-email_html-", "-unsubscribe_url-"]
DANGEROUS = st.lists(
    st.sampled_from(PIECES) | st.characters(codec="utf-8", exclude_categories=["Cs"]),
    max_size=20,
).map("".join)


@pytest.fixture
def site(db_settings: Settings, project: Path, engine: Engine) -> Settings:
    """The sample project on the test database, with one confirmed reader on `weekly`."""
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
        audience.add_subscriber(conn, "dana@example.org", "weekly", name="Dana", confirmed=True)
    return dataclasses.replace(db_settings, root=project)


@contextmanager
def serving(site: Settings) -> Iterator[httpx.Client]:
    """`create_app` under a real uvicorn on 127.0.0.1, and a client for it."""
    with (
        uvicorn_port(create_app(site)) as port,
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http,
    ):
        yield http


@pytest.fixture
def http(site: Settings) -> Iterator[httpx.Client]:
    with serving(site) as client:
        yield client


def issue_file(site: Settings) -> Path:
    return site.path("issues_dir") / f"{ISSUE}.yaml"


def send(
    site: Settings,
    engine: Engine,
    *,
    mailer: Mailer | None = None,
    options: dispatch.SendOptions | None = None,
    spec: AudienceSpec | None = None,
) -> RenderedEmail:
    """Build the issue from today's files and send it; returns what was sent."""
    email = build_issue(issue_file(site), site).email
    dispatch.send_issue(
        engine,
        email,
        spec or AudienceSpec("weekly"),
        mailer or OutboxMailer(site.path("outbox_dir"), site),
        lambda public_id: tokens.unsubscribe_url(site, public_id, "weekly"),
        options or dispatch.SendOptions(),
    )
    return email


def stored(engine: Engine) -> copies.StoredCopy | None:
    with db.reading(engine) as conn:
        return copies.load(conn, ISSUE)


def ledger_hash(engine: Engine) -> str:
    with db.reading(engine) as conn:
        record = ledger.send_record(conn, ISSUE)
    assert record is not None
    return record.content_hash


def named_by_ledger(engine: Engine, site: Settings) -> bytes:
    """The stored copy whose hash the ledger records (checked by hashing it), filled."""
    copy = stored(engine)
    assert copy is not None
    parts = (copy.subject, copy.preheader, copy.html, copy.text)
    assert hashlib.sha256("\0".join(parts).encode()).hexdigest() == ledger_hash(engine)
    return placeholders.fill(
        copy.html, anonymous_reader(site), part="html", tags=copy.tags
    ).encode()


def write_article(
    site: Settings, slug: str, *, draft: str | None, title: str = SECRET_TITLE
) -> Path:
    """An article dated on the issue's date, tagged so that the issue's queries pick it."""
    path = site.path("content_dir") / "articles" / f"{slug}.md"
    flag = f"draft: {draft}\n" if draft is not None else ""
    path.write_text(
        "---\n"
        f"slug: {slug}\n"
        f"title: {json.dumps(title)}\n"
        "date: 2025-12-10\n"
        f"url: https://news.example.org/{slug}/\n"
        "summary: Not to be published before its time.\n"
        "tags: [topic/trade, topic/education]\n"
        f"{flag}"
        "---\n"
        "The body.\n",
        encoding="utf-8",
    )
    return path


# --- 1. The copy is stored when the send opens, and only then -----------------------------


def test_a_send_stores_exactly_what_it_sent_and_the_page_serves_those_bytes(
    site: Settings, engine: Engine, http: httpx.Client
) -> None:
    assert http.get(f"/issues/{ISSUE}/").status_code == 404
    email = send(site, engine)
    copy = stored(engine)
    assert copy == copies.StoredCopy(
        ISSUE,
        "weekly",
        email.subject,
        email.preheader,
        email.html,
        email.text,
        email.content_hash,
        email.tags,
    )
    assert ledger_hash(engine) == email.content_hash
    page = http.get(f"/issues/{ISSUE}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == named_by_ledger(engine, site)
    assert b"Hello reader," in page.content
    # Every tag the build placed is filled: none is left for a reader to see.
    assert not re.search(rb"-(?:first_name|email|unsubscribe_url)(?:_html)?-", page.content)
    assert b"Dana" not in page.content
    assert b"/u/" not in page.content


def test_test_copies_and_dry_runs_store_nothing_and_a_real_send_does(
    site: Settings, engine: Engine, database_url: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_DATABASE_URL": database_url,
        "NEWSLETTER_SECRET_KEY": TEST_KEYS,
        "NEWSLETTER_BASE_URL": "https://news.test",
    }
    root = site.root
    for args in (["--dry-run"], ["--test", "editor@example.org"]):
        done = run_newsletter(root, "send", f"issues/{ISSUE}.yaml", *args, env=env)
        assert done.returncode == 0, done.stderr
        assert stored(engine) is None
    done = run_newsletter(root, "send", f"issues/{ISSUE}.yaml", "--yes", env=env)
    assert done.returncode == 0, done.stderr
    copy = stored(engine)
    assert copy is not None
    assert copy.content_hash == ledger_hash(engine)
    assert copy.html == build_issue(issue_file(site), site).email.html


def test_a_changed_rerun_replaces_the_copy_only_when_allowed(
    site: Settings, engine: Engine, http: httpx.Client
) -> None:
    first = send(site, engine)
    before = http.get(f"/issues/{ISSUE}/").content
    path = issue_file(site)
    path.write_text(path.read_text().replace("Kyrgyz apricots", "Corrected: Kyrgyz apricots"))
    with db.writing(engine) as conn:
        audience.add_subscriber(conn, "eve@example.org", "weekly", confirmed=True)
    with pytest.raises(DispatchError, match="--allow-changed"):
        send(site, engine)
    kept = stored(engine)
    assert kept is not None
    assert (kept.content_hash, kept.html) == (first.content_hash, first.html)
    assert http.get(f"/issues/{ISSUE}/").content == before
    second = send(site, engine, options=dispatch.SendOptions(allow_changed=True))
    assert second.content_hash != first.content_hash
    assert ledger_hash(engine) == second.content_hash
    replaced = stored(engine)
    assert replaced is not None
    assert replaced.subject == second.subject
    assert replaced.subject.startswith("Corrected: Kyrgyz apricots")
    after = http.get(f"/issues/{ISSUE}/").content  # the same server: its cache follows
    assert after == named_by_ledger(engine, site) != before


# --- 2. Served from the stored copy only ---------------------------------------------------


def _rewrite_intro(site: Settings, text: str) -> None:
    path = issue_file(site)
    definition = yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else {}
    definition["intro"] = f"Rewritten after the send: {text}"
    path.write_text(yaml.safe_dump(definition, allow_unicode=True), encoding="utf-8")


def _append_to_bodies(site: Settings, text: str) -> None:
    for path in (site.path("content_dir") / "articles").glob("*.md"):
        path.write_text(path.read_text() + f"\n{text}\n", encoding="utf-8")


def _add_article(site: Settings, text: str) -> None:
    number = len(list((site.path("content_dir") / "articles").glob("*.md")))
    write_article(site, f"late-{number}", draft=None, title=f"{SECRET_TITLE} {text}")


def _add_draft(site: Settings, text: str) -> None:
    number = len(list((site.path("content_dir") / "articles").glob("*.md")))
    write_article(site, f"draft-{number}", draft="true", title=f"{SECRET_TITLE} {text}")


def _delete(site: Settings, _text: str) -> None:
    issue_file(site).unlink(missing_ok=True)
    for path in sorted((site.path("content_dir") / "articles").glob("*.md"))[:1]:
        path.unlink()


def _break_template(site: Settings, text: str) -> None:
    path = site.path("templates_dir") / "digest.mjml.j2"
    path.write_text(f"{{{{ broken {text!r}", encoding="utf-8")


EDITS: dict[str, Callable[[Settings, str], None]] = {
    "rewrite the intro": _rewrite_intro,
    "append to every article": _append_to_bodies,
    "publish a new article in the issue's window": _add_article,
    "add a draft in the issue's window": _add_draft,
    "delete the issue and an article": _delete,
    "break the template": _break_template,
}


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(edits=st.lists(st.tuples(st.sampled_from(sorted(EDITS)), DANGEROUS), min_size=1, max_size=3))
def test_nothing_done_to_the_files_after_the_send_changes_the_page(
    sent_site: tuple[Settings, Engine, httpx.Client, bytes], edits: list[tuple[str, str]]
) -> None:
    site, engine, http, expected = sent_site
    for folder in ("issues", "content", "templates"):  # each example edits the sent files
        shutil.rmtree(site.root / folder)
        shutil.copytree(REPO / folder, site.root / folder)
    for name, text in edits:
        EDITS[name](site, text)
    page = http.get(f"/issues/{ISSUE}/")
    assert page.status_code == 200
    assert page.content == expected == named_by_ledger(engine, site)
    assert SECRET_TITLE.encode() not in page.content


@pytest.fixture
def sent_site(
    site: Settings, engine: Engine, http: httpx.Client
) -> tuple[Settings, Engine, httpx.Client, bytes]:
    send(site, engine)
    expected = http.get(f"/issues/{ISSUE}/").content
    assert expected == named_by_ledger(engine, site)
    return site, engine, http, expected


def test_a_fresh_server_without_the_project_files_serves_the_same_bytes(
    site: Settings, engine: Engine
) -> None:
    send(site, engine)
    expected = named_by_ledger(engine, site)
    for folder in ("issues_dir", "content_dir", "templates_dir"):
        shutil.rmtree(site.path(folder))
    with serving(site) as http:  # a cold cache: nothing to re-render from, nothing needed
        assert http.get(f"/issues/{ISSUE}/").content == expected


def test_a_get_costs_one_primary_key_lookup_once_the_page_is_filled(
    site: Settings, engine: Engine
) -> None:
    send(site, engine)
    statements: list[str] = []

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        statements.append(" ".join(statement.split()).lower())

    event.listen(engine, "before_cursor_execute", seen)
    web = WebCopies(site, engine)
    first = web.page(ISSUE)
    assert first == named_by_ledger(engine, site)
    statements.clear()
    for _ in range(5):
        assert web.page(ISSUE) == first
    event.remove(engine, "before_cursor_execute", seen)
    reads = [s for s in statements if s.startswith("select")]
    assert len(reads) == 5
    assert all("issue_copies.content_hash" in s and "issue_copies.html" not in s for s in reads)
    assert not any("send_ledger" in s for s in reads)


# --- Who may see it: the same 404 for unknown, unsent, embargoed and odd names -------------

# A '/' makes another path, not another name (Starlette's routing answers those).
NAMES = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=70),
    st.sampled_from([ISSUE, f"{ISSUE}\n", f"{ISSUE}.yaml", f" {ISSUE}", "..", "%00", "nope"]),
    st.builds(lambda s: ISSUE + s, st.text(alphabet="\n\r\x00.%?#", min_size=1, max_size=3)),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(name=NAMES)
def test_unknown_unsent_and_odd_names_get_one_and_the_same_404(
    unsent: tuple[httpx.Client, bytes], name: str
) -> None:
    http, not_found = unsent
    page = http.get(f"/issues/{quote(name, safe='')}/")
    assert (page.status_code, page.content) == (404, not_found)


@pytest.fixture
def unsent(site: Settings, engine: Engine, http: httpx.Client) -> tuple[httpx.Client, bytes]:
    """The issue "sent" to an empty list: its copy is stored, but nobody has it."""
    with db.writing(engine) as conn:
        audience.create_list(conn, "nobody")
    send(site, engine, spec=AudienceSpec("nobody"))
    assert stored(engine) is not None
    not_found = http.get("/issues/never-heard-of-it/")
    assert not_found.status_code == 404
    return http, not_found.content


def test_a_scheduled_issue_is_embargoed_until_its_time(
    site: Settings, engine: Engine, http: httpx.Client, mailer: SendGridMailer
) -> None:
    at = db.now() + dt.timedelta(seconds=3)
    send(site, engine, mailer=mailer, options=dispatch.SendOptions(send_at=at))
    with db.reading(engine) as conn:
        assert ledger.counts(conn, ISSUE)["sent"] == 1  # SendGrid accepted it: not delivered
        assert not copies.delivered(conn, ISSUE, at - dt.timedelta(seconds=1))
        assert copies.delivered(conn, ISSUE, at + dt.timedelta(seconds=1))
    assert http.get(f"/issues/{ISSUE}/").status_code == 404
    while db.now() <= at:
        time.sleep(0.1)
    assert http.get(f"/issues/{ISSUE}/").content == named_by_ledger(engine, site)


# --- 3. Drafts -----------------------------------------------------------------------------

DAY = dt.date(2025, 12, 10)
TAGS = ["a", "b", "c"]
ARTICLES = st.lists(
    st.builds(
        lambda n, days, tags, draft: Article(
            slug=f"a{n}",
            title=f"Title {n % 3}",
            date=DAY - dt.timedelta(days=days),
            url=f"https://news.example.org/{n}/",
            summary="",
            body="",
            tags=tuple(tags),
            draft=draft,
        ),
        st.integers(0, 10**6),
        st.integers(-3, 20),
        st.lists(st.sampled_from(TAGS), max_size=3, unique=True),
        st.booleans(),
    ),
    max_size=25,
    unique_by=lambda a: a.slug,
)
QUERIES = st.builds(
    Query,
    tags_any=st.lists(st.sampled_from(TAGS), max_size=2).map(tuple),
    tags_all=st.lists(st.sampled_from(TAGS), max_size=2).map(tuple),
    days=st.integers(1, 30),
    limit=st.none() | st.integers(1, 10),
    order=st.sampled_from(["newest", "oldest", "title"]),
)


@given(articles=ARTICLES, query=QUERIES)
def test_no_query_ever_selects_a_draft_nor_lets_one_change_what_it_selects(
    articles: list[Article], query: Query
) -> None:
    picked = select(articles, query, DAY)
    assert not any(a.draft for a in picked)
    assert picked == select([a for a in articles if not a.draft], query, DAY)


def test_a_draft_in_a_sent_issues_window_never_reaches_the_email_or_the_page(
    site: Settings, engine: Engine, http: httpx.Client
) -> None:
    write_article(site, "devaluation", draft="true")
    email = send(site, engine)
    assert SECRET_TITLE not in email.html
    assert SECRET_TITLE not in email.text
    write_article(site, "devaluation", draft="false")  # published the next day
    page = http.get(f"/issues/{ISSUE}/")
    assert page.status_code == 200
    assert SECRET_TITLE.encode() not in page.content
    assert page.content == named_by_ledger(engine, site)


def test_naming_a_draft_in_an_issue_is_an_error_on_that_line(site: Settings) -> None:
    draft = write_article(site, "devaluation", draft="true")
    path = issue_file(site)
    text = path.read_text()
    path.write_text(text.replace("[kyrgyzstan-dried-apricot-exports-china]", "[devaluation]"))
    line = 1 + text.splitlines().index("    articles: [kyrgyzstan-dried-apricot-exports-china]")
    with pytest.raises(IssueError) as caught:
        build_issue(path, site)
    [problem] = [p for p in caught.value.problems if "draft" in p.message]
    assert (problem.file, problem.field, problem.line) == (path, "sections[0].articles[0]", line)
    assert str(draft) in problem.message
    assert "draft: true" in problem.message
    done = run_newsletter(site.root, "build", f"issues/{ISSUE}.yaml")
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert f"{ISSUE}.yaml:{line}" in done.stderr + done.stdout


@pytest.mark.parametrize("value", ["maybe", "1", "[true]", "{}"])
def test_a_draft_flag_that_is_not_true_or_false_names_the_article_and_field(
    site: Settings, value: str
) -> None:
    path = write_article(site, "devaluation", draft=value)
    with pytest.raises(IssueError) as caught:
        build_issue(issue_file(site), site)
    [problem] = caught.value.problems
    assert (problem.file, problem.field) == (path, "draft")
    assert "true or false" in problem.message
