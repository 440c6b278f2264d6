"""Reading survey exports: layouts, encodings, delimiters, and files that cannot be read.

These tests need no database: they read files written by the test itself and check what a person would see
(the cells, the detected encoding and delimiter, or the one-line error naming the file)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import openpyxl
import pytest

from consult.errors import ConsultError
from consult.ingest.normalise import answers_json, normalise
from consult.ingest.readers import read_response_file
from consult.questionnaire import load_questionnaire

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "escp4i"
HEADER = "partnership_id,submitted_at,markets,sme_involvement,cooperation_agreements,business_missions_planned,sme_members,success_story"


@pytest.fixture(scope="module")
def questionnaire():
    return load_questionnaire(EXAMPLES / "questionnaire-2019.yaml")


def write(tmp_path: Path, name: str, content: bytes | str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
    return path


def test_reference_file_reads_as_plain_utf8_comma_separated(questionnaire) -> None:
    """The reference export is read as the plain layout, UTF-8, comma-separated, with every row kept."""
    read = read_response_file(EXAMPLES / "responses-2019.csv", questionnaire)
    assert (read.layout, read.file_format, read.encoding, read.delimiter) == ("plain", "csv", "utf-8", ",")
    assert read.row_count == 22
    assert read.cells.index[0] == 2  # the header is row 1, as a spreadsheet numbers it
    assert read.cells.loc[2, "partnership_id"] == "ESCP4I-01"
    assert read.cells.loc[2, "markets"] == "US;JP;CN;KR"
    assert bool(read.cells.loc[23, "complete"]) is False  # ESCP4I-12 has no submit date
    assert "\n" in read.cells.loc[9, "success_story"]  # a quoted line break stays inside the cell


def test_cp1252_file_is_detected_and_decoded(tmp_path, questionnaire) -> None:
    """An Excel 'CSV (Windows)' export in cp1252 is detected and its accents come out right."""
    text = HEADER + "\nESCP4I-01,2019-03-04T09:12:00,US,other,1,yes,5,Société générale – café\n"
    read = read_response_file(write(tmp_path, "win.csv", text, "cp1252"), questionnaire)
    assert read.encoding == "cp1252"
    assert read.cells.loc[2, "success_story"] == "Société générale – café"


def test_cp1252_accents_far_below_an_ascii_start_are_still_decoded(tmp_path, questionnaire) -> None:
    """The encoding is guessed from the file's start; accents first met 100 KB further down still come out
    right, and the file is reported as cp1252."""
    rows = [f"ESCP4I-01,2019-03-04T09:12:{n % 60:02d},US,other,1,yes,5,plain ascii story {n}" for n in range(2000)]
    text = HEADER + "\n" + "\n".join(rows) + "\nESCP4I-02,2019-03-05T09:00:00,CA,other,1,no,5,Crédit coopératif\n"
    path = write(tmp_path, "late-accents.csv", text, "cp1252")
    assert path.stat().st_size > 100_000
    read = read_response_file(path, questionnaire)
    assert read.encoding == "cp1252"
    assert read.cells["success_story"].iloc[-1] == "Crédit coopératif"
    assert read.row_count == 2001


def test_utf16_file_is_refused_with_the_file_name(tmp_path, questionnaire) -> None:
    """A UTF-16 file (what 'Unicode text' means in Excel) stops with one line naming the file."""
    path = write(tmp_path, "unicode.csv", (HEADER + "\n").encode("utf-16"))
    with pytest.raises(ConsultError, match=r"unicode\.csv: not a text file in UTF-8 or cp1252"):
        read_response_file(path, questionnaire)


def test_bom_is_detected_and_stripped_from_the_first_column(tmp_path, questionnaire) -> None:
    """With a UTF-8 BOM the encoding is reported as utf-8-sig and the first column is still recognised."""
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + (HEADER + "\nESCP4I-01,2019-03-04,US,other,1,yes,5,\n").encode())
    read = read_response_file(path, questionnaire)
    assert read.encoding == "utf-8-sig"
    assert read.raw.columns[0] == "partnership_id"
    assert read.cells.loc[2, "partnership_id"] == "ESCP4I-01"


def test_semicolon_separated_file_is_detected(tmp_path, questionnaire) -> None:
    """A semicolon-separated export (European Excel) is detected; quoted multi-select cells keep their ';'."""
    text = HEADER.replace(",", ";") + '\nESCP4I-01;2019-03-04T09:12:00;"US;JP";business_contacts;2;no;10;Hello, world\n'
    read = read_response_file(write(tmp_path, "semi.csv", text), questionnaire)
    assert read.delimiter == ";"
    assert read.cells.loc[2, "markets"] == "US;JP"
    assert read.cells.loc[2, "success_story"] == "Hello, world"


def test_empty_file_is_refused(tmp_path, questionnaire) -> None:
    """A zero-byte file stops with one line naming it."""
    with pytest.raises(ConsultError, match=r"empty\.csv: the file is empty"):
        read_response_file(write(tmp_path, "empty.csv", b""), questionnaire)


def test_header_only_file_is_refused(tmp_path, questionnaire) -> None:
    """A header without rows is an export gone wrong: refused, never recorded as a file of 0 rows."""
    with pytest.raises(ConsultError, match=r"header\.csv: the file has a header row but no response row"):
        read_response_file(write(tmp_path, "header.csv", HEADER + "\n"), questionnaire)


def test_file_without_question_columns_is_refused(tmp_path, questionnaire) -> None:
    """A file whose header names no question stops with a line naming the file and what was expected."""
    path = write(tmp_path, "panel.csv", (EXAMPLES / "panel.csv").read_bytes())
    with pytest.raises(ConsultError, match=r"panel\.csv: no recognisable question column \(expected some of markets"):
        read_response_file(path, questionnaire)


def test_row_with_too_many_cells_is_refused_naming_the_line(tmp_path, questionnaire) -> None:
    """A row with more cells than the header is a broken export, refused with the line number."""
    text = HEADER + "\nESCP4I-01,2019-03-04,US,other,1,yes,5,story,extra,cells\n"
    with pytest.raises(ConsultError, match=r"broken\.csv: not a readable CSV file \(a row has more cells than the header\)"):
        read_response_file(write(tmp_path, "broken.csv", text), questionnaire)


def test_extra_columns_are_ignored_and_missing_ones_reported(tmp_path, questionnaire) -> None:
    """Columns that match no question are listed in the notes; a missing question column is reported."""
    text = "partnership_id,submitted_at,markets,sme_involvement,cooperation_agreements,business_missions_planned,sme_members,ip_address\n"
    text += "ESCP4I-01,2019-03-04,US,other,1,yes,5,10.0.0.1\n"
    read = read_response_file(write(tmp_path, "extra.csv", text), questionnaire)
    assert any("ignored 1 column(s)" in note and "ip_address" in note for note in read.notes)
    assert any("no column for question(s) success_story" in note for note in read.notes)
    assert "ip_address" in read.raw.columns  # still kept in the raw cells


def test_columns_named_by_question_label_are_recognised(tmp_path, questionnaire) -> None:
    """A plain export whose header uses the question labels maps them to the question codes."""
    labels = [questionnaire.question(code).label for code in questionnaire.codes]
    text = "Partnership ID,Submitted at," + ",".join(f'"{label}"' for label in labels) + "\n"
    text += "ESCP4I-01,2019-03-04,US,other,1,yes,5,\n"
    read = read_response_file(write(tmp_path, "labels.csv", text), questionnaire)
    assert read.cells.loc[2, "cooperation_agreements"] == "1"
    assert read.cells.loc[2, "partnership_id"] == "ESCP4I-01"


def test_limesurvey_csv_joins_option_columns(tmp_path, questionnaire) -> None:
    """LimeSurvey's one column per option (Y or empty) becomes one ';'-joined answer, token and submitdate kept."""
    header = ("id,submitdate,lastpage,startlanguage,token,markets[US],markets[JP],markets[CN],"
              "sme_involvement[business_contacts],sme_involvement[other],cooperation_agreements,"
              "business_missions_planned,sme_members,success_story")
    rows = ["1,2019-03-04 09:12:00,3,en,tok-a,Y,,Y,Y,,2,Y,10,", "2,,1,en,tok-b,,Y,,,Y,,,,"]
    read = read_response_file(write(tmp_path, "survey_123.csv", "\n".join([header, *rows]) + "\n"), questionnaire)
    assert read.layout == "limesurvey"
    assert read.cells.loc[2, "markets"] == "US;CN"
    assert read.cells.loc[2, "token"] == "tok-a"
    assert read.cells.loc[3, "sme_involvement"] == "other"
    assert [bool(value) for value in read.cells["complete"]] == [True, False]


def _xlsx(path: Path, rows: list[list[object]]) -> Path:
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    for row in rows:
        sheet.append(row)
    workbook.save(path)
    return path


def test_eusurvey_xlsx_skips_metadata_rows_above_the_header(tmp_path, questionnaire) -> None:
    """EUSurvey's metadata rows are skipped; the header is the row with 'Contribution Id'."""
    path = _xlsx(
        tmp_path / "eusurvey.xlsx",
        [
            ["ESCP-4i yearly consultation"],
            ["Export date", "2019-04-01"],
            [],
            ["Contribution Id", "Partnership ID", "Submitted at", "markets", "sme_involvement",
             "cooperation_agreements", "business_missions_planned", "sme_members", "success_story"],
            ["c-1", "ESCP4I-02", "2019-03-05 14:40", "ZA;MX", "joint_events", 1, "No", 18, None],
        ],
    )
    read = read_response_file(path, questionnaire)
    assert (read.layout, read.file_format, read.encoding) == ("eusurvey", "xlsx", None)
    assert "skipped 3 metadata row(s) above the header" in read.notes
    assert read.cells.index.tolist() == [5]  # the answer is on the sheet's row 5
    assert read.cells.iloc[0]["partnership_id"] == "ESCP4I-02"
    assert read.cells.iloc[0]["cooperation_agreements"] == "1"


def test_xlsx_with_entity_expansion_is_refused(tmp_path, questionnaire) -> None:
    """An XLSX whose XML declares entities (billion laughs) is refused with a clear line, not expanded."""
    clean = _xlsx(tmp_path / "clean.xlsx", [["partnership_id", "markets"], ["ESCP4I-01", "US"]])
    bomb = tmp_path / "bomb.xlsx"
    laughs = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE lolz [<!ENTITY lol "lol">'
        '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
        '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>\n'
    )
    with zipfile.ZipFile(clean) as source, zipfile.ZipFile(bomb, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename in ("xl/worksheets/sheet1.xml", "xl/workbook.xml"):
                text = data.decode()
                text = text[text.index("?>") + 2 :] if text.startswith("<?xml") else text
                text = laughs + text.replace("ESCP4I-01", "&lol3;")
                data = text.encode()
            target.writestr(item, data)
    with pytest.raises(ConsultError, match=r"bomb\.xlsx: refused: the XLSX contains XML entity declarations"):
        read_response_file(bomb, questionnaire)


def test_not_an_xlsx_is_refused(tmp_path, questionnaire) -> None:
    """A CSV renamed .xlsx stops with one line naming the file."""
    with pytest.raises(ConsultError, match=r"renamed\.xlsx: not a readable XLSX file"):
        read_response_file(write(tmp_path, "renamed.xlsx", HEADER + "\n"), questionnaire)


def test_json_lines_accept_lists_and_typed_values(tmp_path, questionnaire) -> None:
    """JSON lines may carry multi-select answers as lists and numbers and booleans as JSON values."""
    record = {"partnership_id": "ESCP4I-04", "submitted_at": "2019-03-06T11:22:00", "markets": ["US", "JP"],
              "sme_involvement": ["soft_landing"], "cooperation_agreements": 0, "business_missions_planned": True,
              "sme_members": 35, "success_story": None}
    read = read_response_file(write(tmp_path, "answers.jsonl", json.dumps(record) + "\n\n"), questionnaire)
    assert read.file_format == "jsonl"
    typed = normalise(read.cells, questionnaire).typed
    answers = json.loads(answers_json(typed, questionnaire).iloc[0])
    assert answers == {"markets": ["US", "JP"], "sme_involvement": ["soft_landing"], "cooperation_agreements": 0,
                       "business_missions_planned": True, "sme_members": 35, "success_story": None}



def test_control_characters_in_a_cell_are_kept_whole(tmp_path, questionnaire) -> None:
    """Control characters other than NUL (an escape sequence, a bell) are kept exactly, never cut."""
    story = "before\x1b[31mred\x07after"
    read = read_response_file(
        write(tmp_path, "ctl.csv", HEADER + "\n" + f"ESCP4I-01,2019-04-01T10:00:00,US,other,2,yes,20,{story}\n"),
        questionnaire,
    )
    assert read.cells["success_story"].tolist() == [story]


def test_a_nul_character_in_json_lines_is_refused_with_its_row(tmp_path, questionnaire) -> None:
    path = write(tmp_path, "nul.jsonl", '{"partnership_id": "ESCP4I-01", "success_story": "cut\\u0000here"}\n')
    with pytest.raises(ConsultError, match=r"nul\.jsonl: row 1, column 'success_story' holds a NUL character"):
        read_response_file(path, questionnaire)
