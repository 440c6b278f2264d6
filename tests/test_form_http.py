"""The response form over HTTP (FastAPI's TestClient on the real app, real database on SQLite and PostgreSQL).

Expected values come from the questionnaire YAML and the panel CSV read here with yaml/csv, and from the
database read with plain SQL, never from the form's own code.
"""

from __future__ import annotations

import csv
import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import text

from consult.form.app import create_app
from consult.settings import Settings
from consult.tokens import derive_token
from db.engine import session_scope
from tests.conftest import EXAMPLES
from tests.factories import add_responses

QUESTIONNAIRE = yaml.safe_load((EXAMPLES / "questionnaire-2019.yaml").read_text(encoding="utf-8"))
PANEL = list(csv.DictReader((EXAMPLES / "panel.csv").open(encoding="utf-8", newline="")))
ENGLISH = next(row["partnership_id"] for row in PANEL if row["language"] == "en")
FRENCH = next(row["partnership_id"] for row in PANEL if row["language"] == "fr")

GOOD = {
    "markets": ["US", "JP"],
    "sme_involvement": ["knowledge_sharing", "joint_events"],
    "cooperation_agreements": "4",
    "business_missions_planned": "yes",
    "sme_members": "12",
    "success_story": "A memorandum with a partner in Canada.",
}


def token_of(settings: Settings, code: str, year: int = 2019) -> str:
    return derive_token(settings.resolved_token_secret(), year, code)


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, "the form carries a CSRF token"
    return found.group(1)


def responses_of(engine, code: str) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        rows = connection.execute(text(
            "SELECT r.status, r.matched_by, r.answers, f.layout, f.name FROM responses r "
            "JOIN partnerships p ON p.id = r.partnership_id JOIN ingested_files f ON f.id = r.file_id "
            "WHERE p.code = :code ORDER BY r.id"), {"code": code}).mappings().all()
    found = [dict(row) for row in rows]
    for row in found:
        if isinstance(row["answers"], str):  # plain JSON column: text through a raw query
            row["answers"] = json.loads(row["answers"])
    return found


@pytest.fixture
def client(settings: Settings, round_2019: int) -> TestClient:
    return TestClient(create_app(settings))


def post_answers(client: TestClient, token: str, answers: dict[str, Any], *, action: str = "submit"):
    page = client.get(f"/r/{token}?edit=1")
    assert page.status_code == 200
    return client.post(f"/r/{token}", data={**answers, "csrf_token": csrf_of(page.text), "action": action},
                       follow_redirects=False)


def test_form_shows_every_question_of_the_yaml_with_bound_labels_fieldsets_and_required_marks(client, settings):
    """Each question's label from the YAML; text inputs have a <label for>; choices sit in fieldsets with a legend;
    required questions are marked; min/max and max_length become help."""
    page = client.get(f"/r/{token_of(settings, ENGLISH)}")
    assert page.status_code == 200
    html = page.text
    for question in QUESTIONNAIRE["questions"]:
        code = question["code"]
        block = html.split(f'id="field-{code}"', 1)[1].split('<div class="field', 1)[0]
        assert question["label"] in block
        if question["kind"] in ("multi_select", "single_select", "yes_no"):
            assert "<fieldset" in block and "<legend>" in block
            inputs = re.findall(r'<input type="(?:checkbox|radio)" id="([^"]+)" name="' + code, block)
            assert inputs and all(f'for="{input_id}"' in block for input_id in inputs)
        else:
            assert f'<label for="{code}">' in block and f'id="{code}"' in block
        assert ('class="req"' in block) == bool(question.get("required"))
        if "max" in question:
            assert f"from {question['min']} to {question['max']}" in block
        if "max_length" in question:
            assert f"At most {question['max_length']} characters" in block
    # options: iso3166 lists every country once, by name.
    markets = html.split('id="field-markets"', 1)[1].split('<div class="field', 1)[0]
    assert len(re.findall(r'name="markets"', markets)) == 249
    assert "United States of America" in markets
    assert "<script" not in html


def test_a_french_partnership_gets_the_page_in_french(client, settings):
    page = client.get(f"/r/{token_of(settings, FRENCH)}")
    assert page.status_code == 200
    assert '<html lang="fr">' in page.text and "Envoyer mes réponses" in page.text
    # Questions keep the questionnaire's labels.
    assert QUESTIONNAIRE["questions"][0]["label"] in page.text


def test_security_headers_forbid_inline_script_and_referrers(client, settings):
    page = client.get(f"/r/{token_of(settings, ENGLISH)}")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy and "'unsafe-inline'" not in policy
    assert page.headers["referrer-policy"] == "no-referrer"
    assert page.headers["cache-control"] == "no-store"


def test_unknown_altered_and_other_round_tokens_get_the_same_404_page(client, settings):
    good = token_of(settings, ENGLISH)
    altered = good[:-1] + ("A" if good[-1] != "A" else "B")
    other_round = token_of(settings, ENGLISH, year=2018)
    pages = [client.get(f"/r/{token}") for token in ("unknown-token", altered, other_round)]
    pages.append(client.get("/no/such/page"))
    assert {page.status_code for page in pages} == {404}
    assert len({page.text for page in pages}) == 1
    assert good not in pages[0].text and "This link does not work" in pages[0].text


def test_failed_lookups_are_rate_limited_per_client(settings, round_2019, monkeypatch):
    """Past the limit, the client is refused even a valid token; another client is not affected."""
    limited = settings.model_copy(update={"form_failed_lookups": 3})
    app = create_app(limited)
    prober, other = TestClient(app, client=("203.0.113.7", 5000)), TestClient(app, client=("198.51.100.9", 5000))
    statuses = [prober.get(f"/r/guess-{number}").status_code for number in range(3)]
    assert statuses == [404, 404, 404]
    assert prober.get(f"/r/{token_of(settings, ENGLISH)}").status_code == 429
    assert other.get(f"/r/{token_of(settings, ENGLISH)}").status_code == 200


def test_a_post_without_csrf_token_is_refused_and_stores_nothing(client, settings, engine):
    token = token_of(settings, ENGLISH)
    client.get(f"/r/{token}")
    refused = client.post(f"/r/{token}", data={**GOOD, "action": "submit"}, follow_redirects=False)
    assert refused.status_code == 403
    assert "nothing was saved" in refused.text
    assert responses_of(engine, ENGLISH) == []


def test_a_replayed_csrf_token_is_refused(client, settings, engine):
    token = token_of(settings, ENGLISH)
    page = client.get(f"/r/{token}")
    form = {**GOOD, "csrf_token": csrf_of(page.text), "action": "submit"}
    assert client.post(f"/r/{token}", data=form, follow_redirects=False).status_code == 303
    replay = client.post(f"/r/{token}", data={**form, "sme_members": "999"}, follow_redirects=False)
    assert replay.status_code == 403
    assert [row["answers"]["sme_members"] for row in responses_of(engine, ENGLISH)] == [12]


def test_a_csrf_token_of_another_link_is_refused(client, settings, engine):
    page = client.get(f"/r/{token_of(settings, FRENCH)}")
    token = token_of(settings, ENGLISH)
    stolen = client.post(f"/r/{token}", data={**GOOD, "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert stolen.status_code == 403
    assert responses_of(engine, ENGLISH) == []


def test_an_oversized_body_is_refused_with_413(settings, round_2019, engine):
    small = settings.model_copy(update={"form_max_body_bytes": 2048})
    client = TestClient(create_app(small))
    token = token_of(settings, ENGLISH)
    page = client.get(f"/r/{token}")
    answer = {**GOOD, "success_story": "x" * 5000, "csrf_token": csrf_of(page.text)}
    assert client.post(f"/r/{token}", data=answer).status_code == 413
    # Without a Content-Length (chunked), the limit holds too.
    body = iter([b"success_story=" + b"y" * 1500, b"y" * 1500])
    assert client.post(f"/r/{token}", content=body,
                       headers={"content-type": "application/x-www-form-urlencoded"}).status_code == 413
    assert responses_of(engine, ENGLISH) == []


def test_submit_stores_an_accepted_form_response_and_confirms_with_a_summary(client, settings, engine):
    token = token_of(settings, ENGLISH)
    sent = post_answers(client, token, GOOD)
    assert sent.status_code == 303
    confirmation = client.get(sent.headers["location"])
    assert "Your answers were received" in confirmation.text
    assert "United States of America, Japan" in confirmation.text
    assert "Knowledge sharing and information exchange, Joint business events" in confirmation.text
    [row] = responses_of(engine, ENGLISH)
    assert (row["status"], row["matched_by"], row["layout"]) == ("accepted", "form", "form")
    assert row["answers"] == {"markets": ["US", "JP"], "sme_involvement": ["knowledge_sharing", "joint_events"],
                              "cooperation_agreements": 4, "business_missions_planned": True, "sme_members": 12,
                              "success_story": "A memorandum with a partner in Canada."}
    assert settings.resolved_token_secret().decode() not in row["name"] and token not in row["name"]


def test_invalid_answers_are_shown_beside_their_field_and_summarised_and_nothing_is_stored(client, settings, engine):
    token = token_of(settings, ENGLISH)
    bad = {**GOOD, "cooperation_agreements": "201", "sme_members": "many", "markets": []}
    page = post_answers(client, token, bad)
    assert page.status_code == 422
    summary = page.text.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    for code in ("cooperation_agreements", "sme_members", "markets"):
        assert f'href="#field-{code}"' in summary
    agreements = page.text.split('id="field-cooperation_agreements"', 1)[1].split('<div class="field', 1)[0]
    assert "Enter a value from 0 to 200." in agreements and 'value="201"' in agreements
    members = page.text.split('id="field-sme_members"', 1)[1].split('<div class="field', 1)[0]
    assert "Enter a whole number" in members and 'value="many"' in members
    assert "An answer is required." in page.text.split('id="field-markets"', 1)[1].split('<div class="field', 1)[0]
    assert responses_of(engine, ENGLISH) == []


def test_save_for_later_keeps_a_partial_answer_that_comes_back_and_is_not_counted(client, settings, engine):
    token = token_of(settings, ENGLISH)
    saved = post_answers(client, token, {"markets": ["CA"], "sme_members": "not yet"}, action="save")
    assert saved.status_code == 303
    [row] = responses_of(engine, ENGLISH)
    assert row["status"] == "partial"
    again = client.get(f"/r/{token}")
    assert "saved but not submitted" in client.get(saved.headers["location"]).text
    assert 'value="CA" checked' in again.text and 'value="not yet"' in again.text
    with engine.connect() as connection:
        accepted = connection.scalar(text("SELECT count(*) FROM responses WHERE status = 'accepted'"))
    assert accepted == 0


def test_a_form_answer_supersedes_an_earlier_file_response_and_keeps_it(client, settings, engine):
    with session_scope(engine) as session:
        add_responses(session, 2019, [{**{k: ";".join(v) if isinstance(v, list) else v for k, v in GOOD.items()},
                                       "partnership_id": ENGLISH, "sme_members": "3",
                                       "submitted_at": "2019-05-02T10:00:00"}])
    token = token_of(settings, ENGLISH)
    # The form opens on the file's answers, to revise them.
    assert "Your answers were received" in client.get(f"/r/{token}").text
    assert 'value="3"' in client.get(f"/r/{token}?edit=1").text
    assert post_answers(client, token, GOOD).status_code == 303
    rows = responses_of(engine, ENGLISH)
    assert [(row["status"], row["layout"]) for row in rows] == [("superseded", "plain"), ("accepted", "form")]
    assert rows[1]["answers"]["sme_members"] == 12


def test_two_submissions_at_once_for_one_partnership_one_accepted_one_superseded(settings, round_2019, engine):
    app = create_app(settings)
    token = token_of(settings, ENGLISH)
    clients = [TestClient(app), TestClient(app)]
    forms = [csrf_of(c.get(f"/r/{token}").text) for c in clients]
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def send(number: int) -> None:
        barrier.wait()
        answer = {**GOOD, "sme_members": str(100 + number), "csrf_token": forms[number], "action": "submit"}
        statuses.append(clients[number].post(f"/r/{token}", data=answer, follow_redirects=False).status_code)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [303, 303]
    rows = responses_of(engine, ENGLISH)
    assert sorted(row["status"] for row in rows) == ["accepted", "superseded"]
    assert sorted(row["answers"]["sme_members"] for row in rows) == [100, 101]


def test_script_in_a_text_answer_is_shown_as_text(client, settings):
    token = token_of(settings, ENGLISH)
    story = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    sent = post_answers(client, token, {**GOOD, "success_story": story})
    confirmation = client.get(sent.headers["location"]).text
    assert "<script>alert" not in confirmation and "<img src=x" not in confirmation
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in confirmation
    revise = client.get(f"/r/{token}?edit=1").text
    assert "<script>alert" not in revise and "&lt;script&gt;" in revise


def test_a_closed_round_says_so_shows_what_was_submitted_and_refuses_posts(client, settings, engine):
    token = token_of(settings, ENGLISH)
    page = client.get(f"/r/{token}")
    assert post_answers(client, token, GOOD).status_code == 303
    with engine.begin() as connection:
        connection.execute(text("UPDATE rounds SET status = 'closed' WHERE year = 2019"))
    closed = client.get(f"/r/{token}")
    assert closed.status_code == 200 and "This round is closed" in closed.text
    assert "United States of America, Japan" in closed.text and "<form" not in closed.text
    # A form shown before the round closed, sent after: refused, nothing changes.
    late = client.post(f"/r/{token}", data={**GOOD, "csrf_token": csrf_of(page.text)})
    assert late.status_code == 409 and "This round is closed" in late.text
    assert [row["status"] for row in responses_of(engine, ENGLISH)] == ["accepted"]
    never = client.get(f"/r/{token_of(settings, FRENCH)}")
    assert "Aucune réponse n&#39;a été envoyée" in never.text


def test_response_link_defaults_to_the_form(monkeypatch, tmp_path: Path):
    """CONSULT_PUBLIC_URL -> {public_url}/r/{token}; nothing set -> this machine's form; a survey template wins."""
    base = {"data_dir": tmp_path}
    assert Settings(**base).resolved_response_url_template == "http://127.0.0.1:8000/r/{token}"
    public = Settings(**base, public_url="https://consult.example.org/")
    assert public.resolved_response_url_template == "https://consult.example.org/r/{token}"
    survey = Settings(**base, public_url="https://consult.example.org",
                      response_url_template="https://survey.example/{token}")
    assert survey.resolved_response_url_template == "https://survey.example/{token}"
    with pytest.raises(ValueError, match="token"):
        Settings(**base, response_url_template="https://survey.example/")


def test_concurrent_submissions_checked_together_each_get_their_own_findings(settings, round_2019, engine):
    """Submissions arriving together share one suite run (as rows of one table); an invalid one is refused alone."""
    from sqlalchemy.orm import Session

    from consult.form.submissions import find_participant, questionnaire_of, submit

    codes = [row["partnership_id"] for row in PANEL][:6]
    codes = list(dict.fromkeys(codes))
    outcomes: dict[str, Any] = {}
    barrier = threading.Barrier(len(codes))

    def answer(position: int, code: str) -> None:
        with Session(engine) as session:
            participant = find_participant(session, token_of(settings, code))
            assert participant is not None
            questionnaire = questionnaire_of(session, participant)
        answers = {key: ";".join(value) if isinstance(value, list) else value for key, value in GOOD.items()}
        answers["sme_members"] = "lots" if position == 0 else str(position)
        barrier.wait()
        outcomes[code] = submit(engine, participant, questionnaire, answers, complete=True)

    threads = [threading.Thread(target=answer, args=(n, code)) for n, code in enumerate(codes)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(outcomes[codes[0]].errors) == {"sme_members"} and outcomes[codes[0]].status is None
    for position, code in enumerate(codes[1:], start=1):
        assert outcomes[code].errors == {} and outcomes[code].status == "accepted"
        [row] = responses_of(engine, code)
        assert row["answers"]["sme_members"] == position
    assert responses_of(engine, codes[0]) == []
