"""The archive: `newsletter archive build` and the same pages from `newsletter serve`.

Everything is built from the copies stored at send time, sent for real through the outbox
(or the fake SendGrid, for a scheduled send), and read back as readers do: feedparser for
the feeds, an HTML parser for the pages, lxml for the feed's structure.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import html.parser
import itertools
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import feedparser
import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import delete, select
from sqlalchemy.engine import Engine

from newsletter import audience, db, dispatch, site, tokens
from newsletter.build import build_issue
from newsletter.config import Settings
from newsletter.errors import IssueError
from newsletter.mailers.outbox import OutboxMailer
from newsletter.mailers.sendgrid import SendGridMailer
from newsletter.models import AudienceSpec, RenderedEmail
from newsletter.placeholders import Tags
from newsletter.schema import issue_copies, lists, send_issues, subscribers
from newsletter.web import create_app
from tests.conftest import TEST_KEYS, Served, run_newsletter, uvicorn_port

ATOM = "{http://www.w3.org/2005/Atom}"
DANA = ("dana@example.org", "Dana Quillfeather")


def story_html(lang: str, *stories: str) -> str:
    """An email as the templates make it: a language, and an h3 per story."""
    headings = "".join(
        f"<h3><a href='https://n.example/{i}'>{s}</a></h3>" for i, s in enumerate(stories)
    )
    return (
        f'<!doctype html><html lang="{lang}"><body><h1>Weekly</h1>'
        f"<p>Hello -first_name_html-,</p>{headings}"
        '<a href="-unsubscribe_url-">Unsubscribe</a></body></html>'
    )


def hand_made(
    name: str, subject: str, html_part: str, preheader: str = "This week"
) -> RenderedEmail:
    return RenderedEmail(
        issue_name=name,
        subject=subject,
        preheader=preheader,
        from_name="Central Asia Weekly",
        from_email="digest@news.example.org",
        html=html_part,
        text="Hello -first_name-\nUnsubscribe: -unsubscribe_url-\n",
        mjml="<mjml></mjml>",
        content_hash=f"hash-{name}-{abs(hash(subject))}",
    )


def send(
    settings: Settings, engine: Engine, mail: RenderedEmail, list_name: str = "weekly"
) -> None:
    """Send `mail` for real through the outbox to the list's members."""
    report = dispatch.send_issue(
        engine,
        mail,
        AudienceSpec(list_name),
        OutboxMailer(settings.path("outbox_dir"), settings),
        lambda public_id: tokens.unsubscribe_url(settings, public_id, list_name),
        dispatch.SendOptions(),
    )
    assert report.sent >= 1


def make_list(engine: Engine, name: str, public: bool, title: str = "") -> None:
    with db.writing(engine) as conn:
        audience.create_list(conn, name, title, public=public)
        audience.add_subscriber(conn, DANA[0], name, name=DANA[1], confirmed=True)


def set_published(engine: Engine, issue: str, day: str) -> None:
    """Date a sent issue (the send opened on `day`), so order does not rest on the clock."""
    moment = dt.datetime.fromisoformat(f"{day}T06:00:00+00:00")
    with db.writing(engine) as conn:
        conn.execute(
            send_issues.update().where(send_issues.c.issue == issue).values(created_at=moment)
        )
        conn.execute(
            issue_copies.update().where(issue_copies.c.issue == issue).values(stored_at=moment)
        )


@pytest.fixture
def project_settings(db_settings: Settings, project: Path) -> Settings:
    return dataclasses.replace(db_settings, root=project)


@pytest.fixture
def weekly(project_settings: Settings, engine: Engine) -> Settings:
    """A public list with a subscriber, and two issues sent to it (the sample and one more)."""
    make_list(engine, "weekly", public=True, title="Central Asia Weekly")
    sample = build_issue(project_settings.path("issues_dir") / "2025-12-10.yaml", project_settings)
    send(project_settings, engine, sample.email)
    later = hand_made(
        "2025-12-17",
        "Rates & <tea> week",
        story_html("en", "Tea prices", "Dam opens", "Road", "Extra"),
    )
    send(project_settings, engine, later)
    set_published(engine, "2025-12-10", "2025-12-10")
    set_published(engine, "2025-12-17", "2025-12-17")
    return project_settings


def cli_env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWSLETTER_")}
    env |= {
        "NEWSLETTER_DATABASE_URL": settings.database,
        "NEWSLETTER_SECRET_KEY": TEST_KEYS,
        "NEWSLETTER_BASE_URL": settings.base_url,
    }
    return env


def archive_build(settings: Settings, *args: str) -> tuple[int, str]:
    done = run_newsletter(settings.root, "archive", "build", *args, env=cli_env(settings))
    return done.returncode, done.stdout + done.stderr


def tree(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


# --- The static site ------------------------------------------------------------------


def test_build_twice_gives_the_same_bytes_and_no_personal_data(weekly: Settings) -> None:
    out = weekly.root / "site"
    code, said = archive_build(weekly, "--out", str(out))
    assert code == 0, said
    first = tree(out)
    code, said = archive_build(weekly, "--out", str(out))
    assert code == 0, said
    assert tree(out) == first  # rebuilt in place: byte for byte
    assert set(first) == {
        ".newsletter-archive",
        "archive/index.html",
        "archive/weekly/index.html",
        "archive/weekly/en/index.html",
        "archive/weekly/en/feed.atom",
        "issues/2025-12-10/index.html",
        "issues/2025-12-17/index.html",
    }
    # Nothing personal: Dana's address and name, her public id, her token, any placeholder.
    received = next((weekly.path("outbox_dir") / "2025-12-10").glob("*.eml"))
    message = email.message_from_bytes(received.read_bytes(), policy=email.policy.default)
    token = str(message["List-Unsubscribe"]).strip("<>").rsplit("/", 1)[-1]
    engine = db.connect(weekly)
    with db.reading(engine) as conn:
        public_id = conn.execute(
            select(subscribers.c.public_id).where(subscribers.c.email == DANA[0])
        ).scalar_one()
        keys = [row.tags_key for row in conn.execute(select(issue_copies.c.tags_key))]
    engine.dispose()
    secrets = [DANA[0], "Quillfeather", token, public_id, *filter(None, keys)]
    assert len(token) > 20
    for name, data in first.items():
        for secret in secrets:
            assert secret.encode() not in data, (name, secret)
        assert b"-unsubscribe_url" not in data, name
        assert b"-first_name" not in data, name
        assert b"/u/" not in data, name


def test_the_issue_page_is_the_web_copy_and_the_emails_link_names_it(weekly: Settings) -> None:
    out = weekly.root / "site"
    assert archive_build(weekly, "--out", str(out))[0] == 0
    page = (out / "issues/2025-12-10/index.html").read_text(encoding="utf-8")
    assert "Kyrgyzstan Begins Dried Apricot Exports to China" in page
    assert "Hello reader," in page
    # The email's "View in browser" link is this file's place on the site.
    assert 'href="https://news.test/issues/2025-12-10/"' in page
    index = IndexReader.read((out / "archive/weekly/en/index.html").read_text(encoding="utf-8"))
    assert index.links[:2] == [
        "https://news.test/issues/2025-12-17/",
        "https://news.test/issues/2025-12-10/",
    ]


def test_the_feed_validates_and_lists_the_issues_newest_first(weekly: Settings) -> None:
    out = weekly.root / "site"
    assert archive_build(weekly, "--out", str(out))[0] == 0
    data = (out / "archive/weekly/en/feed.atom").read_bytes()
    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert parsed.feed.title == "Central Asia Weekly"
    assert [e.link for e in parsed.entries] == [
        "https://news.test/issues/2025-12-17/",
        "https://news.test/issues/2025-12-10/",
    ]
    newest = parsed.entries[0]
    assert newest.title == "Rates & <tea> week"
    assert newest.id == "tag:news.test,2025-12-17:issues/2025-12-17"
    assert newest.updated == "2025-12-17T06:00:00Z"
    assert newest.summary.splitlines() == ["This week", "Tea prices", "Dam opens", "Road"]
    assert parsed.entries[1].title == "Kyrgyz apricots head to China; Kazakhstan courts Turkey"
    assert_atom_structure(data, "https://news.test/archive/weekly/en/feed.atom")


def assert_atom_structure(data: bytes, self_url: str) -> None:
    """RFC 4287's required elements, without a schema: what every feed reader relies on."""
    root = etree.fromstring(data)
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated", "author"):
        assert len(root.findall(f"{ATOM}{required}")) == 1, required
    links = {link.get("rel"): link.get("href") for link in root.findall(f"{ATOM}link")}
    assert links["self"] == self_url
    assert links["alternate"] == self_url.removesuffix("feed.atom")
    ids = []
    stamp = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\Z")
    assert stamp.match(root.findtext(f"{ATOM}updated") or "")
    for entry in root.findall(f"{ATOM}entry"):
        for required in ("id", "title", "updated", "summary"):
            assert len(entry.findall(f"{ATOM}{required}")) == 1, required
        assert stamp.match(entry.findtext(f"{ATOM}updated") or "")
        alternate = [a for a in entry.findall(f"{ATOM}link") if a.get("rel") == "alternate"]
        assert len(alternate) == 1
        assert alternate[0].get("type") == "text/html"
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(ids) == len(set(ids))
    assert all(i and i.startswith("tag:") for i in ids)
    # The feed's updated is its newest entry's.
    updates = [e.findtext(f"{ATOM}updated") for e in root.findall(f"{ATOM}entry")]
    assert root.findtext(f"{ATOM}updated") == max(u for u in updates if u)


def test_lead_stories_are_the_h3_headings_of_what_was_sent(weekly: Settings) -> None:
    out = weekly.root / "site"
    assert archive_build(weekly, "--out", str(out))[0] == 0
    index = IndexReader.read((out / "archive/weekly/en/index.html").read_text(encoding="utf-8"))
    assert index.subjects[0] == "Rates & <tea> week"
    assert index.leads[0] == ["Tea prices", "Dam opens", "Road"]  # the first three
    assert index.dates[:2] == ["2025-12-17", "2025-12-10"]


def test_the_archive_shows_what_was_sent_not_todays_files(weekly: Settings) -> None:
    issue_file = weekly.path("issues_dir") / "2025-12-10.yaml"
    issue_file.write_text(
        issue_file.read_text(encoding="utf-8").replace("subject:", "subject: EDITED"),
        encoding="utf-8",
    )
    shutil.rmtree(weekly.path("content_dir"))
    out = weekly.root / "site"
    code, said = archive_build(weekly, "--out", str(out))
    assert code == 0, said
    assert b"EDITED" not in b"".join(tree(out).values())
    assert "Kyrgyzstan Begins Dried Apricot" in (out / "issues/2025-12-10/index.html").read_text(
        encoding="utf-8"
    )


# --- Who may see what ------------------------------------------------------------------


def test_private_and_deleted_lists_and_unsent_issues_stay_out(
    weekly: Settings, engine: Engine
) -> None:
    make_list(engine, "staff", public=False)
    send(
        weekly,
        engine,
        hand_made("staff-1", "Staff only: salaries", story_html("en", "Pay")),
        "staff",
    )
    make_list(engine, "gone", public=True)
    send(
        weekly, engine, hand_made("gone-1", "From a deleted list", story_html("en", "Old")), "gone"
    )
    with db.writing(engine) as conn:
        conn.execute(delete(lists).where(lists.c.name == "gone"))
    out = weekly.root / "site"
    code, said = archive_build(weekly, "--out", str(out))
    assert code == 0, said
    everything = b"".join(tree(out).values())
    assert b"salaries" not in everything
    assert b"deleted list" not in everything
    assert not (out / "issues/staff-1").exists()
    assert not (out / "archive/staff").exists()
    assert "left out staff-1: its list 'staff' is private" in said
    assert "left out gone-1: its list 'gone' was deleted" in said
    code, said = archive_build(weekly, "--out", str(out), "--issue", "staff-1")
    assert code == 1
    assert "--issue staff-1: not in the archive: its list 'staff' is private" in said
    code, said = archive_build(weekly, "--out", str(out), "--issue", "2031-01-01")
    assert code == 1
    assert "2031-01-01: not in the archive: it was never sent" in said
    code, said = archive_build(weekly, "--out", str(out), "--issue", "2025-12-10")
    assert code == 0, said


def test_a_scheduled_issue_is_embargoed_until_its_time(
    engine: Engine, db_settings: Settings, mailer: SendGridMailer
) -> None:
    make_list(engine, "weekly", public=True)
    at = db.now() + dt.timedelta(hours=2)
    options = dispatch.SendOptions(send_at=at)
    mail = hand_made("2025-12-24", "Christmas issue", story_html("en", "Snow"))

    def link(public_id: str) -> str:
        return tokens.unsubscribe_url(db_settings, public_id, "weekly")

    report = dispatch.send_issue(engine, mail, AudienceSpec("weekly"), mailer, link, options)
    assert report.sent == 1
    with db.reading(engine) as conn:
        before = site.catalogue(conn, db.now())
        after = site.catalogue(conn, at + dt.timedelta(seconds=1))
    assert before.entries == ()
    assert "nobody has received it yet" in before.withheld[0].reason
    assert [e.issue for e in after.entries] == ["2025-12-24"]
    assert after.entries[0].published == at.replace(microsecond=0)


def test_an_empty_archive_is_a_site_that_says_so(db_settings: Settings, engine: Engine) -> None:
    out = db_settings.root / "site"
    code, said = archive_build(db_settings, "--out", str(out))
    assert code == 0, said
    assert "0 issue pages" in said
    assert "No issue has been published yet." in (out / "archive/index.html").read_text(
        encoding="utf-8"
    )


def test_an_unwritable_out_is_refused_and_the_old_site_stays(weekly: Settings) -> None:
    blocker = weekly.root / "a-file"
    blocker.write_text("not a folder", encoding="utf-8")
    code, said = archive_build(weekly, "--out", str(blocker / "site"))
    assert code == 1
    assert "--out" in said
    assert "cannot write the archive there" in said
    assert "Traceback" not in said
    code, said = archive_build(weekly, "--out", str(blocker))
    assert code == 1
    assert "not a folder" in said
    assert blocker.read_text(encoding="utf-8") == "not a folder"


def test_a_folder_the_archive_did_not_write_is_never_replaced(weekly: Settings) -> None:
    mine = weekly.root / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("years of work", encoding="utf-8")
    code, said = archive_build(weekly, "--out", str(mine))
    assert code == 1
    assert "holds files the archive did not write" in said
    assert tree(mine) == {"thesis.txt": b"years of work"}


def test_lead_stories_holding_a_placeholder_tag_are_not_published(
    project_settings: Settings, engine: Engine
) -> None:
    # A heading such as "{{ ph.first_name }}, this is for you" is stored with the build's
    # keyed tag; published raw it would show the tag and its key to everybody.
    make_list(engine, "weekly", public=True)
    tag = Tags("k3y").html("first_name")
    mail = hand_made("2025-12-24", "Personal", story_html("en", f"{tag}, for you", "Plain news"))
    send(project_settings, engine, dataclasses.replace(mail, tags=Tags("k3y")))
    out = project_settings.root / "site"
    code, said = archive_build(project_settings, "--out", str(out))
    assert code == 0, said
    index = IndexReader.read((out / "archive/weekly/en/index.html").read_text(encoding="utf-8"))
    assert index.leads[0] == ["Plain news"]
    for path in ("archive/weekly/en/index.html", "archive/weekly/en/feed.atom"):
        published = (out / path).read_text(encoding="utf-8")
        assert "k3y" not in published
        assert "first_name" not in published


def test_a_web_root_the_site_was_copied_into_is_never_replaced(weekly: Settings) -> None:
    # The marker travels with a copied site; it must not make the user's files the archive's.
    built, root = weekly.root / "site", weekly.root / "www"
    assert archive_build(weekly, "--out", str(built))[0] == 0
    root.mkdir()
    (root / "about.html").write_text("our own page", encoding="utf-8")
    (root / "archive").mkdir()
    (root / "archive" / "logo.png").write_bytes(b"\x89PNG ours")
    shutil.copytree(built, root, dirs_exist_ok=True)
    before = tree(root)
    code, said = archive_build(weekly, "--out", str(root))
    assert code == 1
    assert "holds 'about.html' the archive did not write" in said
    assert "nothing was changed" in said
    assert tree(root) == before
    assert tree(root)["about.html"] == b"our own page"
    assert tree(root)["archive/logo.png"] == b"\x89PNG ours"
    # The archive's own folder, untouched, is rebuilt as before.
    assert archive_build(weekly, "--out", str(built))[0] == 0


def test_the_marker_lists_every_file_the_build_wrote(weekly: Settings) -> None:
    out = weekly.root / "site"
    assert archive_build(weekly, "--out", str(out))[0] == 0
    lines = (out / ".newsletter-archive").read_text(encoding="utf-8").splitlines()
    written = sorted(set(tree(out)) - {".newsletter-archive"})
    assert [line for line in lines if not line.startswith("#")] == written


def test_a_rebuild_replaces_the_old_site_whole(weekly: Settings, engine: Engine) -> None:
    out = weekly.root / "site"
    assert archive_build(weekly, "--out", str(out))[0] == 0
    with db.writing(engine) as conn:
        conn.execute(lists.update().where(lists.c.name == "weekly").values(public=False))
    assert archive_build(weekly, "--out", str(out))[0] == 0
    assert sorted(tree(out)) == [".newsletter-archive", "archive/index.html"]
    assert not [p for p in weekly.root.iterdir() if p.name.startswith(".site.")]  # no debris


# --- Untrusted subjects stay data -------------------------------------------------------

# Single characters and whole fragments that mean something to HTML, XML, Jinja, our
# placeholders, or a terminal (bidi overrides and isolates, BOM, line separator).
FRAGMENTS = [
    *"<>&\"'`=/;:!?[]{}$%#-_ aZ9\u00e9",
    *["]]>", "<![CDATA[", "&amp;", "&#0;", "<script>", "</title>", "-first_name-", "{{ x }}"],
    *["\u202e", "\u2066", "\u200f", "\u061c", "\u00a0", "\u2028", "\ufeff", "\U0001f600"],
]
NAMES = itertools.count()
DANGEROUS = (
    st.lists(st.sampled_from(FRAGMENTS), min_size=1, max_size=12)
    .map(lambda parts: " ".join("".join(parts).split()))
    .filter(bool)
)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(subject=DANGEROUS)
def test_a_subject_reads_back_as_exactly_itself(
    subject: str, db_settings: Settings, engine: Engine
) -> None:
    _ensure_weekly(engine)
    name = f"x{next(NAMES)}"  # Hypothesis may repeat a subject; each example is a new issue
    story = story_html("en", html.escape(subject))  # as the templates escape a story title
    send(db_settings, engine, hand_made(name, "A plain subject", story))
    # Header rules refuse some of these (bidi overrides) in a sent subject; the archive must
    # still show whatever a stored copy holds as data, so the copy is given it directly.
    with db.writing(engine) as conn:
        conn.execute(
            issue_copies.update().where(issue_copies.c.issue == name).values(subject=subject)
        )
    with db.reading(engine) as conn:
        found = site.catalogue(conn, db.now())
    parsed = feedparser.parse(site.feed(db_settings, found, "weekly", "en"))
    assert not parsed.bozo, parsed.get("bozo_exception")
    titles = {e.link.rsplit("/", 2)[-2]: e.title for e in parsed.entries}
    assert titles[name] == subject
    index = IndexReader.read(site.index_page(db_settings, found, "weekly", "en").decode())
    shown = dict(zip(index.links, zip(index.subjects, index.leads, strict=True), strict=True))
    assert shown[f"https://news.test/issues/{name}/"] == (subject, [subject])


def _ensure_weekly(engine: Engine) -> None:
    with db.reading(engine) as conn:
        exists = conn.execute(select(lists.c.id).where(lists.c.name == "weekly")).first()
    if exists is None:
        make_list(engine, "weekly", public=True)


def test_characters_xml_cannot_carry_are_shown_as_replacement(
    db_settings: Settings, engine: Engine
) -> None:
    make_list(engine, "weekly", public=True)
    send(db_settings, engine, hand_made("ctl", "Plain", story_html("en", "A")))
    with db.writing(engine) as conn:  # only a copy written by other means can hold these
        subject = "Bell\x07 and NUL-free\x1b"
        conn.execute(
            issue_copies.update().where(issue_copies.c.issue == "ctl").values(subject=subject)
        )
    with db.reading(engine) as conn:
        found = site.catalogue(conn, db.now())
    parsed = feedparser.parse(site.feed(db_settings, found, "weekly", "en"))
    assert not parsed.bozo
    assert parsed.entries[0].title == "Bell\ufffd and NUL-free\ufffd"


def test_issue_files_refuse_control_characters_in_the_subject(project_settings: Settings) -> None:
    issue_file = project_settings.path("issues_dir") / "2025-12-10.yaml"
    text = issue_file.read_text(encoding="utf-8")
    issue_file.write_text(
        # A YAML escape: the file itself holds no control character, its value does.
        re.sub(r"subject: .*", lambda _: 'subject: "Bell\\a here"', text, count=1),
        encoding="utf-8",
    )
    with pytest.raises(IssueError, match="control character U\\+0007"):
        build_issue(issue_file, project_settings)


class IndexReader(html.parser.HTMLParser):
    """What a browser shows of an index: each entry's link, subject, date and lead stories."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.subjects: list[str] = []
        self.dates: list[str] = []
        self.leads: list[list[str]] = []
        self._in: list[str] = []
        self._text = ""

    @classmethod
    def read(cls, page: str) -> IndexReader:
        reader = cls()
        reader.feed(page)
        reader.close()
        return reader

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in.append(tag)
        self._text = ""
        if tag == "article":
            self.leads.append([])
        if tag == "a" and "h2" in self._in:
            self.links.append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and "h2" in self._in:
            self.subjects.append(self._text)
        elif tag == "time":
            self.dates.append(self._text)
        elif tag == "li" and "article" in self._in:
            self.leads[-1].append(self._text)
        if self._in and self._in[-1] == tag:
            self._in.pop()

    def handle_data(self, data: str) -> None:
        self._text += data


# --- `newsletter serve` ------------------------------------------------------------------


def test_serve_hands_out_the_same_pages_as_the_build(serve: Callable[..., Served]) -> None:
    served = serve("archive")
    engine = served.engine
    _ensure_weekly(engine)
    make_list_if_missing(engine, "staff")
    send(
        served.settings,
        engine,
        hand_made("s-2025-12-10", "First & <best>", story_html("ky", "Bishkek")),
    )
    send(
        served.settings,
        engine,
        hand_made("s-staff", "Staff only", story_html("ky", "Pay")),
        "staff",
    )
    out = served.settings.root / "site"
    with db.reading(engine) as conn:
        found = site.catalogue(conn, db.now())
        site.write(site.files(conn, served.settings, found), out)
    for path in ("archive/", "archive/weekly/", "archive/weekly/ky/", "issues/s-2025-12-10/"):
        answer = httpx.get(f"{served.url}/{path}")
        assert answer.status_code == 200, path
        assert answer.content == (out / path / "index.html").read_bytes(), path
    feed = httpx.get(f"{served.url}/archive/weekly/ky/feed.atom")
    assert feed.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert feed.content == (out / "archive/weekly/ky/feed.atom").read_bytes()
    parsed = feedparser.parse(feed.content)
    assert not parsed.bozo
    assert parsed.feed.language == "ky"
    assert "s-2025-12-10" in [e.link.rsplit("/", 2)[-2] for e in parsed.entries]
    # A private list has no public archive, and nobody's name is in any of it.
    for path in (
        "archive/staff/",
        "archive/staff/ky/",
        "archive/staff/ky/feed.atom",
        "archive/nope/en/",
    ):
        assert httpx.get(f"{served.url}/{path}").status_code == 404, path
    assert b"Staff only" not in httpx.get(f"{served.url}/archive/").content


def make_list_if_missing(engine: Engine, name: str) -> None:
    with db.reading(engine) as conn:
        exists = conn.execute(select(lists.c.id).where(lists.c.name == name)).first()
    if exists is None:
        make_list(engine, name, public=False)


def test_an_edition_has_its_own_page_index_and_feed(weekly: Settings, engine: Engine) -> None:
    with db.writing(engine) as conn:
        row = (
            conn.execute(select(issue_copies).where(issue_copies.c.issue == "2025-12-17"))
            .one()
            ._asdict()
        )
        edition = row | {"edition": "ru", "subject": "Неделя чая", "content_hash": "ru-hash"}
        conn.execute(issue_copies.insert().values(edition))
    out = weekly.root / "site"
    with db.reading(engine) as conn:
        found = site.catalogue(conn, db.now())
        site.write(site.files(conn, weekly, found), out)
    assert found.languages("weekly") == ("en", "ru")
    parsed = feedparser.parse((out / "archive/weekly/ru/feed.atom").read_bytes())
    assert [(e.title, e.link) for e in parsed.entries] == [
        ("Неделя чая", "https://news.test/issues/2025-12-17/ru/")
    ]
    assert parsed.entries[0].id == "tag:news.test,2025-12-17:issues/2025-12-17/ru"
    static = (out / "issues/2025-12-17/ru/index.html").read_bytes()
    with uvicorn_port(create_app(weekly, send_confirmations=False)) as port:
        served = httpx.get(f"http://127.0.0.1:{port}/issues/2025-12-17/ru/")
        nowhere = httpx.get(f"http://127.0.0.1:{port}/issues/2025-12-17/de/")
    assert served.status_code == 200
    assert served.content == static
    assert nowhere.status_code == 404
