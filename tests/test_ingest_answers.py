"""How answers as tools write them become typed answers: yes/no in seven languages, "not applicable", full-text and
Italian LimeSurvey headings, KoBo select_multiple, Qualtrics unfinished responses, option comments, submit dates.

The small files here are written inline (each says which tool layout it follows): the real exports in
tests/data/real exercise the same paths end to end (tests/test_ingest_tools.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from consult.errors import ConsultError
from consult.ingest.normalise import answers_json, normalise
from consult.ingest.pipeline import RoundWindow, check_submit_dates
from consult.ingest.readers import read_response_file
from consult.questionnaire import parse_questionnaire


def questionnaire(*questions: dict, **extra) -> object:
    return parse_questionnaire({"code": "t", "version": 1, "title": "T", "match_by": ["response_id"],
                                "questions": list(questions), **extra}, source="test")


def read(tmp_path: Path, text: str, q, name: str = "export.csv"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return read_response_file(path, q)


def typed_answers(read_file, q) -> list[dict]:
    import json

    return [json.loads(text) for text in answers_json(normalise(read_file.cells, q).typed, q)]


@pytest.mark.parametrize(("written", "meant"), [
    ("Sì", True), ("si", True), ("Oui", True), ("Ja", True), ("Sí", True), ("SÍ", True), ("Sim", True),
    ("Yes", True), ("Nee", False), ("Non", False), ("Nein", False), ("Não", False), ("nao", False),
    ("No", False), ("0", False), ("1", True),
])
def test_yes_no_words_of_seven_languages_with_accents(tmp_path, written, meant):
    q = questionnaire({"code": "plans", "kind": "yes_no", "label": "Plans?"})
    [answers] = typed_answers(read(tmp_path, f"id,submitdate,plans\n1,2024-01-02 10:00:00,{written}\n", q), q)
    assert answers["plans"] is meant


def test_not_applicable_values_are_missing_not_answers(tmp_path):
    """The questionnaire's not_applicable values (and LimeSurvey's N/A) mean "not asked"."""
    q = questionnaire({"code": "size", "kind": "single_select", "label": "Size", "options": ["small", "large"],
                       "not_applicable": ["Does not apply"]}, not_applicable=["n.a."])
    text = "id,submitdate,size\n1,2024-01-02,small\n2,2024-01-02,Does not apply\n3,2024-01-02,N.A.\n4,2024-01-02,N/A\n"
    read_file = read(tmp_path, text, q)
    assert [a["size"] for a in typed_answers(read_file, q)] == ["small", None, None, None]
    assert any("3 answer(s) marked not shown / not applicable" in note for note in read_file.notes)


MATRIX_Q = {
    "code": "Q07", "kind": "matrix", "label": "How far do you agree?",
    "rows": [{"code": "SQ001", "label": "The helpdesk helps"}, {"code": "SQ002", "label": "Partner search works"}],
    "min": 1, "max": 5, "labels": {1: "Not at all", 5: "A great extent"},
}
OTHER_Q = {"code": "Q08", "kind": "multi_select", "label": "Which services?", "other": True,
           "options": [{"code": "A1", "label": "Helpdesk", "comment": True}, {"code": "A2", "label": "Matchmaking"}]}


def test_limesurvey_code_headings_matrix_other_and_comment(tmp_path):
    """Q07[SQ001] is a matrix row (its '1 - Not at all' read as 1), Q08[other] the other text beside the choice,
    Q08[A1comment] the comment of option A1: none of them is taken as an option."""
    q = questionnaire(MATRIX_Q, OTHER_Q)
    text = ("id,submitdate,Q07[SQ001],Q07[SQ002],Q08[A1],Q08[A1comment],Q08[A2],Q08[other]\n"
            "7,2024-01-02 10:00:00,1 - Not at all,5 - A great extent,Y,fast answers,,clusters fair\n"
            "8,2024-01-02 11:00:00,3,N/A,,,Y,\n")
    first, second = typed_answers(read(tmp_path, text, q), q)
    assert first == {"Q07[SQ001]": 1, "Q07[SQ002]": 5, "Q08": ["A1", "other"], "Q08[other]": "clusters fair",
                     "Q08[A1comment]": "fast answers"}
    assert second == {"Q07[SQ001]": 3, "Q07[SQ002]": None, "Q08": ["A2"], "Q08[other]": None,
                      "Q08[A1comment]": None}


def test_limesurvey_full_text_headings_in_italian(tmp_path):
    """LimeSurvey's full-text headings (Italian metadata: 'ID risposta', 'Data invio'): questions, matrix rows and
    options are found by their texts; an empty 'Data invio' is an incomplete response."""
    q = questionnaire(MATRIX_Q, OTHER_Q)
    text = ('"ID risposta","Data invio","Ultima pagina","Lingua iniziale","How far do you agree? [The helpdesk helps]",'
            '"How far do you agree? [Partner search works]","Which services? [Helpdesk]","Which services? [Matchmaking]",'
            '"Which services? [Other]"\n'
            '"31","2024-02-01 09:00:00","3","it","4","2","Sì","","altro"\n'
            '"32","","1","it","5","","","Sì",""\n')
    read_file = read(tmp_path, text, q)
    assert read_file.recognised["tool"] == "limesurvey"
    assert read_file.recognised["heading_style"] == "full text"
    assert read_file.recognised["completeness_column"] == "Data invio"
    assert read_file.cells["complete"].tolist() == [True, False]
    assert read_file.cells["response_id"].tolist() == ["31", "32"]
    first, _ = typed_answers(read_file, q)
    assert first == {"Q07[SQ001]": 4, "Q07[SQ002]": 2, "Q08": ["A1", "other"], "Q08[other]": "altro",
                     "Q08[A1comment]": None}


def test_kobo_select_multiple_is_space_separated_and_other_text_kept_beside(tmp_path):
    """KoBo: 'a b' is two choices; 'services/other' is the choice flag and 'services_other' the text: they do not
    collide, and the text is not an option."""
    q = questionnaire({"code": "services", "kind": "multi_select", "label": "Services", "other": True,
                       "options": ["helpdesk", "matchmaking"]})
    text = ("start,group_a/services,group_a/services/helpdesk,group_a/services/matchmaking,group_a/services/other,"
            "group_a/services_other,_id,_uuid,_submission_time\n"
            "2024-01-01,helpdesk other,1,0,1,trade fairs,101,u1,2024-01-02T10:00:00\n"
            "2024-01-01,matchmaking helpdesk,1,1,0,,102,u2,2024-01-02T11:00:00\n")
    read_file = read(tmp_path, text, q)
    assert read_file.recognised["tool"] == "kobo"
    first, second = typed_answers(read_file, q)
    assert first == {"services": ["helpdesk", "other"], "services[other]": "trade fairs"}
    assert second == {"services": ["matchmaking", "helpdesk"], "services[other]": None}


def test_qualtrics_unfinished_response_is_partial(tmp_path):
    """Finished=0 (Progress < 100) is an incomplete response, whatever its RecordedDate."""
    q = questionnaire({"code": "Q1", "kind": "text", "label": "Why?"})
    text = ("StartDate,EndDate,Progress,Finished,RecordedDate,ResponseId,Q1\n"
            "Start Date,End Date,Progress,Finished,Recorded Date,Response ID,Why?\n"
            '"{""ImportId"":""startDate""}","{""ImportId"":""endDate""}","{""ImportId"":""progress""}",'
            '"{""ImportId"":""finished""}","{""ImportId"":""recordedDate""}","{""ImportId"":""_recordId""}",'
            '"{""ImportId"":""QID1""}"\n'
            "2024-01-01,2024-01-01,100,1,2024-01-01 10:00:00,R_1,because\n"
            "2024-01-01,2024-01-01,40,0,2024-01-08 10:00:00,R_2,\n")
    read_file = read(tmp_path, text, q)
    assert read_file.row_count == 2 and list(read_file.cells.index) == [4, 5]
    assert read_file.cells["complete"].tolist() == [True, False]


def test_submit_dates_outside_the_round_are_warnings():
    cells = pd.DataFrame({"submitted_at": ["2024-01-15", "2024-03-01", "2024-09-01", "2024-04-30 23:00"]},
                         index=pd.Index([2, 3, 4, 5], name="row_number"))
    dates = pd.to_datetime(cells["submitted_at"], format="ISO8601").dt.tz_localize("UTC")
    window = RoundWindow(opened=dt.datetime(2024, 2, 1, tzinfo=dt.UTC), closes_on=dt.date(2024, 4, 30), year=2024)
    warnings = check_submit_dates(dates, cells, window)
    assert list(warnings) == [2, 4] and "outside round 2024" in warnings[4][0]["message"]


@pytest.mark.parametrize(("question", "complaint"), [
    ({"code": "m", "kind": "matrix", "label": "M", "options": ["a"]}, "needs rows"),
    ({"code": "m", "kind": "matrix", "label": "M", "rows": ["r"]}, "either options or a min..max scale"),
    ({"code": "t", "kind": "text", "label": "T", "other": True}, "only select questions take other"),
    ({"code": "q[1]", "kind": "text", "label": "T"}, "brackets are reserved"),
])
def test_questionnaire_refuses_malformed_matrix_and_other(question, complaint):
    with pytest.raises(ConsultError, match=complaint):
        questionnaire(question)


def test_limesurvey_xlsx_in_italian_is_recognised_by_content_not_name(tmp_path):
    """A LimeSurvey XLSX export (saved under a .csv name by mistake) with Italian full-text metadata headings."""
    import openpyxl

    q = questionnaire({"code": "piani", "kind": "yes_no", "label": "Missioni previste?"}, MATRIX_Q)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["ID risposta", "Data invio", "Ultima pagina", "Lingua iniziale", "Missioni previste?",
                  "How far do you agree? [The helpdesk helps]"])
    sheet.append([5, "2024-03-01 12:00:00", 2, "it", "Sì", "5 - A great extent"])
    sheet.append([6, None, 1, "it", "No", None])
    path = tmp_path / "risposte.csv"
    book.save(path)
    read_file = read_response_file(path, q)
    assert (read_file.file_format, read_file.recognised["tool"]) == ("xlsx", "limesurvey")
    assert read_file.cells["complete"].tolist() == [True, False]
    first, second = typed_answers(read_file, q)
    assert first == {"piani": True, "Q07[SQ001]": 5, "Q07[SQ002]": None}
    assert second["piani"] is False


QUALTRICS_HEAD = ("StartDate,Progress,Finished,RecordedDate,ResponseId,Q5,Q5_4_TEXT\n"
                  "Start Date,Progress,Finished,Recorded Date,Response ID,Which?,Which? - Other - Text\n"
                  '"{""ImportId"":""startDate""}","{""ImportId"":""progress""}","{""ImportId"":""finished""}",'
                  '"{""ImportId"":""recordedDate""}","{""ImportId"":""_recordId""}","{""ImportId"":""QID5""}",'
                  '"{""ImportId"":""QID5_4_TEXT""}"\n')


def test_qualtrics_multiple_answer_and_other_text(tmp_path):
    """Qualtrics writes a multiple answer as '1,3' and the text beside choice 4 in Q5_4_TEXT."""
    q = questionnaire({"code": "Q5", "kind": "multi_select", "label": "Which?", "other": True,
                       "options": ["1", "2", "3"]})
    text = QUALTRICS_HEAD + "2024-01-01,100,1,2024-01-01 10:00:00,R_1,\"1,3\",\n" \
                            "2024-01-01,100,1,2024-01-01 11:00:00,R_2,\"2,other\",fairs\n"
    first, second = typed_answers(read(tmp_path, text, q), q)
    assert first == {"Q5": ["1", "3"], "Q5[other]": None}
    assert second == {"Q5": ["2", "other"], "Q5[other]": "fairs"}


def test_odk_select_multiple_split_columns_alone_or_beside_the_whole_answer(tmp_path):
    """ODK Central's splitSelectMultiples columns (q1/a = 1 or 0) are read when the whole answer is absent, and
    set aside (noted) when it is present."""
    q = questionnaire({"code": "q1", "kind": "multi_select", "label": "Q1", "options": ["a", "b"]})
    split_only = "SubmissionDate,meta-instanceID,g1-q1/a,g1-q1/b,KEY\n2024-01-01T10:00:00Z,k1,1,1,k1\n"
    [answers] = typed_answers(read(tmp_path, split_only, q, "split.csv"), q)
    assert answers == {"q1": ["a", "b"]}
    both = "SubmissionDate,meta-instanceID,g1-q1,g1-q1/a,g1-q1/b,KEY\n2024-01-01T10:00:00Z,k1,b,0,1,k1\n"
    read_file = read(tmp_path, both, q, "both.csv")
    assert typed_answers(read_file, q) == [{"q1": ["b"]}]
    assert any("per-choice column(s) ignored" in note for note in read_file.notes)
