"""CSV import and export: streaming, validation, all-or-nothing, spreadsheet safety."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from sqlalchemy.engine import Engine

from newsletter import audience, db
from newsletter.audience_csv import ImportReport, export_csv, import_csv
from newsletter.errors import AudienceError, ImportFileError, StorageError
from newsletter.models import AudienceSpec
from newsletter.schema import memberships, subscribers, suppressions


@pytest.fixture
def weekly(engine: Engine) -> Engine:
    with db.writing(engine) as conn:
        audience.create_list(conn, "weekly")
    return engine


def write(tmp_path: Path, text: str, name: str = "people.csv", bom: bool = False) -> Path:
    path = tmp_path / name
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode("utf-8"))
    return path


def counts(report: ImportReport) -> tuple[int, int, int, int]:
    return report.added, report.updated, report.unchanged, report.rejected


def stored_subscribers(engine: Engine) -> list[tuple[object, ...]]:
    columns = (subscribers.c.email, subscribers.c.name, subscribers.c.locale)
    with db.reading(engine) as conn:
        rows = conn.execute(select(*columns, subscribers.c.attributes).order_by(columns[0]))
        return [tuple(r) for r in rows]


def snapshot(engine: Engine) -> list[tuple[object, ...]]:
    subs = stored_subscribers(engine)
    with db.reading(engine) as conn:
        members = conn.execute(
            select(memberships.c.subscriber_id, memberships.c.status).order_by(
                memberships.c.subscriber_id
            )
        ).all()
        supp = conn.execute(select(suppressions.c.email, suppressions.c.scope)).all()
    return [tuple(r) for r in [*subs, *members, *supp]]


def test_import_handles_bom_crlf_quoted_newlines_and_reports_lines(
    weekly: Engine, tmp_path: Path
) -> None:
    text = (
        "Email,Name,locale,city,note\r\n"
        'ana@example.org,Ana,en,Bishkek,"two\r\nlines"\r\n'
        "not-an-address,Bad,en,Osh,\r\n"
        'BOB@Example.org,"Bob\nInjected",ru,Osh,\r\n'
        "bob@example.org,Bob,ru,Osh,\r\n"
        "ANA@example.org,Ana again,en,,\r\n"
        "short@example.org,Short\r\n"
    )
    report = import_csv(weekly, write(tmp_path, text, bom=True), "weekly", confirmed=True)
    assert counts(report) == (2, 0, 0, 4)
    reasons = {r.line: r.reason for r in report.rejections}
    assert sorted(reasons) == [4, 5, 8, 9]
    assert "not-an-address" in reasons[4]
    assert "line break" in reasons[5]
    assert "duplicate of line 2" in reasons[8]
    assert "2 cells" in reasons[9]
    with db.reading(weekly) as conn:
        ana = audience.subscriber(conn, "ana@example.org")
        recipients = list(audience.select_recipients(conn, AudienceSpec("weekly")))
    assert ana.attributes == {"city": "Bishkek", "note": "two\r\nlines"}
    assert [r.email for r in recipients] == ["ana@example.org", "bob@example.org"]


def test_import_refuses_smtputf8_and_merges_idn_spellings(weekly: Engine, tmp_path: Path) -> None:
    text = "email\nñandú@example.org\na@bücher.de\nA@xn--bcher-kva.de\n"
    report = import_csv(weekly, write(tmp_path, text), "weekly", confirmed=True)
    assert counts(report) == (1, 0, 0, 2)
    reasons = {r.line: r.reason for r in report.rejections}
    assert "needs SMTPUTF8, which we do not send" in reasons[2]
    assert "duplicate of line 3" in reasons[4]
    assert [row[0] for row in stored_subscribers(weekly)] == ["a@xn--bcher-kva.de"]


def test_reimport_counts_updated_and_unchanged(weekly: Engine, tmp_path: Path) -> None:
    first = write(tmp_path, "email,name\na@example.org,A\nb@example.org,B\n", "1.csv")
    assert counts(import_csv(weekly, first, "weekly")) == (2, 0, 0, 0)
    second = write(
        tmp_path, "email,name,plan\na@example.org,A,\nb@example.org,,pro\nc@x.org,,\n", "2.csv"
    )
    assert counts(import_csv(weekly, second, "weekly")) == (1, 1, 1, 0)
    confirming = write(tmp_path, "email\na@example.org\n", "3.csv")
    assert counts(import_csv(weekly, confirming, "weekly", confirmed=True)) == (0, 1, 0, 0)
    with db.reading(weekly) as conn:
        b = audience.subscriber(conn, "b@example.org")
        chosen = [m.email for m in audience.select_recipients(conn, AudienceSpec("weekly"))]
    assert (b.name, dict(b.attributes)) == ("B", {"plan": "pro"})
    assert chosen == ["a@example.org"]


def test_unsubscribe_and_suppress_modes_stick(weekly: Engine, tmp_path: Path) -> None:
    people = write(tmp_path, "email\na@example.org\nb@example.org\n", "people.csv")
    import_csv(weekly, people, "weekly", confirmed=True)
    leaving = write(tmp_path, "email\nA@example.org\nnever@example.org\n", "leave.csv")
    assert counts(import_csv(weekly, leaving, "weekly", mode="unsubscribe")) == (1, 1, 0, 0)
    assert counts(import_csv(weekly, leaving, "weekly", mode="unsubscribe")) == (0, 0, 2, 0)
    bounced = write(tmp_path, "email\nb@example.org\n", "bounced.csv")
    assert counts(import_csv(weekly, bounced, "weekly", mode="suppress")) == (1, 0, 0, 0)
    again = import_csv(weekly, people, "weekly", confirmed=True)
    assert counts(again) == (0, 0, 0, 2)
    assert "manual" in again.rejections[0].reason  # an import's unsubscribe is an editor's act
    with db.reading(weekly) as conn:
        assert list(audience.select_recipients(conn, AudienceSpec("weekly"))) == []
        assert audience.is_suppressed(conn, "never@example.org", "weekly")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"name,locale\nA,en\n", "no 'email' column"),
        (b"email,email\na@example.org,b@example.org\n", "appears twice"),
        (b'email\na@example.org\n"unterminated\n', ":3: the file is not valid CSV"),
        (b"email\na@example.org\n\xff\xfe@example.org\n", "not UTF-8"),
    ],
)
def test_a_malformed_file_changes_nothing(
    weekly: Engine, tmp_path: Path, content: bytes, message: str
) -> None:
    import_csv(weekly, write(tmp_path, "email,name\nkeep@example.org,Keep\n", "ok.csv"), "weekly")
    before = snapshot(weekly)
    path = tmp_path / "broken.csv"
    path.write_bytes(content)
    with pytest.raises(ImportFileError, match=message) as info:
        import_csv(weekly, path, "weekly")
    assert str(path) in str(info.value)
    assert snapshot(weekly) == before


FAIL_ON = "new9000@example.org"  # on the merge's second page


def refuse_one_address(engine: Engine) -> None:
    """A trigger makes the database itself refuse one row, halfway through a merge."""
    with db.writing(engine) as conn:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
                f"WHEN NEW.email = '{FAIL_ON}' BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
            return
        conn.exec_driver_sql(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            f"IF NEW.email = '{FAIL_ON}' THEN RAISE EXCEPTION 'refused'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.exec_driver_sql(
            "CREATE TRIGGER refuse BEFORE INSERT ON subscribers "
            "FOR EACH ROW EXECUTE FUNCTION refuse()"
        )


def test_a_failure_during_the_merge_rolls_everything_back(weekly: Engine, tmp_path: Path) -> None:
    import_csv(weekly, write(tmp_path, "email,name\nkeep@example.org,K\n", "ok.csv"), "weekly")
    before = snapshot(weekly)
    refuse_one_address(weekly)
    rows = "".join(f"new{i}@example.org,New\n" for i in range(12000))
    big = write(tmp_path, "email,name\nkeep@example.org,Changed\n" + rows, "big.csv")
    with pytest.raises(StorageError, match="refused"):
        import_csv(weekly, big, "weekly")
    assert snapshot(weekly) == before
    # The connection is still usable and the staging table is gone: a clean file imports.
    report = import_csv(weekly, write(tmp_path, "email\nlater@example.org\n", "l.csv"), "weekly")
    assert report.added == 1


def test_missing_list_is_named(weekly: Engine, tmp_path: Path) -> None:
    with pytest.raises(AudienceError, match="lists create monthly"):
        import_csv(weekly, write(tmp_path, "email\na@example.org\n"), "monthly")


def test_missing_file_is_named(weekly: Engine, tmp_path: Path) -> None:
    with pytest.raises(ImportFileError, match=r"nowhere\.csv"):
        import_csv(weekly, tmp_path / "nowhere.csv", "weekly")


def test_export_neutralizes_formula_cells(weekly: Engine, tmp_path: Path) -> None:
    text = (
        'email,name,note\na@example.org,=HYPERLINK("http://evil"),@SUM(A1)\nb@example.org,-1,+1\n'
    )
    import_csv(weekly, write(tmp_path, text), "weekly")
    out = io.StringIO()
    with db.reading(weekly) as conn:
        assert export_csv(conn, out, "weekly") == 2
    rows = list(csv.reader(io.StringIO(out.getvalue())))
    assert rows[0] == ["email", "name", "locale", "note"]
    assert rows[1] == ["a@example.org", '\'=HYPERLINK("http://evil")', "", "'@SUM(A1)"]
    assert rows[2] == ["b@example.org", "'-1", "", "'+1"]
    for row in rows:
        assert not any(cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in row)


cell = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from("=+-@'\",;"),
    max_size=12,
).map(str.strip)
person = st.tuples(
    st.from_regex(r"[a-z]{1,8}\.?[a-z0-9]{0,4}@[a-z]{1,6}\.(org|kg)", fullmatch=True),
    cell,
    st.sampled_from(["", "en", "ru"]),
    cell,
)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(people=st.lists(person, max_size=12))
def test_import_export_import_is_stable(
    people: list[tuple[str, str, str, str]], weekly: Engine, tmp_path: Path
) -> None:
    """Import a file, export it, import the export into an emptied database: same export,
    and importing it once more changes nothing."""
    exports: list[str] = []
    stored: list[list[tuple[object, ...]]] = []
    for round_ in range(2):
        with db.writing(weekly) as conn:  # each round starts from an empty audience
            for table in (memberships, suppressions, subscribers):
                conn.execute(table.delete())
        source = tmp_path / f"in{round_}.csv"
        if round_ == 0:
            with source.open("w", encoding="utf-8", newline="") as handle:
                csv.writer(handle).writerows([("email", "name", "locale", "city"), *people])
        else:
            source.write_text(exports[-1], encoding="utf-8", newline="")
        import_csv(weekly, source, "weekly", exported=round_ > 0)
        out = io.StringIO()
        with db.reading(weekly) as conn:
            export_csv(conn, out, "weekly")
        exports.append(out.getvalue())
        stored.append(stored_subscribers(weekly))
    again = import_csv(weekly, source, "weekly", exported=True)
    assert again.added == again.updated == again.rejected == 0
    assert exports[0] == exports[1]
    assert stored[0] == stored[1]  # the export carried every value back unchanged


csv_text = st.lists(
    st.lists(st.text(alphabet=st.sampled_from('ab@.x",\r\n =é'), max_size=8), max_size=3),
    max_size=6,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=csv_text, raw_tail=st.text(alphabet=st.sampled_from('a@"\r\n,'), max_size=6))
def test_any_file_is_counted_in_full_or_refused_whole(
    rows: list[list[str]], raw_tail: str, weekly: Engine, tmp_path: Path
) -> None:
    """Every data record is added, updated, unchanged or rejected; or the file is refused
    with an ImportFileError and the database is as it was."""
    buffer = io.StringIO()
    csv.writer(buffer).writerows([["email", "name"], *rows])
    text = buffer.getvalue() + raw_tail
    path = write(tmp_path, text, "fuzz.csv")
    before = snapshot(weekly)
    try:
        report = import_csv(weekly, path, "weekly")
    except ImportFileError:
        assert snapshot(weekly) == before
        return
    records = [r for r in csv.reader(io.StringIO(text, newline=""), strict=True) if r][1:]
    assert report.added + report.updated + report.unchanged + report.rejected == len(records)
