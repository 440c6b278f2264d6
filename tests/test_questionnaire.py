"""Questionnaires are data files; a malformed one is refused with the file and the field named."""

from __future__ import annotations

import pytest

from consult.errors import ConsultError
from consult.questionnaire import country_name, load_questionnaire
from tests.conftest import EXAMPLES


def test_the_reference_questionnaire_has_the_codes_of_the_domain():
    questionnaire = load_questionnaire(EXAMPLES / "questionnaire-2019.yaml")
    assert questionnaire.codes == [
        "markets", "sme_involvement", "cooperation_agreements", "business_missions_planned", "sme_members",
        "success_story",
    ]
    assert "US" in questionnaire.question("markets").option_codes
    assert questionnaire.question("sme_involvement").option_codes == {
        "business_contacts", "knowledge_sharing", "joint_events", "exports_imports", "soft_landing", "other"}


def test_the_2020_questionnaire_declares_the_renamed_option():
    question = load_questionnaire(EXAMPLES / "questionnaire-2020.yaml").question("sme_involvement")
    assert question.previous_option_code("joint_business_events") == "joint_events"
    assert question.previous_option_code("knowledge_sharing") == "knowledge_sharing"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("code: x\nversion: 1\ntitle: t\nquestions: []\n", "questions: List should have at least 1 item"),
        ("code: x\nversion: 1\ntitle: t\nquestions:\n  - {code: a, kind: multi_select, label: A}\n",
         "a multi_select question needs options"),
        (("code: x\nversion: 1\ntitle: t\nquestions:\n  - {code: a, kind: integer, label: A}\n"
         "  - {code: a, kind: text, label: B}\n"), "question code 'a' appears twice"),
        ("code: [unclosed\n", "not a readable YAML file"),
        ("- just a list\n", "must be a mapping"),
    ],
)
def test_a_malformed_questionnaire_names_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "q.yaml"
    path.write_text(text)
    with pytest.raises(ConsultError) as raised:
        load_questionnaire(path)
    assert str(raised.value).startswith(str(path))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_country_names_follow_the_eccp_wording():
    assert country_name("US") == "United States of America"
    assert country_name("KR") == "Republic of Korea"
    assert country_name("ZA") == "South Africa"
