"""The form's rendering of a question kind that the questionnaire model may add: ``scale`` (min..max with
labels), coded against the model API agreed for it (``Question.kind == "scale"``, integer ``min``/``max``,
``labels: dict[int, str] | None``)."""

from __future__ import annotations

import re
from types import SimpleNamespace

from consult.form.app import FORM_TEMPLATES_DIR, _environment, field_views, strings


def scale_question(**overrides: object) -> SimpleNamespace:
    values = {"code": "satisfaction", "kind": "scale", "label": "How satisfied are you with the helpdesk?",
              "required": True, "min": 1, "max": 5, "labels": {1: "Not at all", 5: "Completely"}, "options": None,
              "max_length": None, "is_select": False}
    values.update(overrides)
    return SimpleNamespace(**values)


def render(question: SimpleNamespace, cells: dict[str, str], errors: dict[str, list[dict[str, str]]]) -> str:
    words = strings("en")
    questionnaire = SimpleNamespace(title="Helpdesk survey", questions=[question])
    fields = field_views(questionnaire, cells, errors, words)  # type: ignore[arg-type]
    participant = SimpleNamespace(partnership_name="A cluster", closes_on=__import__("datetime").date(2030, 1, 1))
    previous = SimpleNamespace(draft_saved_at=None, accepted_at=None)
    error_list = [(v.question.code, v.question.label, m) for v in fields for m in v.errors]
    return _environment(FORM_TEMPLATES_DIR).get_template("form.html.j2").render(
        t=words, lang="en", participant=participant, questionnaire=questionnaire, fields=fields,
        error_list=error_list, csrf_field="csrf_token", csrf_value="x", notice=None, previous=previous,
        top_error=None)


def test_a_scale_is_a_radio_group_from_min_to_max_with_its_labels_in_a_fieldset():
    html = render(scale_question(), {"satisfaction": "4"}, {})
    block = html.split('id="field-satisfaction"', 1)[1].split("</fieldset>", 1)[0]
    assert "<legend>How satisfied are you with the helpdesk?" in block and 'class="req"' in block
    radios = re.findall(r'<input type="radio" id="([^"]+)" name="satisfaction" value="(\d+)"( checked)?>', block)
    assert [int(value) for _, value, _ in radios] == [1, 2, 3, 4, 5]
    assert [value for _, value, checked in radios if checked] == ["4"]
    assert all(f'<label class="choice" for="{input_id}">' in block for input_id, _, _ in radios)
    assert "1 – Not at all" in block and "5 – Completely" in block and "A whole number from 1 to 5." in block


def test_a_scale_answer_out_of_range_is_shown_beside_the_scale():
    html = render(scale_question(labels=None), {"satisfaction": "9"},
                  {"satisfaction": [{"rule": "range", "value": "9", "message": "satisfaction: 9 is outside 1..5"}]})
    block = html.split('id="field-satisfaction"', 1)[1].split("</fieldset>", 1)[0]
    assert '<p class="error" id="error-satisfaction">Enter a value from 1 to 5.</p>' in block
    assert 'href="#field-satisfaction"' in html.split('id="error-summary"', 1)[1]
