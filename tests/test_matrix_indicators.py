"""Indicators and the summary of a matrix question: each row counted like the select or scale question it is,
and one small table per matrix. Computed from the real LimeSurvey export (r0bis/efptPWG, data/Albania/Albania.csv,
commit de19c72ffdc0675b0eecddb0e9df5f216b9955ad) with the csv module, never from the code under test."""

from __future__ import annotations

import csv
import datetime as dt
import statistics
from collections import Counter
from pathlib import Path

import pytest

from consult.indicators import compute_report
from consult.publish import matrix_table
from db.engine import session_scope
from tests.test_ingest_tools import LIMESURVEY, REAL, ingest, open_tool_round

AGREEMENT = {"Strongly Disagree": 1, "Disagree": 2, "Neutral": 3, "Agree": 4, "Strongly Agree": 5}
WHO_PAYS = {"I pay": "A1", "State / 3rd party pays": "A2", "I don't have it": "A3"}


def complete_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["Completed"].strip()]


def overall_counts(report, code: str, key=lambda key: key) -> dict:  # type: ignore[no-untyped-def]
    """The published count per answer of ``code`` over all respondents (no breakdown group)."""
    found = report.stat_rows(code, "count")
    found = found[found["group"] == ""]
    return {key(k): float(v) for k, v in zip(found["key"], found["value"], strict=True)}


def limesurvey_report(engine, settings):  # type: ignore[no-untyped-def]
    """The real LimeSurvey export ingested into its anonymous 2013 round, and that round's indicators."""
    year = open_tool_round(engine, settings, REAL / "limesurvey" / "questionnaire.yaml", 2013, dt.date(2013, 12, 31))
    ingest(settings, year, LIMESURVEY)
    with session_scope(engine) as session:
        return compute_report(session, year)


@pytest.mark.slow
def test_matrix_rows_are_published_like_scale_and_select_questions(engine, settings, panel):
    report = limesurvey_report(engine, settings)
    rows = complete_rows(LIMESURVEY)
    for sub in ("SQ001", "SQ002", "SQ003"):
        values = [AGREEMENT[row[f"0019 [{sub}]"]] for row in rows if row[f"0019 [{sub}]"] in AGREEMENT]
        counts = Counter(values)
        assert overall_counts(report, f"0019[{sub}]", str) == {
            str(value): float(counts.get(value, 0)) for value in range(1, 6)}
        assert float(report.stat_row(f"0019[{sub}]", "mean")["value"]) == statistics.mean(values)
    for sub in ("SQ001", "SQ002", "SQ003", "SQ004", "SQ005", "SQ006"):
        counts = Counter(WHO_PAYS[row[f"0016 [{sub}]"]] for row in rows if row[f"0016 [{sub}]"] in WHO_PAYS)
        assert overall_counts(report, f"0016[{sub}]") == {
            code: float(counts.get(code, 0)) for code in ("A1", "A2", "A3")}


@pytest.mark.slow
def test_summary_shows_a_small_table_per_matrix(engine, settings, panel):
    report = limesurvey_report(engine, settings)
    rows = complete_rows(LIMESURVEY)
    table = matrix_table(report, report.questionnaire.question("0016"))
    assert [cell.text for cell in table.columns][1:5] == ["I pay", "State / 3rd party pays", "I don't have it",
                                                          "Answering"]
    first = table.rows[0]
    answering = sum(row["0016 [SQ001]"] in WHO_PAYS for row in rows)
    paying = sum(row["0016 [SQ001]"] == "I pay" for row in rows)
    assert first[0].text == "Theorectical lectures / seminars"
    assert first[1].text.startswith(f"{paying} (") and first[4].text == str(answering)


@pytest.mark.slow
def test_summary_of_an_anonymous_round_with_matrices_renders(engine, settings, panel):
    """The whole summary (HTML and Markdown) renders for an anonymous round with matrix questions, the matrix
    table in it."""
    from consult.publish import render_files

    report = limesurvey_report(engine, settings)
    files = render_files(report)
    html = next(text for name, text in files.items() if name.endswith(".html"))
    assert 'id="matrix-0016"' in html or "matrix-0016" in html
    assert "State / 3rd party pays" in html
    responses = report.stat_row(None, "responses")
    assert float(responses["value"]) == len(complete_rows(LIMESURVEY))


@pytest.mark.slow
def test_anonymous_free_text_answers_are_quoted(engine, settings, panel):
    report = limesurvey_report(engine, settings)
    expected = {row["0006"].strip() for row in complete_rows(LIMESURVEY) if row["0006"].strip()}
    assert {story.text for story in report.stories if story.question == "0006"} == expected


def test_response_form_asks_each_matrix_row_and_the_other_text():
    """The response form shows a matrix as one radio group per row and the other text as its own field; what
    it posts becomes the cells a file row would hold."""
    from consult.form.app import field_views, options_of, strings
    from consult.form.submissions import cells_from_fields
    from consult.questionnaire import load_questionnaire

    questionnaire = load_questionnaire(REAL / "limesurvey" / "questionnaire.yaml")
    views = {view.question.code: view for view in field_views(questionnaire, {}, {}, strings("en"))}
    assert [value for value, _ in options_of(views["0019[SQ001]"].question)] == ["1", "2", "3", "4", "5"]
    assert views["0016[SQ002]"].question.kind == "single_select" and "0005[other]" in views
    cells = cells_from_fields(questionnaire, {"0019[SQ001]": ["4"], "0005": ["S05A1"], "0005[other]": ["Gestalt"]})
    assert (cells["0019[SQ001]"], cells["0005"], cells["0005[other]"]) == ("4", "S05A1", "Gestalt")


def test_real_eusurvey_matrix_and_rating_rows_are_published(engine, settings, panel):
    """The real EUSurvey results (hades646/EUSurveyQlikConnectorDocs, doc/survey-test-qlik/result.xml, commit
    71b4561aa425ae58c47acb47ee9d126c570a3001): the single-choice matrix is counted row by row over its answers,
    the rating question's items as 1..7 scales (count per star and mean), each read here with ElementTree."""
    from tests.test_ingest_tools import EUSURVEY_REAL, eusurvey_answer_sets

    year = open_tool_round(engine, settings, REAL / "eusurvey" / "questionnaire.yaml", 2021, dt.date(2021, 12, 31))
    ingest(settings, year, EUSURVEY_REAL)
    with session_scope(engine) as session:
        report = compute_report(session, year)
    sets = eusurvey_answer_sets(EUSURVEY_REAL)
    for row in ("ID17", "ID18", "ID19"):
        counts = Counter(found[row][0] for found in sets if row in found)
        assert overall_counts(report, f"ID12[{row}]") == {
            code: float(counts.get(code, 0)) for code in ("ID14", "ID15", "ID16")}
    for row in ("ID390", "ID391"):
        stars = [int(found[row][0].split("/")[0]) for found in sets if row in found]
        counts = Counter(stars)
        assert overall_counts(report, f"ID34[{row}]", str) == {
            str(value): float(counts.get(value, 0)) for value in range(1, 8)}
        assert float(report.stat_row(f"ID34[{row}]", "mean")["value"]) == statistics.mean(stars)
    table = matrix_table(report, report.questionnaire.question("ID12"))
    assert [cell.text for cell in table.columns][1:5] == ["Answer 1", "Answer 2", "Answer 3", "Answering"]
    assert table.rows[1][4].text == str(sum("ID18" in found for found in sets))
