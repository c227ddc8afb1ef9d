"""Issue 9, robustness: hostile files, bodies and names give a clear error, never a traceback,
a hang or a crash of something else; files holding addresses are private; terminal output
cannot be steered by subscriber text."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.testclient import TestClient

from newsletter import audience, build, db, inputfile, webhook, yamlfile
from newsletter.atomic import replacing_text, write_bytes
from newsletter.audience_csv import SPREADSHEET_TRIGGERS, export_csv, import_csv
from newsletter.config import Settings, load_settings
from newsletter.content import parse_article
from newsletter.errors import (
    ArticleFileError,
    ImportFileError,
    IssueError,
    RatesError,
    UnreadableFileError,
    YamlSyntaxError,
)
from newsletter.headers import CONTROL
from newsletter.issues import load_issue
from newsletter.rates import load_snapshot
from newsletter.schema import memberships, subscribers, suppressions
from newsletter.web import create_app
from tests.conftest import REPO, run_newsletter, uvicorn_port
from tests.test_audience_import import stored_subscribers
from tests.test_webhook import Key, event, new_key, public_b64, signed_headers, stored

FIXTURE_OK = [HealthCheck.function_scoped_fixture]
SAMPLE = "issues/2025-12-10.yaml"


def no_traceback(done: object) -> None:
    out = f"{getattr(done, 'stdout', '')}{getattr(done, 'stderr', '')}"
    assert "Traceback" not in out, out


# --- 1. Nesting depth -----------------------------------------------------------------------


@st.composite
def deep_yaml(draw: st.DrawFn) -> tuple[str, int]:
    """A document nested beyond MAX_DEPTH, as flow brackets or block indentation, and the
    depth it reaches. Block style is kept under libyaml's own 1000-level limit so that
    our check (with a line number) is what answers."""
    depth = draw(st.integers(yamlfile.MAX_DEPTH + 1, 3000))
    style = draw(st.sampled_from(["flow-seq", "flow-map", "block-seq", "block-map"]))
    if style == "flow-seq":
        return "title: " + "[" * depth + "]" * depth + "\n", depth
    if style == "flow-map":
        return "title: " + "{a: " * depth + "1" + "}" * depth + "\n", depth
    depth = min(depth, 900)
    item = "- " if style == "block-seq" else "k:"
    lines = [f"{'  ' * i}{item}" for i in range(depth)]
    return "title: x\nsections:\n" + "\n".join(lines) + " 1\n", depth


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=deep_yaml())
def test_deep_yaml_is_a_syntax_error_naming_file_and_line(
    doc: tuple[str, int], tmp_path: Path
) -> None:
    path = tmp_path / "deep.yaml"
    path.write_text(doc[0], encoding="utf-8")
    with pytest.raises(YamlSyntaxError) as info:
        yamlfile.load(path)
    problem = info.value.problem
    assert problem.file == path
    assert problem.line is not None
    assert 1 <= problem.line <= doc[0].count("\n")
    assert f"more than {yamlfile.MAX_DEPTH} levels" in problem.message


def test_nesting_up_to_the_limit_still_loads(tmp_path: Path) -> None:
    depth = yamlfile.MAX_DEPTH - 1  # plus the top-level mapping
    path = tmp_path / "ok.yaml"
    path.write_text("a: " + "[" * depth + "]" * depth + "\n", encoding="utf-8")
    assert yamlfile.load(path).data is not None


@settings(max_examples=8, deadline=None, suppress_health_check=FIXTURE_OK)
@given(doc=deep_yaml())
def test_a_deep_issue_file_does_not_break_checking_another_issue(
    doc: tuple[str, int], project: Path
) -> None:
    """The history scan reads every issue file: a hostile one is a warning on that file,
    never a crash or an error of the issue being checked."""
    hostile = project / "issues" / "2025-01-01.yaml"
    hostile.write_text(doc[0], encoding="utf-8")
    checked = build.check_file(project / SAMPLE, load_settings(project, env={}))
    assert checked.report.errors == ()
    [warning] = [p for p in checked.report.warnings if p.file == hostile]
    assert "cannot read this earlier issue" in warning.message


def test_deep_files_through_the_real_command(project: Path) -> None:
    nested = "title: x\nsections:\n" + "".join(f"{'  ' * i}- \n" for i in range(990))
    (project / "issues" / "2025-01-01.yaml").write_text(nested, encoding="utf-8")
    for command in (["check", "--no-gates", SAMPLE], ["build", SAMPLE, "--out", "out"]):
        done = run_newsletter(project, *command)
        no_traceback(done)
        assert done.returncode == 0, done.stdout + done.stderr
    done = run_newsletter(project, "check", "--json", "issues/2025-01-01.yaml")
    no_traceback(done)
    assert done.returncode == 1
    [problem] = json.loads(done.stdout)[0]["problems"]
    assert problem["file"].endswith("2025-01-01.yaml")
    assert problem["line"] == 67
    assert "levels deep" in problem["message"]


def test_the_preview_index_lists_a_deep_file_as_broken(project: Path) -> None:
    from newsletter.preview import Desk

    nested = "title: " + "[" * 990 + "]" * 990 + "\n"
    (project / "issues" / "2025-01-01.yaml").write_text(nested, encoding="utf-8")
    rows = {
        name: (summary, ok)
        for name, summary, ok in Desk(load_settings(project, env={})).index_rows()
    }
    assert rows["2025-12-10"][1] is True
    assert rows["2025-01-01"][1] is False
    assert "levels deep" in rows["2025-01-01"][0]


def test_deep_front_matter_and_snapshot_name_their_file(project: Path) -> None:
    settings_ = load_settings(project, env={})
    article = project / "content" / "articles" / "deep.md"
    article.write_text("---\ntitle: " + "[" * 2000 + "]" * 2000 + "\n---\nBody\n")
    with pytest.raises(IssueError) as info:
        load_issue(project / SAMPLE, settings_)
    found = [p for p in info.value.problems if p.file == article]
    assert found
    assert found[0].line == 2
    assert "levels deep" in found[0].message
    article.unlink()
    snapshot = project / "content" / "rates" / "2025-12-10.yaml"
    snapshot.write_text("rates: " + "{a: " * 500 + "1" + "}" * 500 + "\n")
    with pytest.raises(YamlSyntaxError, match=r"2025-12-10\.yaml:1: .*levels deep"):
        load_snapshot(snapshot)


# --- 2. Only regular files, read with a byte cap --------------------------------------------


Maker = Callable[[Path], None]


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dev_zero(path: Path) -> None:
    path.symlink_to("/dev/zero")


def _folder(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


SPECIAL: dict[str, tuple[Maker, str]] = {
    "fifo": (_fifo, "named pipe"),
    "dev-zero": (_dev_zero, "character device"),
    "folder": (_folder, "folder"),
    "socket": (_socket, "socket"),
}


@pytest.fixture(params=sorted(SPECIAL))
def special(request: pytest.FixtureRequest) -> tuple[Maker, str]:
    return SPECIAL[request.param]


def test_reader_refuses_special_files_without_blocking(
    special: tuple[Maker, str], tmp_path: Path
) -> None:
    make, words = special
    path = tmp_path / "input"
    make(path)
    with pytest.raises(UnreadableFileError, match=f"input: is an? {words}"):
        inputfile.read_capped(path, 10)
    with pytest.raises(UnreadableFileError, match=words):
        inputfile.open_regular(path)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_OK)
@given(size=st.integers(0, 5000), limit=st.integers(0, 5000))
def test_reader_caps_by_bytes_read_not_by_size(size: int, limit: int, tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * size)
    if size <= limit:
        assert inputfile.read_capped(path, limit) == b"x" * size
    else:
        with pytest.raises(UnreadableFileError, match=f"{limit:,}-byte limit"):
            inputfile.read_capped(path, limit)


def test_special_files_as_article_issue_and_snapshot(
    special: tuple[Maker, str], project: Path
) -> None:
    make, words = special
    settings_ = load_settings(project, env={})
    article = project / "content" / "articles" / "trap.md"
    make(article)
    with pytest.raises(IssueError) as info:
        load_issue(project / SAMPLE, settings_)
    assert any(p.file == article and words in p.message for p in info.value.problems)
    _remove(article)
    issue = project / "issues" / "2025-12-11.yaml"
    make(issue)
    with pytest.raises(IssueError) as info:
        load_issue(issue, settings_)
    assert [(p.file, words in p.message) for p in info.value.problems] == [(issue, True)]
    assert build.check_file(project / SAMPLE, settings_).report.errors == ()
    snapshot = project / "content" / "rates" / "2025-12-10.yaml"
    snapshot.unlink()
    make(snapshot)
    with pytest.raises(UnreadableFileError, match=words):
        load_snapshot(snapshot)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def test_dev_zero_and_fifo_through_the_real_command(project: Path) -> None:
    """On main the first read until memory ran out and the second hung the build."""
    _dev_zero(project / "content" / "articles" / "zero.md")
    _fifo(project / "content" / "articles" / "pipe.md")
    done = run_newsletter(project, "build", SAMPLE, "--out", "out")
    no_traceback(done)
    assert done.returncode == 1
    assert "zero.md: error: is a character device" in done.stderr
    assert "pipe.md: error: is a named pipe" in done.stderr
    assert not (project / "out").exists()
    _fifo(project / "ticker.txt")
    done = run_newsletter(
        project, "rates", "import", "ticker.txt", "--date", "2025-12-11", "--source", "Ticker"
    )
    no_traceback(done)
    assert done.returncode == 1
    assert "ticker.txt: is a named pipe" in done.stderr


def test_oversized_article_is_refused_by_name(project: Path) -> None:
    article = project / "content" / "articles" / "huge.md"
    article.write_bytes(b"---\ntitle: x\n---\n" + b"a" * inputfile.MAX_BYTES)
    with pytest.raises(IssueError) as info:
        load_issue(project / SAMPLE, load_settings(project, env={}))
    assert any(p.file == article and "byte limit" in p.message for p in info.value.problems)


# --- 5. Names with a trailing newline -------------------------------------------------------

line_ends = st.sampled_from(["\n", "\r\n", "\n\n"])


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    stem=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{0,20}", fullmatch=True).filter(
        lambda s: not s.endswith(".")
    ),
    end=line_ends,
)
def test_issue_file_name_with_a_line_break_is_refused(stem: str, end: str, project: Path) -> None:
    settings_ = load_settings(project, env={})
    path = project / "issues" / f"{stem}{end}.yaml"
    shutil.copyfile(project / SAMPLE, path)
    try:
        with pytest.raises(IssueError) as info:
            load_issue(path, settings_)
    finally:
        path.unlink()
    assert any("is the issue's name" in p.message for p in info.value.problems)


def test_issue_file_name_with_a_newline_through_the_real_command(project: Path) -> None:
    """On main this passed the `$`-anchored ISSUE_NAME and ended in a ValueError traceback."""
    shutil.copyfile(project / SAMPLE, project / "issues" / "2025-12-10\n.yaml")
    done = run_newsletter(project, "build", "issues/2025-12-10\n.yaml", "--out", "out")
    no_traceback(done)
    assert done.returncode == 1
    assert "is the issue's name" in done.stderr


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE_OK)
@given(end=line_ends)
def test_slug_with_a_line_break_is_refused(end: str, tmp_path: Path) -> None:
    """Quoted YAML keeps the line break; `$` would have let it through."""
    article = tmp_path / "fine-slug.md"
    slug = ("fine-slug" + end).encode("unicode_escape").decode("ascii")
    article.write_text(
        f'---\nslug: "{slug}"\nurl: https://example.org/a\ntitle: T\ndate: 2025-12-09\n'
        "summary: S\n---\nBody\n"
    )
    with pytest.raises(ArticleFileError) as info:
        parse_article(article)
    assert [(p.field, p.line) for p in info.value.problems] == [("slug", 2)]


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE_OK)
@given(end=line_ends, where=st.sampled_from(["base", "code"]))
def test_currency_code_with_a_line_break_is_refused(end: str, where: str, tmp_path: Path) -> None:
    original = (REPO / "content" / "rates" / "2025-12-10.yaml").read_text()
    code = ("USD" if where == "base" else "KGS") + end
    quoted = '"' + code.encode("unicode_escape").decode("ascii") + '"'
    text = (
        original.replace("base: USD", f"base: {quoted}")
        if where == "base"
        else original.replace("KGS:", f"{quoted}:", 1)
    )
    assert text != original
    snapshot = tmp_path / "2025-12-10.yaml"
    snapshot.write_text(text)
    if where == "base":  # the base is stripped before the check: the break is harmless
        assert load_snapshot(snapshot).base == "USD"
        return
    with pytest.raises(RatesError, match="three-letter currency code"):
        load_snapshot(snapshot)


def test_csv_import_of_a_special_file_is_refused(
    special: tuple[Maker, str], tmp_path: Path
) -> None:
    engine = db.engine_for(f"sqlite:///{tmp_path / 'n.db'}")
    db.upgrade(engine)
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    make, words = special
    path = tmp_path / "people.csv"
    make(path)
    with pytest.raises(ImportFileError, match=f"people.csv: is an? {words}"):
        import_csv(engine, path, "weekly")


@settings(max_examples=10, deadline=None, suppress_health_check=FIXTURE_OK)
@given(depth=st.integers(1000, 20_000), kind=st.sampled_from(["[", "{x="]))
def test_deep_newsletter_toml_is_a_config_error(depth: int, kind: str, tmp_path: Path) -> None:
    from newsletter.errors import ConfigError

    close = "]" if kind == "[" else "}"
    (tmp_path / "newsletter.toml").write_text("a = " + kind * depth + "1" + close * depth)
    with pytest.raises(ConfigError, match=r"newsletter\.toml: .*nested too deeply"):
        load_settings(tmp_path, env={})


def test_special_newsletter_toml_is_a_config_error(
    special: tuple[Maker, str], tmp_path: Path
) -> None:
    from newsletter.errors import ConfigError

    make, words = special
    make(tmp_path / "newsletter.toml")
    with pytest.raises(
        ConfigError, match=f"newsletter.toml: cannot read the config file: .*{words}"
    ):
        load_settings(tmp_path, env={})


# --- 3. The webhook: nesting is a 400, headers are checked before the body is read -----------


@pytest.fixture
def hook_app(db_settings: Settings, engine: Engine) -> tuple[Starlette, Key]:
    key = new_key()
    hooked = dataclasses.replace(db_settings, sendgrid_webhook_public_key=public_b64(key))
    return create_app(hooked), key


def nested_body(depth: int, kind: str, where: str, n: int) -> bytes:
    """JSON nested `depth` levels, as the whole body or inside event `n`'s extra field.
    Built as text: json.dumps itself recurses."""
    opening, closing = ("[", "]") if kind == "array" else ('{"k":', "}")
    inner = opening * depth + "1" + closing * depth
    if where == "body":
        return inner.encode()
    good = json.dumps(event("bounce", "x@example.org", n, type="bounce"))
    return f'[{good[:-1]}, "extra": {inner}}}]'.encode()


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    depth=st.integers(1, 50_000) | st.integers(900, 1100),
    kind=st.sampled_from(["array", "object"]),
    where=st.sampled_from(["body", "field"]),
)
def test_a_validly_signed_deeply_nested_body_is_400_never_500(
    hook_app: tuple[Starlette, Key], engine: Engine, depth: int, kind: str, where: str
) -> None:
    """On main a body nested past Python's recursion limit answered 500."""
    app, key = hook_app
    n = time.monotonic_ns() % 10_000
    body = nested_body(depth, kind, where, n)
    before = stored(engine)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(webhook.PATH, content=body, headers=signed_headers(key, body))
    if response.status_code == 200:  # nested within what Python reads: the event is stored
        assert where == "field"
        assert any(f"ev-{n:04d}-bounce" in row for row in stored(engine))
        return
    assert response.status_code == 400, response.text
    assert "Nothing was stored" in response.text
    assert stored(engine) == before


def test_the_400_for_deep_nesting_says_so(hook_app: tuple[Starlette, Key], engine: Engine) -> None:
    app, key = hook_app
    body = nested_body(100_000, "array", "body", 0)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = client.post(webhook.PATH, content=body, headers=signed_headers(key, body))
    assert response.status_code == 400
    assert "nested too deeply" in response.text


def _raw_post(port: int, headers: dict[str, str]) -> bytes:
    """Send a POST's headers announcing a 1 MB body, never the body; return the answer."""
    lines = [f"POST {webhook.PATH} HTTP/1.1", "Host: 127.0.0.1", "Content-Length: 1000000"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return b"(no answer while the body was withheld)"


@pytest.fixture
def hook_port(hook_app: tuple[Starlette, Key]) -> Iterator[int]:
    with uvicorn_port(hook_app[0]) as port:
        yield port


def header_text(size: int) -> st.SearchStrategy[str]:
    """What HTTP lets a header value be (visible ASCII, inner spaces), so the server parses it."""
    return st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=size).map(
        str.strip
    )


bad_signature = st.one_of(
    st.none(),
    header_text(120).filter(lambda s: not re.fullmatch(r"[A-Za-z0-9+/]{4,96}={0,2}", s)),
    st.just("A" * 200),
)
bad_timestamp = st.one_of(
    st.none(),
    header_text(14).filter(lambda s: not s.isdigit()),
    st.integers(700, 10**9).map(lambda ago: str(int(time.time()) - ago)),
)


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(signature=bad_signature, timestamp=bad_timestamp)
def test_headers_that_cannot_be_sendgrids_are_refused_before_the_body(
    hook_port: int, signature: str | None, timestamp: str | None
) -> None:
    """Over a real uvicorn: the 403 comes back while the client still withholds the body (on
    main the server waited for the body first)."""
    headers = {webhook.SIGNATURE_HEADER: signature, webhook.TIMESTAMP_HEADER: timestamp}
    answer = _raw_post(hook_port, {k: v for k, v in headers.items() if v is not None})
    assert answer.startswith(b"HTTP/1.1 403"), answer


def test_plausible_headers_do_wait_for_the_body(hook_port: int) -> None:
    """The other side: a well-formed, fresh pair of headers gets the body read (and checked)."""
    headers = {webhook.SIGNATURE_HEADER: "A" * 96, webhook.TIMESTAMP_HEADER: str(int(time.time()))}
    assert _raw_post(hook_port, headers) == b"(no answer while the body was withheld)"


# --- 4. Subscriber CSV: NUL, long cells, values kept as given -------------------------------


@pytest.fixture
def weekly(engine: Engine) -> Engine:
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    return engine


def _empty(engine: Engine) -> None:
    with db.writing(engine) as conn:
        for table in (memberships, suppressions, subscribers):
            conn.execute(table.delete())


def _write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


plain = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=8)
dangerous = st.text(st.sampled_from("=+-@'\"\t\r\n,;| \x00"), max_size=4)


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    before=st.integers(0, 3),
    column=st.integers(0, 3),
    cell=st.tuples(plain, plain).map(lambda t: t[0] + "\x00" + t[1]),
)
def test_a_nul_anywhere_is_refused_at_import_naming_line_and_column(
    weekly: Engine, tmp_path: Path, before: int, column: int, cell: str
) -> None:
    """On main a NUL in an attribute was stored (SQLite) and later broke PostgreSQL sends
    with an error blaming database_url."""
    _empty(weekly)
    header = ["email", "name", "locale", "note"]
    good = [[f"r{i}@example.org", "R", "en", "n"] for i in range(before)]
    bad = [f"bad{before}@example.org", "B", "en", "n"]
    bad[column] = cell if column else bad[column] + cell
    path = _write_csv(tmp_path / "nul.csv", [header, *good, bad])
    report = import_csv(weekly, path, "weekly")
    assert (report.added, report.rejected) == (before, 1)
    [rejection] = report.rejections
    assert rejection.line == before + 2
    assert f"column {column + 1} ({header[column]!r}) contains a NUL" in rejection.reason
    assert not any("\x00" in repr(row) for row in stored_subscribers(weekly))


@settings(max_examples=12, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    extra=st.integers(1, 3000),
    before=st.integers(0, 3),
    quoted=st.booleans(),
    filler=st.sampled_from("a,\"'\n="),
)
def test_an_overlong_cell_is_reported_as_too_long_with_the_limit(
    weekly: Engine, tmp_path: Path, extra: int, before: int, quoted: bool, filler: str
) -> None:
    if not quoted and filler in ',"\n':
        filler = "a"  # these would end or break an unquoted cell
    limit = csv.field_size_limit()
    body = ("x" + filler * (limit + extra))[: limit + extra]
    cell = '"' + body.replace('"', '""') + '"' if quoted else body
    rows = "".join(f"r{i}@example.org,n\r\n" for i in range(before))
    path = tmp_path / "long.csv"
    path.write_text(f"email,note\r\n{rows}long@example.org,{cell}\r\n", encoding="utf-8")
    with pytest.raises(ImportFileError) as info:
        import_csv(weekly, path, "weekly")
    assert f"long.csv:{before + 2}: a cell is longer than {limit:,} characters" in str(info.value)
    assert "quoting" not in str(info.value)
    assert stored_subscribers(weekly) == []


def test_a_cell_at_the_limit_is_imported_intact(weekly: Engine, tmp_path: Path) -> None:
    note = "é" * csv.field_size_limit()
    path = _write_csv(tmp_path / "limit.csv", [["email", "note"], ["a@example.org", note]])
    assert import_csv(weekly, path, "weekly").added == 1
    assert stored_subscribers(weekly)[0][3] == {"note": note}


@settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)
@given(people=st.lists(st.tuples(dangerous, plain, dangerous, plain), min_size=1, max_size=6))
def test_values_are_kept_as_given_and_export_then_import_is_lossless(
    weekly: Engine, tmp_path: Path, people: list[tuple[str, str, str, str]]
) -> None:
    """On main an imported "'=x" was stored as "=x". Now a hand-made file is kept as written
    (trimmed); the export guards every risky cell; --exported takes exactly that guard off."""
    _empty(weekly)
    rows = [
        [f"p{i}@example.org", (a + b).replace("\x00", ""), "", (c + d).replace("\x00", "")]
        for i, (a, b, c, d) in enumerate(people)
    ]
    rows = [r for r in rows if not CONTROL.search(r[1].strip())]  # name rules apply
    source = _write_csv(tmp_path / "given.csv", [["email", "name", "locale", "note"], *rows])
    import_csv(weekly, source, "weekly")
    kept = stored_subscribers(weekly)
    expected = [
        (r[0], r[1].strip(), "", {"note": r[3].strip()} if r[3].strip() else {}) for r in rows
    ]
    assert kept == sorted(expected)
    out = io.StringIO()
    with db.reading(weekly) as conn:
        export_csv(conn, out, "weekly")
    exported = list(csv.reader(io.StringIO(out.getvalue(), newline="")))
    assert not any(c.startswith(SPREADSHEET_TRIGGERS) for row in exported for c in row)
    _empty(weekly)
    export_file = tmp_path / "export.csv"
    export_file.write_text(out.getvalue(), encoding="utf-8", newline="")
    import_csv(weekly, export_file, "weekly", exported=True)
    assert stored_subscribers(weekly) == kept


def test_import_messages_through_the_real_command(project: Path) -> None:
    assert run_newsletter(project, "lists", "create", "weekly").returncode == 0
    rows = [["email", "name", "note"], ["ok@example.org", "'=kept", "'+1"]]
    rows.append(["nul@example.org", "N", "a\x00b"])
    _write_csv(project / "people.csv", rows)
    done = run_newsletter(project, "subscribers", "import", "people.csv")
    no_traceback(done)
    assert "people.csv:3: column 3 ('note') contains a NUL character" in done.stdout
    shown = run_newsletter(project, "subscribers", "show", "ok@example.org")
    assert "'=kept" in shown.stdout
    assert "'+1" in shown.stdout
    limit = csv.field_size_limit()
    (project / "long.csv").write_text(f"email,note\nx@example.org,{'a' * (limit + 1)}\n")
    done = run_newsletter(project, "subscribers", "import", "long.csv")
    no_traceback(done)
    assert done.returncode == 1
    assert f"long.csv:2: a cell is longer than {limit:,} characters" in done.stderr


# --- 6. Private files: the database, the outbox and build output ----------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def umask(value: int) -> Iterator[None]:
    old = os.umask(value)
    try:
        yield
    finally:
        os.umask(old)


umasks = st.sampled_from([0o000, 0o002, 0o022, 0o027, 0o077])


@settings(max_examples=15, deadline=None, suppress_health_check=FIXTURE_OK)
@given(mask=umasks, depth=st.integers(1, 3), text=st.booleans())
def test_written_files_are_0600_in_new_0700_folders_whatever_the_umask(
    tmp_path: Path, mask: int, depth: int, text: bool
) -> None:
    base = tmp_path / f"m{mask:o}-{depth}-{text}"
    target = base.joinpath(*[f"d{i}" for i in range(depth)], "message.eml")
    with umask(mask):
        if text:
            with replacing_text(target) as handle:
                handle.write("To: a@example.org\n")
        else:
            write_bytes(target, b"To: a@example.org\n")
    assert mode(target) == 0o600
    folder = target.parent
    while folder != tmp_path:
        assert mode(folder) == 0o700, folder
        folder = folder.parent


def test_leftover_debris_does_not_lend_its_mode(tmp_path: Path) -> None:
    target = tmp_path / "message.eml"
    debris = tmp_path / ".message.eml.tmp"
    debris.write_text("old")
    debris.chmod(0o644)
    write_bytes(target, b"new")
    assert mode(target) == 0o600
    assert not debris.exists()


def test_shared_content_keeps_the_umask(tmp_path: Path) -> None:
    with umask(0o022):
        write_bytes(tmp_path / "rates" / "2025-12-10.yaml", b"x", private=False)
    assert mode(tmp_path / "rates" / "2025-12-10.yaml") == 0o644
    assert mode(tmp_path / "rates") == 0o755


@settings(max_examples=5, deadline=None, suppress_health_check=FIXTURE_OK)
@given(mask=umasks)
def test_the_sqlite_database_and_its_wal_are_0600(tmp_path: Path, mask: int) -> None:
    folder = tmp_path / f"m{mask:o}"
    with umask(mask):
        engine = db.engine_for(f"sqlite:///{folder / 'data' / 'newsletter.db'}")
        db.upgrade(engine)
        with db.writing(engine) as conn:  # an open connection keeps -wal and -shm
            audience.create_list(conn, "weekly")
            companions = list((folder / "data").glob("newsletter.db*"))
            assert {p.name for p in companions} >= {"newsletter.db", "newsletter.db-wal"}
            assert {p.name: mode(p) for p in companions} == {p.name: 0o600 for p in companions}
        engine.dispose()
    assert mode(folder / "data") == 0o700


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_private_files_through_the_real_command(project: Path, mask: int) -> None:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "NEWSLETTER_SECRET_KEY": "9f1c2b7e4a0d6e3f8b5c1a9d7e2f4b6c8a0e3d5f7b9c1e2a4d6f8b0c2e4a6d8f",
    }
    with umask(mask):
        for command in (
            ["lists", "create", "weekly"],
            ["subscribers", "add", "aida@example.org", "--confirmed"],
            ["build", SAMPLE, "--as", "Aida,aida@example.org"],
            ["send", SAMPLE, "--yes"],
            ["subscribers", "export", "-o", "exports/weekly.csv"],
        ):
            done = run_newsletter(project, *command, env=env)
            assert done.returncode == 0, done.stdout + done.stderr
    private = [
        project / "newsletter.db",
        project / "build" / "2025-12-10" / "message.eml",
        project / "build" / "2025-12-10" / "email.html",
        project / "outbox" / "2025-12-10" / "aida@example.org.eml",
        project / "exports" / "weekly.csv",
    ]
    assert {str(p): oct(mode(p)) for p in private} == {str(p): "0o600" for p in private}
    folders = [project / "build", project / "build" / "2025-12-10", project / "outbox"]
    folders += [project / "outbox" / "2025-12-10", project / "exports"]
    assert {str(p): oct(mode(p)) for p in folders} == {str(p): "0o700" for p in folders}


def test_gitignore_covers_the_database_and_its_companions(tmp_path: Path) -> None:
    shutil.copyfile(REPO / ".gitignore", tmp_path / ".gitignore")
    names = ["newsletter.db", "newsletter.db-wal", "newsletter.db-shm", "newsletter.db-journal"]
    names += ["outbox/2025-12-10/a@example.org.eml", "build/2025-12-10/message.eml"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    done = subprocess.run(
        ["git", "-C", str(tmp_path), "check-ignore", *names],
        capture_output=True,
        text=True,
        check=False,
    )
    assert sorted(done.stdout.split()) == sorted(names)


# --- 7. Terminal output: controls shown escaped, markup literal -----------------------------

# What can steer a terminal or mislead a reader: ESC/CSI/OSC pieces, other C0 and C1
# controls, bidi overrides and isolates; mixed with markup and emoji syntax and plain text.
STEERING = (
    [chr(c) for c in range(0x20) if c not in (0x09, 0x0A)]
    + ["\x7f", *map(chr, range(0x80, 0xA0))]
    + ["\u061c", "\u200e", "\u200f", "\u2028", "\u2029"]
    + [chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))]
)
steering = st.lists(
    st.sampled_from([*STEERING, "\x1b[", "\x1b]0;", "[2J", "[red]", "[/]", ":bomb:", "a", "é"]),
    min_size=1,
    max_size=12,
).map("".join)
_ANY_STEERING = re.compile("[" + re.escape("".join(STEERING)) + "]")
_RICH_SGR = re.compile(r"\x1b\[[0-9;]*m")


def _rendered(*cells: str, terminal: bool) -> str:
    from rich.table import Table

    from newsletter.terminal import SafeConsole

    console = SafeConsole(file=io.StringIO(), force_terminal=terminal)
    table = Table("field", "value")
    table.add_row(*cells)
    console.print(table)
    console.print(*cells)
    out = console.file
    assert isinstance(out, io.StringIO)
    return out.getvalue()


@settings(max_examples=200, deadline=None)
@given(text=steering, terminal=st.booleans())
def test_nothing_that_steers_a_terminal_gets_through_the_console(text: str, terminal: bool) -> None:
    from newsletter.terminal import safe

    out = _rendered(text, safe(text, one_line=True), terminal=terminal)
    assert not _ANY_STEERING.search(_RICH_SGR.sub("", out).replace("\n", "")), repr(out)
    assert safe(text, one_line=True) in _RICH_SGR.sub("", out).replace("\n", "")


@settings(max_examples=100, deadline=None)
@given(text=steering)
def test_safe_is_lossless_for_a_reader(text: str) -> None:
    """Each character is either kept or shown as its own code, so nothing is hidden."""
    from newsletter.terminal import safe

    shown = safe(text, one_line=True)
    assert not _ANY_STEERING.search(shown)
    assert "\t" not in shown
    codes = re.compile(r"\\x([0-9a-f]{2})|\\u([0-9a-f]{4})")
    assert codes.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), shown) == text


def _seed_audience(project: Path, name: str, note: str) -> None:
    engine = db.connect(load_settings(project, env={}))
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    csv_file = _write_csv(project / "people.csv", [["email", "name", "note"]])
    with csv_file.open("a", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerow(["aida@example.org", name, note])
    report = import_csv(engine, csv_file, "weekly", confirmed=True)
    assert report.added == 1, report.rejections
    engine.dispose()


def _clean(done: subprocess.CompletedProcess[str]) -> str:
    out = done.stdout + done.stderr
    assert not _ANY_STEERING.search(out.replace("\n", "")), repr(out)
    return out


@settings(max_examples=4, deadline=None, suppress_health_check=FIXTURE_OK)
@given(note=steering.filter(lambda s: "\x00" not in s and s.strip()))
def test_subscriber_text_through_the_real_commands(project: Path, note: str) -> None:
    """An attribute can hold any control but NUL; a name markup and emoji codes (its control
    and bidi characters are refused at import, as they could reach a mail header)."""
    (project / "newsletter.db").unlink(missing_ok=True)
    name = "[red]Aida[/red] :bomb: evil"
    _seed_audience(project, name, note)
    shown = _clean(run_newsletter(project, "subscribers", "show", "aida@example.org"))
    assert "[red]Aida[/red] :bomb: evil" in shown
    listed = _clean(run_newsletter(project, "subscribers", "list", "--list", "weekly"))
    assert "[red]Aida[/red]" in listed.replace("\n", "")
    missing = run_newsletter(project, "subscribers", "show", f"{note.strip()}@example.org")
    _clean(missing)
    assert missing.returncode == 1


def test_article_text_through_build(project: Path) -> None:
    """Control characters and bidi overrides in a title are an error on the article (see
    below); markup and emoji codes are text, and reach the build summary as typed."""
    article = project / "content" / "articles" / "kyrgyzstan-dried-apricot-exports-china.md"
    text = article.read_text()
    start = text.index("title: ")
    end = text.index("\n", start)
    article.write_text(text[:start] + 'title: "[red]Apricots :bomb: [/red]x"' + text[end:])
    built = _clean(run_newsletter(project, "build", SAMPLE, "--out", "out"))
    assert "[red]Apricots :bomb: [/red]x" in built


def test_a_bidi_override_in_a_title_is_an_error_on_the_article(project: Path) -> None:
    """A bidi override would draw the rest of the line backwards in the email: refused on the
    article's file and field, and the error shows it escaped, never raw."""
    article = project / "content" / "articles" / "kyrgyzstan-dried-apricot-exports-china.md"
    text = article.read_text()
    start = text.index("title: ")
    end = text.index("\n", start)
    hostile = 'title: "Apricots\\u202e :bomb: \\u2066x\\u2067y"'
    article.write_text(text[:start] + hostile + text[end:])
    done = run_newsletter(project, "build", SAMPLE, "--out", "out")
    shown = done.stdout + done.stderr
    assert done.returncode == 1
    assert "kyrgyzstan-dried-apricot-exports-china.md" in shown
    assert "title" in shown
    assert not {"\u202e", "\u2066", "\u2067"} & set(shown)
    assert not (project / "out").exists()


# --- Control characters in content: an error on the file, never a template's fault --------

CONTROLS = st.sampled_from([chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)]])
CONTROLS |= st.sampled_from([chr(c) for c in range(0x7F, 0xA0)])
ARTICLE = "content/articles/kyrgyzstan-dried-apricot-exports-china.md"


@settings(max_examples=20, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    control=CONTROLS,
    where=st.sampled_from(["title", "summary", "body"]),
    before=st.text(alphabet="abc <>{}-", max_size=5),
)
def test_a_control_character_in_an_article_is_an_error_on_its_line(
    project: Path, control: str, where: str, before: str
) -> None:
    """On main a control character in a title reached MJML, which refused the document, and
    the error blamed the template. Now it is refused on the article's own field and line."""
    path = project / ARTICLE
    original = (REPO / ARTICLE).read_text(encoding="utf-8")
    lines = original.splitlines(keepends=True)
    escaped = json.dumps(before + control)  # YAML double quotes read JSON escapes
    if where == "body":
        lines.append(f"Body {before}{control} end.\n")
        line = len(lines)
    else:
        line = next(i for i, text in enumerate(lines, 1) if text.startswith(f"{where}:"))
        lines[line - 1] = f"{where}: {escaped}\n"
        if where == "summary":  # the folded summary's continuation lines go with it
            while lines[line].startswith("  "):
                del lines[line]
    path.write_text("".join(lines), encoding="utf-8")
    with pytest.raises(IssueError) as info:
        build.check_file(project / SAMPLE, load_settings(project, env={}))
    # A title of only a vertical tab is also empty: the control character is its own problem.
    [problem] = [p for p in info.value.problems if "control character" in p.message]
    assert (problem.file, problem.field, problem.line) == (path, where, line)
    assert f"U+{ord(control):04X}" in problem.message


def test_a_control_character_through_the_real_command(project: Path) -> None:
    path = project / ARTICLE
    path.write_text(path.read_text(encoding="utf-8") + "Bell \x07 here.\n", encoding="utf-8")
    done = run_newsletter(project, "build", SAMPLE, "--out", "out")
    no_traceback(done)
    assert done.returncode == 1
    assert "U+0007" in done.stderr + done.stdout
    assert "mjml" not in (done.stderr + done.stdout).lower()
    assert not (project / "out").exists()


@pytest.mark.parametrize("intro", ['""', '" "', '"\\n\\n"', "|\n  \n"])
def test_a_blank_intro_builds(project: Path, intro: str) -> None:
    """A blank intro was an IndexError in the text part's wrapper."""
    path = project / SAMPLE
    text = path.read_text(encoding="utf-8")
    start = text.index("intro:")
    end = text.index("\nrates:", start)
    path.write_text(text[:start] + f"intro: {intro}" + text[end:], encoding="utf-8")
    done = run_newsletter(project, "build", SAMPLE, "--out", "out")
    no_traceback(done)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Hello -first_name-" in (project / "out" / "2025-12-10" / "email.txt").read_text()


def test_export_to_a_terminal_shows_stored_controls_escaped(project: Path) -> None:
    """Names stored before control and bidi characters were refused can still hold them:
    exported to a terminal they are shown escaped; piped, the CSV keeps them as stored."""
    import pty

    engine = db.connect(load_settings(project, env={}))
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    _seed_audience_raw(engine, "legacy@example.org", "\x1b]0;pwned\x07\x1b[2J\u202eLegacy")
    engine.dispose()
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "newsletter", "subscribers", "export", "--list", "weekly"],
        cwd=project, stdout=follower, stderr=subprocess.PIPE, env=env, timeout=60, check=False,
    )  # fmt: skip
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: everything was read
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert done.returncode == 0, done.stderr
    assert b"\x1b" not in shown
    assert "\u202e".encode() not in shown
    assert b"\\x1b]0;pwned\\x07\\x1b[2J\\u202eLegacy" in shown
    piped = run_newsletter(project, "subscribers", "export", "--list", "weekly")
    assert "\x1b]0;pwned\x07\x1b[2J\u202eLegacy" in piped.stdout


def _seed_audience_raw(engine: Engine, address: str, name: str) -> None:
    """A subscriber written straight into the database, as data from an older version."""
    from newsletter.schema import subscribers

    with db.writing(engine) as conn:
        audience.add_subscriber(conn, address, "weekly", confirmed=True)
        conn.execute(subscribers.update().where(subscribers.c.email == address).values(name=name))


@settings(max_examples=5, deadline=None, suppress_health_check=FIXTURE_OK)
@given(
    brk=st.sampled_from(["\n", "\r", "\r\n", "\u2028", "\x85", "\x1b[2J", "\x0b"]),
    tail=st.text("abcxyz", min_size=1, max_size=6),
)
def test_the_check_table_keeps_every_cell_on_one_line(brk: str, tail: str, project: Path) -> None:
    """A file name with a line break (or a control) is shown escaped in the `check` table,
    on the row of its finding: it never prints rows nobody wrote, nor moves the cursor."""
    for old in (project / "issues").glob("2025-03-01*"):
        old.unlink()
    (project / "issues" / f"2025-03-01{brk}{tail}.yaml").write_text(": [\n", encoding="utf-8")
    env = {**os.environ, "COLUMNS": "200"}
    env = {k: v for k, v in env.items() if not k.startswith("NEWSLETTER_")}
    done = run_newsletter(project, "check", SAMPLE, env=env)
    no_traceback(done)
    out = done.stdout
    assert not {"\r", "\u2028", "\x85", "\x1b", "\x0b"} & set(out), repr(out)
    [row] = [line for line in out.splitlines() if "2025-03-01" in line]
    assert f"{tail}.yaml" in row
    assert "cannot read this earlier issue" in row


# --- NUL and unpaired surrogates at the web's edges, on every database ---------------------

UNSTORABLE = st.tuples(
    st.text(st.characters(codec="utf-8"), max_size=4),
    st.sampled_from(["\x00", "\ud800", "\udfff", "\udc80"]),
    st.text(st.characters(codec="utf-8"), max_size=4),
).map("".join)
EDGE = settings(max_examples=25, deadline=None, suppress_health_check=FIXTURE_OK)


def _form(**fields: str) -> bytes:
    from urllib.parse import quote_plus

    return "&".join(
        f"{k}={quote_plus(v.encode('utf-8', 'surrogatepass'))}" for k, v in fields.items()
    ).encode("ascii")


@EDGE
@given(bad=UNSTORABLE)
def test_a_nul_or_surrogate_in_the_form_answers_like_any_unknown_list(
    bad: str, engine: Engine, db_settings: Settings
) -> None:
    from newsletter.web import create_app

    roomy = dataclasses.replace(db_settings, subscribe_per_client_hour=10**6)
    with db.writing(engine) as conn:
        if audience.public_list_id(conn, "weekly") is None:
            audience.create_list(conn, "weekly", public=True)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    with TestClient(create_app(roomy, send_confirmations=False)) as client:

        def answer(**fields: str) -> tuple[int, str]:
            got = client.post("/subscribe", content=_form(**fields), headers=form)
            return got.status_code, got.text

        known = answer(email="a@example.org", list="weekly")
        assert answer(email="a@example.org", list=bad) == known
        assert answer(email="a@example.org", list=f"week{bad}ly") == known
        # A surrogate arrives as U+FFFD (the form is decoded with replacement), a NUL as
        # itself: either way a plain answer, never a 5xx from the database.
        for fields in ({"email": f"a{bad}@example.org"}, {"email": "a@x.org", "name": bad}):
            status, text = answer(list="weekly", **fields)
            assert status in (200, 400), text
            assert status == 400 or "\x00" not in bad, text


@EDGE
@given(bad=UNSTORABLE, field=st.sampled_from(["sg_event_id", "email", "event"]))
def test_a_nul_or_surrogate_in_a_signed_event_is_a_400_naming_it(
    bad: str, field: str, engine: Engine, db_settings: Settings
) -> None:
    from newsletter.schema import webhook_events
    from newsletter.web import create_app
    from tests.test_webhook import event, new_key, public_b64, signed_headers

    key = new_key()
    hooked = dataclasses.replace(db_settings, sendgrid_webhook_public_key=public_b64(key))
    good = event("delivered", "ok@example.org", 1)
    hostile = {**event("bounce", "b@example.org", 2, type="bounce"), field: f"e{bad}"}
    body = json.dumps([good, hostile]).encode("ascii")  # \u0000 and \ud800 escapes, as sent
    with TestClient(create_app(hooked, send_confirmations=False)) as client:
        got = client.post(webhook.PATH, content=body, headers=signed_headers(key, body))
    assert got.status_code == 400, got.text
    assert f"Event 1, field '{field}'" in got.text
    with db.reading(engine) as conn:
        assert conn.execute(webhook_events.select()).first() is None
