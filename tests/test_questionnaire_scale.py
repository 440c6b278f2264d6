"""Rating scales, breakdown attributes and the respondents' name are declared in the questionnaire; scale answers
are read as a plain number, LimeSurvey's full text (``5 - A great extent``) or the label, and checked by the
generated expectation suite."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from consult.errors import ConsultError
from consult.ingest.matching import Directory, match_partnerships
from consult.ingest.normalise import answers_json, normalise
from consult.ingest.validation import build_suite, validate
from consult.questionnaire import load_questionnaire, parse_questionnaire
from tests.factories import EXAMPLES

SCALE = {"code": "satisfaction", "kind": "scale", "label": "How satisfied are you?", "min": 1, "max": 5,
         "labels": {1: "Very dissatisfied", 3: "Neutral", 5: "A great extent"}}


def _questionnaire(*questions: dict, **extra: object):
    return parse_questionnaire({"code": "demo", "version": 1, "title": "Demo", "match_by": ["partnership_id"],
                                "questions": list(questions), **extra}, source="demo.yaml")


def test_a_scale_question_has_its_values_and_labels():
    question = _questionnaire(SCALE).question("satisfaction")
    assert question.scale_values == [1, 2, 3, 4, 5]
    assert question.scale_label(5) == "5 - A great extent"
    assert question.scale_label(4) == "4"


def test_breakdown_and_respondent_default_to_none_and_partnerships():
    questionnaire = load_questionnaire(EXAMPLES / "questionnaire-2019.yaml")
    assert (questionnaire.respondent.singular, questionnaire.respondent.plural) == ("partnership", "partnerships")
    declared = _questionnaire(SCALE, breakdown_by=["sector", "country"],
                              respondent={"singular": "cluster", "plural": "clusters"})
    assert declared.breakdown_by == ["sector", "country"]
    assert declared.respondent.plural == "clusters"


def test_a_questionnaire_without_the_new_sections_keeps_its_content_hash():
    """Rounds stored before scales and breakdowns existed still match their questionnaire file."""
    plain = _questionnaire({"code": "a", "kind": "integer", "label": "A"})
    assert "breakdown_by" not in plain.to_yaml() and "respondent" not in plain.to_yaml()
    assert "breakdown_by" in _questionnaire({"code": "a", "kind": "integer", "label": "A"},
                                            breakdown_by=["sector"]).to_yaml()


def test_a_scale_stored_as_json_reads_back_the_same():
    questionnaire = _questionnaire(SCALE, breakdown_by=["sector"])
    again = parse_questionnaire(json.loads(json.dumps(questionnaire.definition())), source="stored")
    assert again == questionnaire and again.question("satisfaction").labels[5] == "A great extent"


@pytest.mark.parametrize(
    ("question", "message"),
    [
        ({"code": "s", "kind": "scale", "label": "S", "max": 5}, "a scale question needs a whole-number min"),
        ({"code": "s", "kind": "scale", "label": "S", "min": 1, "max": 4.5}, "a scale question needs a whole-number max"),
        ({"code": "s", "kind": "scale", "label": "S", "min": 5, "max": 1}, "a scale's min (5) must be below its max (1)"),
        ({"code": "s", "kind": "scale", "label": "S", "min": 1, "max": 5, "labels": {7: "Seven"}},
         "label for 7 is outside the scale 1..5"),
        ({"code": "s", "kind": "scale", "label": "S", "min": 1, "max": 5, "labels": {"high": "High"}},
         "labels.high"),
        ({"code": "s", "kind": "integer", "label": "S", "labels": {1: "One"}}, "only scale questions take labels"),
        ({"code": "s", "kind": "scale", "label": "S", "min": 1, "max": 5, "options": ["a"]},
         "only select questions take options"),
    ],
)
def test_a_malformed_scale_is_refused_in_one_line_naming_the_file(question, message):
    with pytest.raises(ConsultError) as raised:
        _questionnaire(question)
    assert str(raised.value).startswith("demo.yaml: ")
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize(
    ("extra", "message"),
    [({"breakdown_by": ["Sector Name"]}, "is not a panel column name"),
     ({"breakdown_by": ["sector", "sector"]}, "named twice"),
     ({"respondent": {"singular": "", "plural": "clusters"}}, "one non-empty line")],
)
def test_a_malformed_breakdown_or_respondent_is_refused(extra, message):
    with pytest.raises(ConsultError, match=message):
        _questionnaire(SCALE, **extra)


def test_scale_answers_are_read_as_number_full_text_or_label_and_checked_against_the_scale():
    questionnaire = _questionnaire(SCALE)
    rows = ["4", "5 - A great extent", "a great extent", " 3.0 ", "7", "great", "", "1 – Very dissatisfied", "3.5"]
    index = pd.Index(range(2, 2 + len(rows)), name="row_number")
    cells = pd.DataFrame({"token": "", "partnership_id": [f"P-{i}" for i in range(len(rows))], "email": "",
                          "submitted_at": "2024-01-01", "complete": True, "satisfaction": rows}, index=index)
    typed = normalise(cells, questionnaire).typed
    assert typed["satisfaction"].astype(object).where(typed["satisfaction"].notna(), None).tolist() == [
        "4", "5", "5", "3", "7", "great", None, "1", "3.5"]
    assert typed["satisfaction__num"].tolist()[:5] == [4.0, 5.0, 5.0, 3.0, 7.0]
    directory = Directory(round_id=1, year=2030, token_hashes={}, other_round_tokens={},
                          codes={f"P-{i}": i + 1 for i in range(len(rows))}, emails={}, not_consulted=frozenset())
    match = match_partnerships(cells, directory, ["partnership_id"])
    result = validate(typed, cells, match, questionnaire, build_suite(questionnaire), limits=pd.DataFrame(),
                      has_submit_date=True, asset_name="demo")
    assert sorted(result.errors) == [6, 7, 10]
    assert [r["message"] for r in result.errors[6]] == ["satisfaction: 7 is outside 1..5"]
    assert [r["message"] for r in result.errors[7]] == [
        "satisfaction: 'great' is not a value of the scale (a whole number or one of its labels)"]
    answers = [json.loads(text)["satisfaction"] for text in answers_json(typed, questionnaire)]
    assert [r["message"] for r in result.errors[10]] == [
        "satisfaction: '3.5' is not a value of the scale (a whole number or one of its labels)"]
    assert answers == [4, 5, 5, 3, 7, None, None, 1, None]
