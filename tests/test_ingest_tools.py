"""Real survey-tool exports ingested as exported: LimeSurvey, Qualtrics, ODK Central, KoBoToolbox (two exports, one
with a select_multiple) and EUSurvey's results XML (a real one, and one constructed after its export code), each
with a questionnaire written for it, in anonymous rounds.

The files are public exports nobody here wrote, copied byte for byte (sources: tests/data/real/SOURCES.md; each
test names its file's repository, path and commit). Expected values are read from the files with the standard
library's csv/zipfile/ElementTree modules and the tools' documented meanings, never from the code under test."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from consult.errors import ConsultError
from consult.ingest import pipeline
from consult.ingest.readers import read_response_file
from consult.ingest.store import IngestSummary
from consult.questionnaire import load_questionnaire
from consult.rounds import open_round
from db.engine import session_scope
from db.models import IngestedFile, QuarantinedRow, Response

REAL = Path(__file__).parent / "data" / "real"
CONSTRUCTED = Path(__file__).parent / "data" / "constructed"

# r0bis/efptPWG, data/Albania/Albania.csv, commit de19c72ffdc0675b0eecddb0e9df5f216b9955ad
LIMESURVEY = REAL / "limesurvey" / "Albania.csv"
# ropensci/qualtRics, tests/testthat/files/sample.csv, commit b8d9c7ec7621dea34281113aa3c6bb59e84e390e
QUALTRICS = REAL / "qualtrics" / "sample.csv"
# ropensci/ruODK, docs/articles/attachments/build_Flora-Quadrat-0-4_1564384341.csv,
# commit ecdcca3861f979e738d4cdc5a27ffea8221d554b
ODK = REAL / "odk_central" / "build_Flora-Quadrat-0-4_1564384341.csv"
# kobotoolbox/kobo-transfer, xls_transfer/tests/aRxMkyoPa6dj5wqMnT4vnz/
# Project_Overview_-_latest_version_-_False_-_2024-03-14-14-17-01.xlsx, commit 543f092dc28262c9400a63834ac91def0bfb42c5
KOBO = REAL / "kobo" / "Project_Overview_-_latest_version_-_False_-_2024-03-14-14-17-01.xlsx"
# Constructed after EUSurvey/EUSURVEY src/main/java/com/ec/survey/tools/export/XmlExportCreator.java
# (commit 012d23f12f019b99f82c74ec34b2eda1036630a1), with short names of its own and three answer sets.
EUSURVEY_XML = CONSTRUCTED / "eusurvey" / "results.xml"
# hades646/EUSurveyQlikConnectorDocs, doc/survey-test-qlik/result.xml, commit 71b4561aa425ae58c47acb47ee9d126c570a3001
# (sha256 04c6f2f3...): EUSurvey's own results XML of a test survey, 7 contributions.
EUSURVEY_REAL = REAL / "eusurvey" / "result.xml"
# Edouard-Legoupil/kobocruncher, inst/data.xlsx, commit 3c9ea0f545d611c823a2e5abf37fd4eedd1d8c4c (sha256
# da5b809e...; that version as exported: the next commit re-saved it in ONLYOFFICE with edited dates): a KoBoToolbox
# XLSX export, a select_multiple written whole (space-separated) and split into 1/0 columns, "." group separator.
KOBO_MULTIPLE = REAL / "kobo_select_multiple" / "data.xlsx"


def open_tool_round(engine, settings, questionnaire: Path, year: int, closes_on: dt.date) -> int:
    with session_scope(engine) as session:
        open_round(session, year=year, questionnaire_path=questionnaire, token_secret=settings.resolved_token_secret(),
                   closes_on=closes_on, today=closes_on - dt.timedelta(days=60))
    return year


def ingest(settings, year: int, *paths: Path) -> IngestSummary:
    files = pipeline.read_files(settings, year, [str(path) for path in paths])
    matched = pipeline.match_files(settings, year, files)
    return pipeline.store_files(settings, year, pipeline.validate_files(settings, year, matched))


def responses_by_key(engine, status: str | None = None) -> dict[str, Response]:
    with session_scope(engine) as session:
        query = select(Response).order_by(Response.id)
        if status:
            query = query.where(Response.status == status)
        found = {response.response_key: response for response in session.scalars(query)}
        for response in found.values():
            session.expunge(response)
        return found


def csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


# --- LimeSurvey: code headings, arrays, other texts, N/A ----------------------------------------------------------

AGREEMENT = {"Strongly Disagree": 1, "Disagree": 2, "Neutral": 3, "Agree": 4, "Strongly Agree": 5}
WHO_PAYS = {"I pay": "A1", "State / 3rd party pays": "A2", "I don't have it": "A3"}


def test_limesurvey_export_keeps_complete_rows_partial_ones_matrices_and_other_texts(engine, settings, panel):
    """Every row with a submit date ('Completed') is accepted, the others are kept as partial; a matrix is stored
    as its rows (labels read back to scale values and option codes), an "other" text beside the choice."""
    year = open_tool_round(engine, settings, REAL / "limesurvey" / "questionnaire.yaml", 2013, dt.date(2013, 12, 31))
    rows = csv_rows(LIMESURVEY)
    complete = {row["id"] for row in rows if row["Completed"].strip()}
    partial = {row["id"] for row in rows} - complete

    [summary] = ingest(settings, year, LIMESURVEY).files
    assert (summary.layout, summary.accepted, summary.partial, summary.quarantined) == (
        "limesurvey", len(complete), len(partial), 0)
    accepted = responses_by_key(engine, "accepted")
    assert set(accepted) == complete
    assert {key for key, response in responses_by_key(engine, "partial").items()} == partial
    assert all(response.partnership_id is None and response.matched_by == "response_id"
               for response in accepted.values())
    for row in rows:
        if row["id"] not in complete:
            continue
        answers = accepted[row["id"]].answers
        for sub in ("SQ001", "SQ002", "SQ003"):
            written = row[f"0019 [{sub}]"]
            assert answers[f"0019[{sub}]"] == AGREEMENT.get(written), (row["id"], sub, written)
        for sub in ("SQ001", "SQ002", "SQ003", "SQ004", "SQ005", "SQ006"):
            assert answers[f"0016[{sub}]"] == WHO_PAYS.get(row[f"0016 [{sub}]"])
        other = row["0005 [other]"].strip()
        assert answers["0005[other]"] == (other or None)
        assert ("other" in (answers["0005"] or [])) == bool(other)
        assert not any(code.startswith("I have done") for code in answers["0005"] or [])  # text is not an option


def test_limesurvey_not_shown_marker_is_missing_not_an_answer(engine, settings, panel):
    """LimeSurvey writes N/A where a question was not shown: the stored answer is empty, not 'N/A'."""
    year = open_tool_round(engine, settings, REAL / "limesurvey" / "questionnaire.yaml", 2013, dt.date(2013, 12, 31))
    rows = csv_rows(LIMESURVEY)
    not_shown = [(row["id"], column) for row in rows for column, value in row.items() if value == "N/A"]
    assert not_shown, "the real export has N/A cells"
    ingest(settings, year, LIMESURVEY)
    stored = {**responses_by_key(engine, "accepted"), **responses_by_key(engine, "partial")}
    for response_id, column in not_shown:
        code = column.replace(" [", "[")
        assert stored[response_id].answers.get(code) is None, (response_id, column)


def test_limesurvey_report_names_tool_heading_style_id_and_completeness(engine, settings, panel):
    """The data-quality report says what the file was recognised as, and how many answers were 'not shown'."""
    from consult.ingest.dq_report import markdown_report

    year = open_tool_round(engine, settings, REAL / "limesurvey" / "questionnaire.yaml", 2013, dt.date(2013, 12, 31))
    files = pipeline.read_files(settings, year, [str(LIMESURVEY)])
    validated = pipeline.validate_files(settings, year, pipeline.match_files(settings, year, files))
    summary = pipeline.store_files(settings, year, validated)
    with session_scope(engine) as session:
        report = session.scalar(select(IngestedFile.report))
    assert report["recognised"] == {"tool": "limesurvey", "heading_style": "code", "id_column": "id",
                                    "completeness_column": "Completed", "submit_date_column": "Completed"}
    markdown = markdown_report(summary, validated, None)
    assert "Recognised: limesurvey export, code headings; response id column `id`, completeness from `Completed`" \
        in markdown
    not_shown = sum(value == "N/A" for row in csv_rows(LIMESURVEY) for value in row.values())
    assert f"{not_shown} answer(s) marked not shown / not applicable" in markdown


# --- Qualtrics, ODK Central, KoBoToolbox ----------------------------------------------------------------------------


def test_qualtrics_export_reads_responses_below_its_three_header_rows(engine, settings, panel):
    """The question texts and ImportIds rows are not responses; Finished=1 makes the response complete."""
    year = open_tool_round(engine, settings, REAL / "qualtrics" / "questionnaire.yaml", 2017, dt.date(2017, 12, 31))
    with QUALTRICS.open(encoding="utf-8", newline="") as handle:
        header, _texts, _import_ids, *rows = list(csv.reader(handle))
    records = [dict(zip(header, row, strict=True)) for row in rows]

    [summary] = ingest(settings, year, QUALTRICS).files
    assert (summary.layout, summary.rows, summary.accepted, summary.partial, summary.quarantined) == (
        "qualtrics", len(records), sum(r["Finished"] == "1" for r in records),
        sum(r["Finished"] != "1" for r in records), 0)
    accepted = responses_by_key(engine, "accepted")
    for record in records:
        answers = accepted[record["ResponseId"]].answers
        assert answers == {"Q1": record["Q1"], "Q2": record["Q2"]}
        # Qualtrics writes local time without a zone: the engine reads it in the configured time zone.
        stored = accepted[record["ResponseId"]].submitted_at
        stored = stored if stored.tzinfo else stored.replace(tzinfo=dt.UTC)
        assert stored == dt.datetime.fromisoformat(record["RecordedDate"]).replace(tzinfo=ZoneInfo(settings.timezone))


def test_odk_central_export_with_rows_shorter_than_its_header(engine, settings, panel):
    """ODK Central leaves trailing empty cells off; each submission is accepted, known by its KEY."""
    year = open_tool_round(engine, settings, REAL / "odk_central" / "questionnaire.yaml", 2019, dt.date(2019, 12, 31))
    with ODK.open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    assert any(len(row) < len(header) for row in rows), "the real export has short rows"
    records = [dict(zip(header, row, strict=False)) for row in rows]

    [summary] = ingest(settings, year, ODK).files
    assert (summary.layout, summary.accepted, summary.quarantined) == ("odk_central", len(records), 0)
    accepted = responses_by_key(engine, "accepted")
    for record in records:
        assert accepted[record["KEY"]].answers == {
            "reporter": record["reporter"], "area_name": record["location-area_name"],
            "morphological_type": record["habitat-morphological_type"]}


def kobo_rows(path: Path) -> list[dict[str, str]]:
    """The first sheet's cells (shared or inline strings, raw numbers), read with zipfile and ElementTree (no
    openpyxl)."""
    import re
    import zipfile
    from xml.etree import ElementTree

    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
    with zipfile.ZipFile(path) as book:
        strings = book.read("xl/sharedStrings.xml") if "xl/sharedStrings.xml" in book.namelist() else b"<sst/>"
        shared = [("".join(t.text or "" for t in si.iter(f"{{{ns['m']}}}t")))
                  for si in ElementTree.fromstring(strings).findall("m:si", ns)]
        sheet = ElementTree.fromstring(book.read("xl/worksheets/sheet1.xml"))
    table: list[dict[str, str]] = []
    for row in sheet.find("m:sheetData", ns).findall("m:row", ns):
        cells: dict[str, str] = {}
        for cell in row.findall("m:c", ns):
            column = re.match(r"[A-Z]+", cell.get("r")).group()
            value = cell.find("m:v", ns)
            text = "" if value is None else value.text or ""
            if cell.get("t") == "inlineStr":
                text = "".join(t.text or "" for t in cell.iter(f"{{{ns['m']}}}t"))
            cells[column] = shared[int(text)] if cell.get("t") == "s" else text
        table.append(cells)
    header = table[0]
    return [{header[column]: value for column, value in row.items() if column in header} for row in table[1:]]


def test_kobo_xlsx_export_matches_questions_inside_groups(engine, settings, panel):
    """KoBo writes group/question paths: each question is found by its name; _id identifies the submission."""
    year = open_tool_round(engine, settings, REAL / "kobo" / "questionnaire.yaml", 2024, dt.date(2024, 12, 31))
    records = kobo_rows(KOBO)

    [summary] = ingest(settings, year, KOBO).files
    assert (summary.layout, summary.accepted, summary.quarantined) == ("kobo", len(records), 0)
    accepted = responses_by_key(engine, "accepted")
    assert set(accepted) == {record["_id"] for record in records}
    for record in records:
        answers = accepted[record["_id"]].answers
        assert answers["Company_name"] == record["company_details/Company_name"]
        assert answers["Project_name"] == (record.get("project/Project_name") or None)


def test_kobo_select_multiple_is_read_whole_and_agrees_with_its_split_columns(engine, settings, panel):
    """KoBo writes a select_multiple space-separated in one column and as one 1/0 column per choice, here with
    "." as group separator (profile.reason, profile.reason.safety): the answer is the list of choices, the split
    columns are not read as questions, and every submission is accepted by its _id."""
    year = open_tool_round(engine, settings, REAL / "kobo_select_multiple" / "questionnaire.yaml", 2022,
                           dt.date(2022, 12, 31))
    records = kobo_rows(KOBO_MULTIPLE)
    choices = [column.rsplit(".", 1)[1] for column in records[0] if column.startswith("profile.reason.")]

    [summary] = ingest(settings, year, KOBO_MULTIPLE).files
    assert (summary.layout, summary.rows, summary.accepted, summary.partial, summary.quarantined) == (
        "kobo", len(records), len(records), 0, 0)
    accepted = responses_by_key(engine, "accepted")
    assert set(accepted) == {record["_id"] for record in records}
    for record in records:
        answers = accepted[record["_id"]].answers
        whole = record["profile.reason"].split()
        assert whole == [choice for choice in choices if record[f"profile.reason.{choice}"] == "1"]
        assert sorted(answers["reason"]) == sorted(whole)
        assert answers["location"] == record["location"]
        assert answers["country"] == record["profile.country"]
        assert answers["occupation"] == record["profile.occupation"]
        assert answers["HHSize"] == int(record["profile.HHSize"])
    with session_scope(engine) as session:
        report = session.scalar(select(IngestedFile.report))
    assert report["recognised"] == {"tool": "kobo", "heading_style": "code", "id_column": "_id",
                                    "completeness_column": "_submission_time",
                                    "submit_date_column": "_submission_time"}
    assert report["question_columns"]["reason"] == ["profile.reason"]


def eusurvey_answer_sets(path: Path) -> list[dict[str, object]]:
    """Each contribution of an EUSurvey results XML, read with the standard library: its id, and per question
    short name (brackets off, as the questionnaire's codes are written) the short names of the chosen answers,
    or the text written."""
    from xml.etree import ElementTree

    root = ElementTree.parse(path).getroot()
    short = {element.get("id"): (element.get("bid") or "").strip("[]") for element in root.find("Survey/Elements")}
    sets = []
    for answer_set in root.find("Answers"):
        found: dict[str, object] = {"id": answer_set.get("id")}
        for answer in answer_set.findall("Answer"):
            key = short.get(answer.get("qid"), answer.get("qid"))
            value = short[answer.get("aid")] if answer.get("aid") else (answer.text or "")
            found.setdefault(key, []).append(value)  # type: ignore[union-attr]
        sets.append(found)
    return sets


def test_real_eusurvey_results_xml_keeps_choices_matrix_rows_and_ratings(engine, settings, panel):
    """EUSurvey's own results XML of a test survey: every contribution is accepted (EUSurvey exports submitted
    contributions only), single and multiple choices as their short names, the single-choice matrix as its
    rows, the rating question's items as numbers (EUSurvey writes '3/7'), free text as written."""
    year = open_tool_round(engine, settings, REAL / "eusurvey" / "questionnaire.yaml", 2021, dt.date(2021, 12, 31))
    sets = eusurvey_answer_sets(EUSURVEY_REAL)

    [summary] = ingest(settings, year, EUSURVEY_REAL).files
    assert (summary.layout, summary.rows, summary.accepted, summary.partial, summary.quarantined) == (
        "eusurvey", len(sets), len(sets), 0, 0)
    accepted = responses_by_key(engine, "accepted")
    assert set(accepted) == {found["id"] for found in sets}
    rows = {"ID12": ("ID17", "ID18", "ID19"), "ID34": ("ID390", "ID391")}
    for found in sets:
        answers = accepted[found["id"]].answers
        assert answers["IDF1"] == found["IDF1"][0]
        assert answers["IDF2"] == found["IDF2"][0]
        assert sorted(answers["ID5"]) == sorted(found["ID5"])
        assert answers["ID8"] == (float(found["ID8"][0]) if "ID8" in found else None)
        for row in rows["ID12"]:  # a row left unanswered is no answer
            assert answers[f"ID12[{row}]"] == (found[row][0] if row in found else None), (found["id"], row)
        for row in rows["ID34"]:
            stars = int(found[row][0].split("/")[0]) if row in found else None
            assert answers[f"ID34[{row}]"] == stars, (found["id"], row)
        assert answers["ID30"] == (found["ID30"][0] if "ID30" in found else None)
    with session_scope(engine) as session:
        report = session.scalar(select(IngestedFile.report))
    assert report["recognised"] == {"tool": "eusurvey", "heading_style": "code", "id_column": "Contribution Id",
                                    "completeness_column": "Submitted", "submit_date_column": "Submitted"}
    # The multiple-choice matrix has no place in this questionnaire: its columns are listed as ignored.
    assert any("ignored" in note and "ID379[ID384]" in note for note in report["notes"])


def test_eusurvey_table_cells_keep_the_text_typed_in_them():
    """A table question's answers carry the text typed in each cell: it is kept per row and column, not replaced
    by the column's name."""
    from xml.etree import ElementTree

    from consult.ingest.tools import read_eusurvey_xml

    table, _ = read_eusurvey_xml(EUSURVEY_REAL)
    root = ElementTree.parse(EUSURVEY_REAL).getroot()
    short = {element.get("id"): (element.get("bid") or "").strip("[]") for element in root.find("Survey/Elements")}
    rows = {uid for uid, element in ((e.get("id"), e) for e in root.find("Survey/Elements"))
            if element.tag == "TableQuestion"}
    for number, answer_set in enumerate(root.find("Answers"), start=1):
        for answer in answer_set.findall("Answer"):
            if answer.get("qid") in rows:
                column = f"ID20[{short[answer.get('qid')]}][{short[answer.get('aid')]}]"
                assert table.loc[number, column] == (answer.text or ""), (number, column)
    assert table.loc[1, "ID20[ID387][ID22]"] == "a,row1"  # row 1, column A of the first contribution


def test_eusurvey_results_xml_keeps_its_matrix_as_rows(engine, settings, panel):
    """EUSurvey's results XML (constructed after its exporter): choices by short name, matrix rows as scale values."""
    year = open_tool_round(engine, settings, CONSTRUCTED / "eusurvey" / "questionnaire.yaml", 2024,
                           dt.date(2024, 12, 31))
    [summary] = ingest(settings, year, EUSURVEY_XML).files
    assert (summary.layout, summary.accepted, summary.quarantined) == ("eusurvey", 3, 0)
    accepted = responses_by_key(engine, "accepted")
    assert accepted["5e1f0c2a-1111-4a2b-9c3d-000000000001"].answers == {
        "satisfaction": "very", "usefulness[helpdesk]": 3, "usefulness[partner_search]": 2,
        "comment": "Very helpful & quick"}
    assert accepted["5e1f0c2a-1111-4a2b-9c3d-000000000002"].answers["usefulness[partner_search]"] == 1


# --- anonymous rounds -------------------------------------------------------------------------------------------


def test_anonymous_round_keeps_one_response_per_response_id(engine, settings, panel, tmp_path):
    """A later export of the same response (same id, later date) replaces it; other responses stay."""
    year = open_tool_round(engine, settings, REAL / "odk_central" / "questionnaire.yaml", 2019, dt.date(2019, 12, 31))
    ingest(settings, year, ODK)
    text = ODK.read_text(encoding="utf-8").splitlines()
    header, first = text[0], text[1]
    later = first.replace("2019-09-18T08:51:07.481Z", "2019-09-20T08:00:00.000Z").replace("Kensington Carpark 01",
                                                                                         "Kensington Carpark 02")
    again = tmp_path / "again.csv"
    again.write_text(header + "\n" + later + "\n", encoding="utf-8")
    ingest(settings, year, again)
    accepted = responses_by_key(engine, "accepted")
    assert len(accepted) == 2
    assert accepted["uuid:d5e78a78-34db-483d-978f-d9c9a3bc7b69"].answers["area_name"] == "Kensington Carpark 02"
    with session_scope(engine) as session:
        superseded = session.scalars(select(Response.response_key).where(Response.status == "superseded")).all()
    assert superseded == ["uuid:d5e78a78-34db-483d-978f-d9c9a3bc7b69"]


def test_anonymous_round_sends_no_per_partnership_reminders_and_says_so(engine, settings, panel):
    """Nobody can be told apart as not having answered: no reminder is due, and the report says why."""
    from consult.mail import outbox

    year = open_tool_round(engine, settings, REAL / "odk_central" / "questionnaire.yaml", 2019, dt.date(2019, 12, 31))
    assert outbox.reminder_sequence(engine, year, force=True, today=dt.date(2019, 12, 1)) is None
    report = outbox.report(engine, year=year, kind="reminder", sequence=None)
    assert "anonymous round" in str(report) and "no per-partnership reminders" in str(report)


def test_row_without_response_id_in_anonymous_round_is_quarantined(engine, settings, panel, tmp_path):
    """A response with no id cannot be told from the others: it is held back, saying so."""
    year = open_tool_round(engine, settings, REAL / "odk_central" / "questionnaire.yaml", 2019, dt.date(2019, 12, 31))
    lines = ODK.read_text(encoding="utf-8").splitlines()
    no_key = lines[1].replace(",uuid:d5e78a78-34db-483d-978f-d9c9a3bc7b69,241", ",,241")
    path = tmp_path / "nokey.csv"
    path.write_text("\n".join([lines[0], no_key, lines[2]]) + "\n", encoding="utf-8")
    [summary] = ingest(settings, year, path).files
    assert (summary.accepted, summary.quarantined) == (1, 1)
    with session_scope(engine) as session:
        [row] = session.scalars(select(QuarantinedRow)).all()
        assert "no response id" in row.reasons[0]["message"]


# --- refusals: one line naming the file and the reason --------------------------------------------------------------


def one_line_refusal(path: Path, questionnaire_path: Path) -> str:
    with pytest.raises(ConsultError) as raised:
        read_response_file(path, load_questionnaire(questionnaire_path))
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    return message


def test_refused_when_a_partnership_round_gets_an_anonymous_export():
    """A round matched by token gets a Qualtrics file: no column identifies a partnership, and the message says
    how to make the round anonymous."""
    message = one_line_refusal(QUALTRICS, Path("examples/escp4i/questionnaire-2019.yaml"))
    assert "no recognisable question column" in message or "match_by: [response_id]" in message


@pytest.mark.parametrize("path", [KOBO_MULTIPLE, EUSURVEY_REAL], ids=["kobo-select-multiple", "eusurvey-xml"])
def test_real_export_given_to_a_partnership_round_is_refused_in_one_line(path):
    """The reference round matches partnerships by token: an anonymous export has no question of it, and the one
    line says which file and why."""
    message = one_line_refusal(path, Path("examples/escp4i/questionnaire-2019.yaml"))
    assert "no recognisable question column" in message


def test_real_eusurvey_export_given_to_another_anonymous_round_names_its_questions(tmp_path):
    """An EUSurvey export read for a questionnaire none of whose codes it holds: refused, naming the codes
    expected and the first headings found."""
    message = one_line_refusal(EUSURVEY_REAL, CONSTRUCTED / "eusurvey" / "questionnaire.yaml")
    assert "expected some of satisfaction, usefulness" in message and "Contribution Id" in message


def test_refused_when_an_anonymous_round_gets_a_file_without_response_ids(tmp_path):
    path = tmp_path / "noid.csv"
    path.write_text("reporter,area_name\nAnna,North\n", encoding="utf-8")
    message = one_line_refusal(path, REAL / "odk_central" / "questionnaire.yaml")
    assert "anonymous" in message and "response id" in message


def test_refused_when_two_columns_read_as_one_question(tmp_path):
    """'Company name' and 'Company_name' compare equal once headings are normalised: neither shadows the other."""
    path = tmp_path / "collide.csv"
    path.write_text("_id,_uuid,_submission_time,Company_name,Company name\n1,u,2024-03-14T14:12:35,A,B\n")
    message = one_line_refusal(path, REAL / "kobo" / "questionnaire.yaml")
    assert "'Company_name'" in message and "'Company name'" in message


def test_repeated_heading_refuses_only_when_a_question_reads_it(tmp_path):
    questionnaire = load_questionnaire(REAL / "kobo" / "questionnaire.yaml")
    unused = tmp_path / "unused.csv"
    unused.write_text("_id,_uuid,_submission_time,Company_name,note,note\n1,u,2024-03-14T14:12:35,A,x,y\n")
    assert read_response_file(unused, questionnaire).cells.loc[2, "Company_name"] == "A"
    used = tmp_path / "used.csv"
    used.write_text("_id,_uuid,_submission_time,Company_name,Company_name\n1,u,2024-03-14T14:12:35,A,B\n")
    message = one_line_refusal(used, REAL / "kobo" / "questionnaire.yaml")
    assert "'Company_name' appears 2 times" in message


def test_refused_xml_with_entity_declarations(tmp_path):
    path = tmp_path / "bomb.xml"
    path.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa">]><Results><Answers/></Results>')
    message = one_line_refusal(path, CONSTRUCTED / "eusurvey" / "questionnaire.yaml")
    assert "entity declarations" in message


def test_refused_xml_that_is_not_eusurvey_results(tmp_path):
    path = tmp_path / "other.csv"  # the name does not decide: the content is XML
    path.write_text('<?xml version="1.0"?><rss><channel/></rss>')
    message = one_line_refusal(path, CONSTRUCTED / "eusurvey" / "questionnaire.yaml")
    assert "not EUSurvey results" in message


def test_placeholder_submit_date_is_quarantined_and_late_one_flagged(engine, settings, panel, tmp_path):
    """An anonymised 1980-01-01 submit date is an error (quarantine); one after the round closed a warning."""
    year = open_tool_round(engine, settings, REAL / "odk_central" / "questionnaire.yaml", 2019, dt.date(2019, 12, 31))
    lines = ODK.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "dates.csv"
    path.write_text("\n".join([lines[0], lines[1].replace("2019-09-18T08:51:07.481Z", "1980-01-01T00:00:00.000Z"),
                               lines[2].replace("2019-09-18T06:20:25.780Z", "2020-02-01T10:00:00.000Z")]) + "\n",
                    encoding="utf-8")
    [summary] = ingest(settings, year, path).files
    assert (summary.accepted, summary.quarantined, summary.warnings) == (1, 1, 1)
    with session_scope(engine) as session:
        [row] = session.scalars(select(QuarantinedRow)).all()
        assert row.reasons[0]["rule"] == "submit_date" and "1980-01-01" in row.reasons[0]["message"]
        assert "from 2000" in row.reasons[0]["message"]
        [response] = session.scalars(select(Response)).all()
        assert [w["rule"] for w in response.warnings] == ["submit_date_window"]
