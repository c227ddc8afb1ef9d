"""The public archive: sent issues, an index and an Atom feed per list and language.

Built only from the copies stored at send time (`newsletter.copies`), never from today's
files, and only for issues somebody has received (the embargo of `copies.delivered`) on a
list that is public. The same functions give `newsletter archive build` its files and
`newsletter serve` its pages, so both hand out the same bytes at the same paths.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import lxml.html
from sqlalchemy import select
from sqlalchemy.engine import Connection, Row

from newsletter import atomic, copies, pages, placeholders
from newsletter.config import Settings
from newsletter.errors import UsageError
from newsletter.placeholders import Tags
from newsletter.readers import anonymous_reader
from newsletter.schema import issue_copies, lists, send_issues

LEADS = 3  # lead stories shown per issue in an index and a feed summary
UNDETERMINED = "und"  # BCP 47: the stored copy names no language
_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*\Z")
# XML 1.0 cannot carry these at all (not even as character references). Issue files refuse
# every control character at input, so only a copy written by other means has them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Names a folder this command built and lists every file it wrote there: a rebuild replaces
# the folder only if it holds nothing else (a site copied into a web root with other files
# in it must not make the whole root the archive's to delete).
MARKER = ".newsletter-archive"
_MANIFEST_HEAD = "# written by `newsletter archive build`; a rebuild replaces only these files\n"


@dataclass(frozen=True)
class Entry:
    """One stored copy as the archive lists it (no personal data: the copy has none)."""

    issue: str
    edition: str
    list_name: str
    language: str
    subject: str
    preheader: str
    content_hash: str
    published: dt.datetime  # when readers got it: the scheduled time, else when sending began
    updated: dt.datetime  # the last time its stored copy changed, never before `published`
    leads: tuple[str, ...]

    @property
    def path(self) -> str:
        """Its page: `/issues/<name>/`, the email's own "View in browser" link."""
        edition = f"{self.edition}/" if self.edition else ""
        return f"/issues/{self.issue}/{edition}"


@dataclass(frozen=True)
class PublicList:
    name: str
    title: str
    created: dt.datetime


@dataclass(frozen=True)
class Withheld:
    """A stored copy left out of the archive, and why (for the editor, never the public)."""

    issue: str
    edition: str
    reason: str


@dataclass(frozen=True)
class Catalogue:
    """What the public may see at one moment: entries newest first, and what was left out."""

    lists: Mapping[str, PublicList]
    entries: tuple[Entry, ...]
    withheld: tuple[Withheld, ...]

    def languages(self, list_name: str) -> tuple[str, ...]:
        return tuple(sorted({e.language for e in self.entries if e.list_name == list_name}))

    def shelf(self, list_name: str, language: str) -> tuple[Entry, ...]:
        return tuple(e for e in self.entries if e.list_name == list_name and e.language == language)


# --- What is public -------------------------------------------------------------------


def catalogue(conn: Connection, moment: dt.datetime, received: set[str] | None = None) -> Catalogue:
    """Every stored copy somebody has received by `moment` on a public list.

    `received` remembers the issues found received, across calls: once someone has an
    issue nobody can take it back, so a server asks the ledger once per issue.
    """
    received = set() if received is None else received
    all_lists = list(conn.execute(select(lists)))
    is_public = {row.name: bool(row.public) for row in all_lists}
    public = {
        row.name: PublicList(row.name, row.title, _utc(row.created_at))
        for row in all_lists
        if row.public
    }
    sends = {row.issue: row for row in conn.execute(select(send_issues))}
    columns = [c for c in issue_copies.c if c.name not in ("html", "text")]
    rows = conn.execute(select(*columns).order_by(issue_copies.c.issue, issue_copies.c.edition))
    entries, withheld = [], []
    for row in rows:
        reason = _reason_withheld(conn, row.issue, row.list_name, is_public, moment, received)
        if reason:
            withheld.append(Withheld(row.issue, row.edition, reason))
            continue
        entries.append(_entry(conn, row, sends.get(row.issue)))
    entries.sort(key=lambda e: (e.published, e.issue, e.edition), reverse=True)
    return Catalogue(public, tuple(entries), tuple(withheld))


def _reason_withheld(
    conn: Connection,
    issue: str,
    list_name: str,
    is_public: Mapping[str, bool],
    moment: dt.datetime,
    received: set[str],
) -> str:
    if list_name not in is_public:
        return f"its list {list_name!r} was deleted, so nobody can say it is public"
    if not is_public[list_name]:
        return f"its list {list_name!r} is private (make it public with `lists set --public`)"
    if issue not in received:
        if not copies.delivered(conn, issue, moment):
            return "nobody has received it yet (no copy accepted, or its scheduled time is to come)"
        received.add(issue)
    return ""


def _entry(conn: Connection, row: Row[Any], send: Row[Any] | None) -> Entry:
    issue, edition = row.issue, row.edition
    stored_at = _utc(row.stored_at)
    scheduled = getattr(send, "send_at", None)
    began = getattr(send, "created_at", None)
    published = _utc(scheduled or began or stored_at)
    content_hash = row.content_hash
    language, leads = _read_html(conn, issue, edition, content_hash)
    return Entry(
        issue=issue,
        edition=edition,
        list_name=row.list_name,
        language=edition or language,
        subject=row.subject,
        preheader=row.preheader,
        content_hash=content_hash,
        published=published,
        updated=max(published, stored_at),
        leads=leads,
    )


def _read_html(
    conn: Connection, issue: str, edition: str, content_hash: str
) -> tuple[str, tuple[str, ...]]:
    """The language and lead stories of a stored copy, read once per content."""
    key = (issue, edition, content_hash)
    if key not in _HTML_FACTS:
        row = conn.execute(
            select(issue_copies.c.html, issue_copies.c.tags_key).where(
                issue_copies.c.issue == issue, issue_copies.c.edition == edition
            )
        ).one()
        if len(_HTML_FACTS) >= FACTS_KEPT:
            _HTML_FACTS.clear()  # crude but bounded; a refill costs one read per copy
        _HTML_FACTS[key] = html_facts(row.html, Tags(row.tags_key))
    return _HTML_FACTS[key]


# Read per (issue, edition, content hash), so a served index does not load every copy's HTML.
FACTS_KEPT = 4096
_HTML_FACTS: dict[tuple[str, str, str], tuple[str, tuple[str, ...]]] = {}


def html_facts(html: str, tags: Tags) -> tuple[str, tuple[str, ...]]:
    """(language, lead stories) of an email's HTML: its `<html lang>` and first story titles.

    Stories are the email's h3 headings (the templates give each story one), else its h2s:
    derived from what was sent rather than stored beside it, so every copy ever stored has
    them, and deterministic (document order). A heading holding one of the copy's
    placeholder `tags` is left out: it was written for one reader ("Dana, this is for you"),
    and raw it would publish the tag and the build's key.
    """
    if not html.strip():
        return UNDETERMINED, ()
    root = lxml.html.document_fromstring(html)
    lang = str(root.get("lang") or "").strip()
    language = lang if _LANGUAGE.match(lang) else UNDETERMINED
    for level in ("h3", "h2"):
        titles = [" ".join(h.text_content().split()) for h in root.iter(level)]
        found = tuple(t for t in titles if t and not _personal(t, tags))
        if found:
            return language, found[:LEADS]
    return language, ()


def _personal(title: str, tags: Tags) -> bool:
    # Only a keyed build's tags: every render keys them (the key is a digest of the issue),
    # so no text can spell one by chance. An unkeyed copy (built by hand) has the bare
    # `-first_name-` spellings, which a story title may hold as plain text.
    return bool(tags.key) and any(tag in title for tag in tags.all())


def _utc(moment: dt.datetime) -> dt.datetime:
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).replace(microsecond=0)


# --- Pages ----------------------------------------------------------------------------


def issue_page(conn: Connection, settings: Settings, entry: Entry) -> bytes:
    """The entry's stored HTML filled for the anonymous reader, as the web copy serves it."""
    row = conn.execute(
        select(issue_copies.c.html, issue_copies.c.tags_key).where(
            issue_copies.c.issue == entry.issue, issue_copies.c.edition == entry.edition
        )
    ).one()
    return public_html(row.html, Tags(row.tags_key), settings)


def public_html(html: str, tags: Tags, settings: Settings) -> bytes:
    """Stored HTML filled for the anonymous reader: the exact bytes the web copy serves."""
    reader = anonymous_reader(settings)
    return placeholders.fill(html, reader, part="html", tags=tags).encode("utf-8")


def text(value: str) -> str:
    """`value` as XML 1.0 can carry it: what it cannot is shown as U+FFFD, never dropped."""
    return _NOT_XML.sub("\ufffd", value)


def _shown(entry: Entry) -> dict[str, object]:
    return {
        "issue": entry.issue,
        "subject": text(entry.subject),
        "preheader": text(entry.preheader),
        "leads": [text(lead) for lead in entry.leads],
        # The feed's summary: the preheader, then the lead stories, a line each.
        "summary": text("\n".join(part for part in (entry.preheader, *entry.leads) if part)),
        "date": entry.published.date().isoformat(),
        "published": entry.published.isoformat().replace("+00:00", "Z"),
        "updated": entry.updated.isoformat().replace("+00:00", "Z"),
        "path": entry.path,
    }


def _context(settings: Settings, the_list: PublicList, language: str) -> dict[str, object]:
    return {
        "list_name": the_list.name,
        "title": text(the_list.title or the_list.name),
        "language": language,
        "base": settings.base_url.rstrip("/"),
        "index_path": index_path(the_list.name, language),
        "feed_path": feed_path(the_list.name, language),
    }


def index_path(list_name: str, language: str) -> str:
    return f"/archive/{list_name}/{language}/"


def feed_path(list_name: str, language: str) -> str:
    return f"/archive/{list_name}/{language}/feed.atom"


def index_page(settings: Settings, found: Catalogue, list_name: str, language: str) -> bytes:
    """The list's issues in one language, newest first: date, subject, lead stories."""
    shelf = [_shown(e) for e in found.shelf(list_name, language)]
    context = _context(settings, found.lists[list_name], language)
    return pages.render("archive/index.html", entries=shelf, **context).encode("utf-8")


def list_page(settings: Settings, found: Catalogue, list_name: str) -> bytes:
    """The list's languages, each with its index and feed."""
    the_list = found.lists[list_name]
    shelves = [
        {"language": lang, "index": index_path(list_name, lang), "feed": feed_path(list_name, lang)}
        for lang in found.languages(list_name)
    ]
    title = text(the_list.title or the_list.name)
    return pages.render(
        "archive/list.html", title=title, shelves=shelves, **_page_base(settings)
    ).encode("utf-8")


def _page_base(settings: Settings) -> dict[str, str]:
    # The archive's own words are English, whatever the language of the issues it lists.
    return {"base": settings.base_url.rstrip("/"), "language": "en"}


def home_page(settings: Settings, found: Catalogue) -> bytes:
    """Every public list that has an archive."""
    shown = [
        {"name": name, "title": text(found.lists[name].title or name), "path": f"/archive/{name}/"}
        for name in archived_lists(found)
    ]
    return pages.render("archive/home.html", lists=shown, **_page_base(settings)).encode("utf-8")


def archived_lists(found: Catalogue) -> list[str]:
    return sorted({e.list_name for e in found.entries})


def feed(settings: Settings, found: Catalogue, list_name: str, language: str) -> bytes:
    """The Atom feed (RFC 4287) of a list in one language, newest first."""
    entries = found.shelf(list_name, language)
    the_list = found.lists[list_name]
    authority = urlsplit(settings.base_url).hostname or "localhost"
    shown = [{**_shown(e), "id": _tag(authority, e.published, e.path.strip("/"))} for e in entries]
    return pages.render(
        "archive/feed.atom",
        entries=shown,
        id=_tag(authority, the_list.created, f"archive/{list_name}/{language}"),
        updated=max(e.updated for e in entries).isoformat().replace("+00:00", "Z"),
        author=text(settings.from_name),
        **_context(settings, the_list, language),
    ).encode("utf-8")


def _tag(authority: str, day: dt.datetime, specific: str) -> str:
    """A tag: URI (RFC 4151): stable for as long as the base_url's host and the date hold."""
    return f"tag:{authority},{day.date().isoformat()}:{specific}"


# --- The static site ------------------------------------------------------------------


def files(conn: Connection, settings: Settings, found: Catalogue) -> dict[str, bytes]:
    """Every file of the site by its path (relative, '/'-separated), the pages' own URLs."""
    site: dict[str, bytes] = {"archive/index.html": home_page(settings, found)}
    for entry in found.entries:
        site[f"{entry.path.strip('/')}/index.html"] = issue_page(conn, settings, entry)
    for name in archived_lists(found):
        site[f"archive/{name}/index.html"] = list_page(settings, found, name)
        for language in found.languages(name):
            site[index_path(name, language).strip("/") + "/index.html"] = index_page(
                settings, found, name, language
            )
            site[feed_path(name, language).strip("/")] = feed(settings, found, name, language)
    site[MARKER] = manifest(site)
    return site


def manifest(site: Mapping[str, bytes]) -> bytes:
    """The marker's text: every path of the site, one a line, sorted (deterministic)."""
    return (_MANIFEST_HEAD + "".join(f"{path}\n" for path in sorted(site))).encode("utf-8")


def _listed(marker: Path) -> set[str]:
    lines = marker.read_text("utf-8", errors="replace").splitlines()
    return {line for line in lines if line and not line.startswith("#")} | {MARKER}


def require(found: Catalogue, wanted: Iterable[str]) -> None:
    """Refuse, before anything is written, when an issue asked for is not in the archive."""
    present = {e.issue for e in found.entries}
    reasons = {w.issue: w.reason for w in found.withheld}
    for issue in wanted:
        if issue in present:
            continue
        why = reasons.get(
            issue, "it was never sent: no copy is stored (send it with `newsletter send`)"
        )
        raise UsageError(f"--issue {issue}: not in the archive: {why}.")


def write(site: Mapping[str, bytes], out: Path) -> None:
    """Write the site into a new folder beside `out`, then swap it in.

    Readers see the old site or the new one, whole (for the instant between the two renames,
    none). A folder that this command did not build is never replaced.
    """
    out = out.absolute()
    _check_out(out)
    try:
        atomic.make_dirs(out.parent, private=False)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    except OSError as exc:
        raise _unwritable(out, exc) from exc
    try:
        _fill(staging, site)
        _swap(staging, out)
    except OSError as exc:
        raise _unwritable(out, exc) from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when the swap succeeded


def _unwritable(out: Path, exc: OSError) -> UsageError:
    reason = exc.strerror or type(exc).__name__
    return UsageError(
        f"--out {out}: cannot write the archive there ({reason}); the previous archive, if "
        "any, is unchanged. Choose a folder you can write to."
    )


def _fill(staging: Path, site: Mapping[str, bytes]) -> None:
    staging.chmod(0o755)  # the site is public; mkdtemp made its folder private
    for relative, data in sorted(site.items()):
        path = staging.joinpath(*relative.split("/"))
        atomic.make_dirs(path.parent, private=False)
        path.write_bytes(data)
        path.chmod(0o644)


def _check_out(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out}: not a folder; choose a new or empty folder.")
    if not out.is_dir() or not any(out.iterdir()):
        return
    marker = out / MARKER
    foreign = _foreign(out, _listed(marker)) if marker.is_file() else "files"
    if foreign:
        raise UsageError(
            f"--out {out}: this folder holds {foreign} the archive did not write, and "
            "building replaces the whole folder; nothing was changed. Choose a new or empty "
            "folder (publish by copying the built folder's contents, or point the web server "
            "at it)."
        )


def _foreign(out: Path, listed: set[str]) -> str:
    """The first path under `out` that the marker does not list (its folders included), or
    "" when the archive wrote everything there."""
    folders = {"/".join(p.split("/")[:i]) for p in listed for i in range(1, p.count("/") + 1)}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        wanted = folders if path.is_dir() and not path.is_symlink() else listed
        if relative not in wanted:
            return repr(relative)
    return ""


def _swap(staging: Path, out: Path) -> None:
    if not out.exists():
        staging.replace(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old.", dir=out.parent))
    try:
        out.replace(old / "site")
        try:
            staging.replace(out)
        except OSError:
            (old / "site").replace(out)  # put the previous site back
            raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
