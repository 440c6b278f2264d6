"""Hostile and careless response files through `consult ingest`: each refusal is one `error:` line naming the
file (and the row or limit), a non-zero exit, and a database left exactly as it was."""

from __future__ import annotations

import csv
import os
import subprocess
import zipfile
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from db.models import IngestedFile, QuarantinedRow, Response
from tests import warm_consult
from tests.conftest import EXAMPLES

# A file refused before anything is stored meets either database the same way: one database is enough.
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
HEADER = (EXAMPLES / "responses-2019.csv").read_text(encoding="utf-8").splitlines()[0]


def run_consult(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line in a child process (started warm, tests/warm_consult.py), on the test's database
    and the session's Prefect server."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ) | {"PREFECT_API_URL": str(PREFECT_API_URL.value())} | (env or {})
    return warm_consult.run_consult(list(args), cwd=cwd, env=env, timeout=300)


def counts(engine: Engine) -> tuple[int, int, int]:
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            connection.scalar(select(func.count()).select_from(table))
            for table in (IngestedFile, Response, QuarantinedRow)
        )


def console_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """The whole console output is one `error:` line holding every expected fragment; exit status non-zero."""
    lines = console_lines(result)
    assert result.returncode != 0, lines
    assert len(lines) == 1, "\n".join(lines)
    assert lines[0].startswith("error: "), lines[0]
    for fragment in expected:
        assert fragment in lines[0], lines[0]
    return lines[0]


def ingest_refused(tmp_path: Path, engine: Engine, path: Path, *expected: str, env: dict[str, str] | None = None) -> str:
    before = counts(engine)
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path, env=env)
    line = assert_one_line_refusal(result, path.name, *expected)
    assert counts(engine) == before
    return line


# --- one line per refusal --------------------------------------------------------------------------------


@SQLITE_ONLY
def test_an_empty_file_is_refused_in_one_line(tmp_path, engine, round_2019):
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    ingest_refused(tmp_path, engine, path, "empty")


@SQLITE_ONLY
def test_a_missing_file_is_refused_in_one_line(tmp_path, engine, round_2019):
    ingest_refused(tmp_path, engine, tmp_path / "nowhere.csv", "not found")


@SQLITE_ONLY
def test_a_folder_is_refused_as_a_folder_not_as_a_missing_file(tmp_path, engine, round_2019):
    folder = tmp_path / "exports"
    folder.mkdir()
    line = ingest_refused(tmp_path, engine, folder, "folder")
    assert "not found" not in line


@SQLITE_ONLY
@pytest.mark.slow
def test_a_file_of_unknown_layout_is_refused_in_one_line(tmp_path, engine, round_2019):
    path = tmp_path / "other.csv"
    path.write_text("colour,size\nred,3\n", encoding="utf-8")
    ingest_refused(tmp_path, engine, path, "no recognisable question column", "colour")


def test_a_header_only_csv_is_refused_not_recorded_as_an_empty_file(tmp_path, engine, round_2019):
    path = tmp_path / "header-only.csv"
    path.write_text(HEADER + "\n", encoding="utf-8")
    ingest_refused(tmp_path, engine, path, "no response row")


@pytest.mark.parametrize("command", [["invite", "2030"], ["remind", "2030"], ["publish", "2030"]], ids=" ".join)
@pytest.mark.slow
def test_every_command_that_runs_a_flow_fails_in_one_line(command, tmp_path, engine, round_2019):
    """A flow that fails (here: a round never opened) shows no Prefect traceback, only the command's line."""
    assert_one_line_refusal(run_consult(*command, cwd=tmp_path), "2030")


# --- archives bounded before they are read -----------------------------------------------------------------


def reference_rows() -> list[list[str]]:
    with open(EXAMPLES / "responses-2019.csv", encoding="utf-8", newline="") as handle:
        return list(csv.reader(handle))


def write_xlsx(path: Path, rows: list[list[str]]) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    for row in rows:
        workbook.active.append(row)
    workbook.save(path)
    return path


def inflate_sheet(path: Path, padding: int) -> Path:
    """Rewrite an XLSX so that its sheet holds ``padding`` bytes of whitespace: tiny on disk, huge inflated."""
    with zipfile.ZipFile(path) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for name, data in members:
            if name == "xl/worksheets/sheet1.xml":
                data = data.replace(b"<sheetData>", b"<sheetData>" + b" " * padding, 1)
            archive.writestr(name, data)
    return path


@SQLITE_ONLY
@pytest.mark.slow
def test_an_xlsx_zip_bomb_is_refused_before_it_is_inflated(tmp_path, engine, round_2019):
    path = inflate_sheet(write_xlsx(tmp_path / "bomb.xlsx", reference_rows()), 256 * 1024 * 1024)
    assert path.stat().st_size < 2 * 1024 * 1024
    ingest_refused(tmp_path, engine, path, "xl/worksheets/sheet1.xml", "CONSULT_XLSX_MAX_COMPRESSION_RATIO")


@pytest.mark.slow
def test_an_xlsx_over_the_uncompressed_size_limit_is_refused_naming_the_limit(tmp_path, engine, round_2019):
    path = write_xlsx(tmp_path / "big.xlsx", reference_rows())
    with zipfile.ZipFile(path) as archive:
        inflated = sum(info.file_size for info in archive.infolist())
    limit = inflated - 1
    ingest_refused(tmp_path, engine, path, f"CONSULT_XLSX_MAX_UNCOMPRESSED_BYTES={limit:,}",
                   env={"CONSULT_XLSX_MAX_UNCOMPRESSED_BYTES": str(limit)})
    # At the limit itself the same file is read.
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path,
                         env={"CONSULT_XLSX_MAX_UNCOMPRESSED_BYTES": str(inflated)})
    assert result.returncode == 0, result.stderr


@SQLITE_ONLY
def test_an_xlsx_with_more_rows_than_the_limit_is_refused_while_streaming(tmp_path, engine, round_2019):
    rows = reference_rows()
    path = write_xlsx(tmp_path / "long.xlsx", rows + [rows[-1]] * 200)
    ingest_refused(tmp_path, engine, path, "more than 100 rows", "CONSULT_MAX_ROWS",
                   env={"CONSULT_MAX_ROWS": "100"})


@SQLITE_ONLY
def test_a_csv_with_more_rows_than_the_limit_is_refused(tmp_path, engine, round_2019):
    rows = reference_rows()
    path = tmp_path / "long.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows + [rows[-1]] * 200)
    ingest_refused(tmp_path, engine, path, "more than 100 rows", env={"CONSULT_MAX_ROWS": "100"})


# --- no silent change of data ------------------------------------------------------------------------------


def reference_lines() -> list[bytes]:
    return (EXAMPLES / "responses-2019.csv").read_bytes().splitlines()


def padded_csv(path: Path, row: bytes, *, after_bytes: int = 70 * 1024, first: bytes | None = None) -> int:
    """The reference export, then copies of its first answer until ``after_bytes``, then ``row``; returns the
    line number of ``row``."""
    lines = reference_lines()
    body = [first or lines[1]]
    while sum(len(line) + 1 for line in body) < after_bytes:
        body.append(lines[1])
    content = [lines[0], *body, row]
    path.write_bytes(b"\n".join(content) + b"\n")
    return len(content)


def stored_story(engine: Engine, partnership_code: str) -> str | None:
    from db.models import Partnership

    with engine.connect() as connection:
        answers = connection.scalars(
            select(Response.answers).join(Partnership, Partnership.id == Response.partnership_id)
            .where(Partnership.code == partnership_code, Response.status == "accepted")
        ).all()
    return answers[0].get("success_story") if answers else None


@SQLITE_ONLY
def test_a_csv_with_a_heading_twice_is_refused(tmp_path, engine, round_2019):
    lines = reference_lines()
    path = tmp_path / "twice.csv"
    path.write_bytes(lines[0] + b",markets\n" + b"\n".join(line + b",CA" for line in lines[1:]) + b"\n")
    ingest_refused(tmp_path, engine, path, "'markets' appears 2 times", "question markets reads it")


@SQLITE_ONLY
def test_a_json_lines_file_with_a_key_twice_is_refused(tmp_path, engine, round_2019):
    path = tmp_path / "twice.jsonl"
    path.write_text('{"partnership_id": "ESCP4I-01", "markets": "US", "markets": "CA"}\n', encoding="utf-8")
    ingest_refused(tmp_path, engine, path, "line 1", "'markets' appears twice")


@SQLITE_ONLY
def test_a_cp1252_byte_after_64_kib_of_utf8_is_refused_naming_its_line(tmp_path, engine, round_2019):
    path = tmp_path / "mixed.csv"
    accented = reference_lines()[1].replace(b"ESCP4I-01", b"ESCP4I-02") + "Café".encode()
    line = padded_csv(path, reference_lines()[2] + "Crème".encode("cp1252"), first=accented)
    ingest_refused(tmp_path, engine, path, f"line {line}", "0xE8", "not UTF-8")


@pytest.mark.slow
def test_a_cp1252_file_whose_first_accent_comes_after_64_kib_keeps_its_accents(tmp_path, engine, round_2019):
    """Decided on the whole file: all cp1252, so read as cp1252 and 'Café' stays 'Café'."""
    path = tmp_path / "windows.csv"
    row = reference_lines()[4]
    assert row.startswith(b"ESCP4I-04,") and row.endswith(b",")
    padded_csv(path, row.replace(b"2019-03-06", b"2019-03-30") + "Café crème".encode("cp1252"))
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert stored_story(engine, "ESCP4I-04") == "Café crème"


@SQLITE_ONLY
def test_a_nul_byte_after_64_kib_is_refused_naming_its_line(tmp_path, engine, round_2019):
    path = tmp_path / "nul.csv"
    line = padded_csv(path, reference_lines()[3] + b"before\x00after")
    ingest_refused(tmp_path, engine, path, f"line {line}", "NUL")


@pytest.mark.slow
def test_a_lone_cr_in_a_story_does_not_start_a_markdown_heading_in_the_summary(tmp_path, engine, round_2019):
    lines = reference_lines()
    lines[4] = lines[4] + b'"Joint mission to Canada\r# Not a heading\rSetext\r==="'
    path = tmp_path / "cr.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    assert run_consult("ingest", "2019", str(path), cwd=tmp_path).returncode == 0
    assert stored_story(engine, "ESCP4I-04") == "Joint mission to Canada\n# Not a heading\nSetext\n==="
    published = run_consult("publish", "2019", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert published.returncode == 0, published.stderr
    markdown = (tmp_path / "out" / "2019" / "summary-2019.md").read_text(encoding="utf-8")
    assert "\r" not in markdown and "\u2028" not in markdown
    story_lines = [line for line in markdown.splitlines() if "Not a heading" in line]
    assert story_lines, markdown
    assert not any(line.lstrip().startswith(("#", "===")) for line in markdown.splitlines()[1:]
                   if "Not a heading" in line or line.strip() == "===")


# --- dates by declared formats, numbers bounded ------------------------------------------------------------


def quarantined(engine: Engine) -> dict[int, list[dict]]:
    with engine.connect() as connection:
        return {row_number: reasons for row_number, reasons in connection.execute(
            select(QuarantinedRow.row_number, QuarantinedRow.reasons))}


def accepted_submissions(engine: Engine) -> dict[str, object]:
    from db.models import Partnership

    with engine.connect() as connection:
        return dict(connection.execute(
            select(Partnership.code, Response.submitted_at).join(Partnership, Partnership.id == Response.partnership_id)
            .where(Response.status == "accepted")).all())


def with_dates(dates: dict[int, str]) -> bytes:
    """The reference export with the submit dates of some of its lines (1 = first answer) replaced."""
    lines = reference_lines()
    for line, date in dates.items():
        cells = lines[line].split(b",")
        cells[1] = date.encode()
        lines[line] = b",".join(cells)
    return b"\n".join(lines) + b"\n"


@pytest.mark.slow
def test_invalid_ancient_and_future_submit_dates_are_quarantined_with_their_value(tmp_path, engine, round_2019):
    """2019-13-01, -1, 04/03/2019 (ambiguous: the questionnaire does not say day first), 1999 and 2999: each row is
    quarantined naming its value; the 2999 row of a partnership that also answered on a real date never becomes
    its latest submission."""
    bad = {4: "2019-13-01", 5: "-1", 6: "04/03/2019", 7: "1999-12-31T10:00:00", 8: "2999-01-01"}
    lines = reference_lines()
    later_of_first = lines[1].split(b",")
    later_of_first[1] = b"2999-01-01T00:00:00"
    path = tmp_path / "dates.csv"
    path.write_bytes(with_dates(bad) + b",".join(later_of_first) + b"\n")
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reasons = [reason for row in quarantined(engine).values() for reason in row]
    for value in [*bad.values(), "2999-01-01T00:00:00"]:
        assert any(reason["column"] == "submitted_at" and reason["value"] == value
                   and repr(value) in reason["message"] for reason in reasons), value
    first_code = lines[1].split(b",")[0].decode()
    submitted = accepted_submissions(engine)[first_code]
    assert str(submitted).startswith("2019-03-04"), submitted


@pytest.mark.slow
def test_day_first_dates_are_read_where_the_questionnaire_says_so(tmp_path, engine, round_2019):
    questionnaire = tmp_path / "q-day-first.yaml"
    questionnaire.write_text((EXAMPLES / "questionnaire-2020.yaml").read_text(encoding="utf-8")
                             + "\ndayfirst: true\n", encoding="utf-8")
    opened = run_consult("round", "open", "2020", "--questionnaire", str(questionnaire), cwd=tmp_path)
    assert opened.returncode == 0, opened.stderr
    path = tmp_path / "day-first.csv"
    header, first = (EXAMPLES / "responses-2020.csv").read_text(encoding="utf-8").splitlines()[:2]
    assert first.startswith("ESCP4I-01,2020-03-02T09:05:00,")
    path.write_text(header + "\n" + first.replace("2020-03-02T09:05:00", "04/03/2020 10:30") + "\n", encoding="utf-8")
    result = run_consult("ingest", "2020", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with engine.connect() as connection:
        stamps = connection.scalars(select(Response.submitted_at)).all()
    # 4 March 2020 10:30 in Brussels (UTC+1 in winter) is 09:30 UTC, never 3 April.
    assert [str(stamp)[:16] for stamp in stamps] == ["2020-03-04 09:30"]


@pytest.mark.slow
def test_a_100000_digit_integer_quarantines_its_row_not_the_file(tmp_path, engine, round_2019):
    huge = "9" * 100_000
    lines = reference_lines()
    cells = lines[4].split(b",")
    position = HEADER.split(",").index("cooperation_agreements")
    cells[position] = huge.encode()
    lines[4] = b",".join(cells)
    path = tmp_path / "huge.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    reasons = [reason for row in quarantined(engine).values() for reason in row]
    assert any(reason["column"] == "cooperation_agreements" and reason["value"] == huge for reason in reasons)
    assert all(len(reason["message"]) < 300 for reason in reasons)
    assert len(accepted_submissions(engine)) == 19 - 1  # the reference file's 19 accepted, less this one


# --- a stored file always gets its report ------------------------------------------------------------------


@pytest.mark.slow
def test_a_rerun_of_a_stored_file_whose_report_is_missing_rebuilds_the_report(tmp_path, engine, settings, round_2019):
    """The first run stored the rows, then its report and Data Docs were lost (a run killed after the store):
    the same file again stores nothing twice but writes the report and the file's Data Docs page."""
    import shutil

    path = tmp_path / "export.csv"
    path.write_bytes((EXAMPLES / "responses-2019.csv").read_bytes())
    assert run_consult("ingest", "2019", str(path), cwd=tmp_path).returncode == 0
    stored = counts(engine)
    report = settings.output_dir / "data-quality" / "dq-2019.md"
    docs = settings.output_dir / "data-docs" / "2019"
    assert report.is_file() and list((docs / "validations").rglob("*.html"))
    report.unlink()
    shutil.rmtree(docs)

    again = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already ingested" in again.stdout
    assert counts(engine) == stored
    markdown = report.read_text(encoding="utf-8")
    assert "Its report was missing" in markdown and "FAILED" in markdown
    assert "export.csv" in (docs / "index.html").read_text(encoding="utf-8")
    assert list((docs / "validations").rglob("*.html"))

    # With its report in place, a third run skips the file altogether.
    third = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert third.returncode == 0
    assert "Its report was missing" not in report.read_text(encoding="utf-8")
