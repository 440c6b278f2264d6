"""The questionnaire's optional ``indicators:`` section renames, hides, labels, unranks and adds indicators and
words the summary; a malformed one is refused in one line naming the file."""

from __future__ import annotations

import pandas as pd
import pytest

from consult.errors import ConsultError
from consult.indicators import report_from_data, round_data_from_frame
from consult.narrative import build_narrative
from consult.publish import indicators_csv, summary_context
from consult.questionnaire import parse_questionnaire

QUESTIONS = [
    {"code": "services", "kind": "multi_select", "label": "Services used",
     "options": ["helpdesk", "calls", "search"]},
    {"code": "staff", "kind": "integer", "label": "Staff", "min": 0},
    {"code": "happy", "kind": "scale", "label": "Satisfaction", "min": 1, "max": 5,
     "labels": {1: "Poor", 5: "Excellent"}},
]
ANSWERS = [
    {"services": ["helpdesk", "calls"], "staff": 3, "happy": 5},
    {"services": ["search"], "staff": 1, "happy": 4},
    {"services": ["helpdesk"], "staff": None, "happy": 5},
]
PARTICIPANTS = pd.DataFrame({"partnership_id": [1, 2, 3, 4], "size": ["large", "small", "small", "large"]})


def _report(indicators: dict | None = None, **extra: object):  # type: ignore[no-untyped-def]
    definition = {"code": "s", "version": 1, "title": "S", "breakdown_by": ["size"],
                  "respondent": {"singular": "cluster", "plural": "clusters"}, "questions": QUESTIONS, **extra}
    if indicators is not None:
        definition["indicators"] = indicators
    questionnaire = parse_questionnaire(definition, source="s.yaml")
    data = round_data_from_frame(2030, questionnaire, PARTICIPANTS, [1, 2, 3], pd.DataFrame(ANSWERS))
    return report_from_data(data, None)


def _csv_rows(report) -> dict[tuple[str, str], str]:  # type: ignore[no-untyped-def]
    lines = indicators_csv(report).splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    return {(row["indicator"], row["dimension"]): row["value"] for row in rows}


def test_defaults_are_named_after_the_question_codes():
    rows = _csv_rows(_report())
    assert rows[("services", "option=helpdesk")] == "2"
    assert rows[("services", "option=helpdesk;size=large")] == "1"
    assert rows[("staff_sum", "")] == "4" and rows[("staff_mean", "size=small")] == "1"
    assert rows[("happy", "option=5")] == "2" and rows[("happy_mean", "")] == "4.6667"


def test_rename_hide_label_unrank_and_add_change_the_published_table():
    report = _report({
        "rename": {"staff_sum": "staff_total"},
        "hide": ["services_selections"],
        "labels": {"staff_total": "Staff in all"},
        "unranked": ["services"],
        "add": [{"name": "funding", "question": "services", "any_of": ["helpdesk", "calls"],
                 "label": "Clusters using funding support"}],
    })
    rows = _csv_rows(report)
    assert ("staff_sum", "") not in rows and rows[("staff_total", "")] == "4"
    assert not any(name == "services_selections" for name, _ in rows)
    assert rows[("funding", "")] == "2" and rows[("funding_share", "")] == "66.6667"
    assert rows[("funding", "size=small")] == "1"
    assert report.row("services", "option=helpdesk")["rank"] is pd.NA
    overview = summary_context(report).tables[0]
    assert "Staff in all" in [row[0].text for row in overview.rows]


def test_wording_names_respondents_and_units_and_groups():
    report = _report({"wording": {"staff": {"unit": "staff member", "title": "People"},
                                  "services": {"noun": "service"}}})
    paragraphs = {p.title: p.text for p in build_narrative(report)}
    assert paragraphs["Participation"].startswith("The 4 clusters of the panel were consulted and 3 responses")
    assert "(3 of 4): 1 of the 2 large clusters and all 2 small clusters responded." in paragraphs["Participation"]
    assert "Helpdesk is the most selected service (2 clusters)" in paragraphs["Services used"]
    assert "4 staff members in all from the 2 clusters that answered" in paragraphs["People"]
    assert "5 - Excellent: 2 of 3 (66.7%)" in paragraphs["Satisfaction"]


@pytest.mark.parametrize(
    ("indicators", "message"),
    [
        ({"wording": {"nope": {"noun": "x"}}}, "'nope' is not a question"),
        ({"add": [{"name": "x", "question": "staff", "any_of": ["a"]}]}, "'staff' is not a select question"),
        ({"add": [{"name": "x", "question": "services", "any_of": ["zz"]}]}, "unknown option(s) zz"),
        ({"rename": {"staff_sum": "t", "staff_mean": "t"}}, "renamed to the same name"),
        ({"breakdown_labels": {"size": "Size"}}, "must contain {value}"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_a_malformed_indicators_section_is_one_line_naming_the_file(indicators, message):
    with pytest.raises(ConsultError) as raised:
        _report(indicators)
    assert str(raised.value).startswith("s.yaml: ") and message in str(raised.value)
    assert "\n" not in str(raised.value)
