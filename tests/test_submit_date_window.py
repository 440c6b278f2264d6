"""A submit date outside the round's open..close window is a warning, and a year before 2000 an error, on every
path that checks rows: an ingested file, a quarantined row an analyst accepts, a response form submission.

Round 2019 of the reference questionnaire closes on 2019-06-30 (tests/conftest.py ``round_2019``); it is opened
when the test runs, after its close date, so only the close date bounds its answers. Expected warnings are the
dates the tests write, compared with that close date here."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from consult.errors import ConsultError
from consult.ingest import pipeline
from db.engine import session_scope
from db.models import IngestedFile, Response
from tests.test_ingest_store import GOOD, ingest, quarantined, write_csv

CLOSES_ON = dt.date(2019, 6, 30)


def window_warnings(response: Response) -> list[str]:
    return [reason["value"] for reason in response.warnings or [] if reason["rule"] == "submit_date_window"]


def test_file_row_submitted_after_the_close_is_accepted_with_a_warning(engine, settings, round_2019, tmp_path):
    late = "2019-07-15T09:00:00"
    assert dt.date.fromisoformat(late[:10]) > CLOSES_ON
    summary = ingest(settings, 2019, write_csv(tmp_path, "late.csv", f"ESCP4I-01,{GOOD}",
                                               f"ESCP4I-02,{GOOD.replace('2019-04-01T10:00:00', late)}"))
    [file_summary] = summary.files
    assert (file_summary.accepted, file_summary.warnings) == (2, 1)
    with session_scope(engine) as session:
        warned = {response.row_number: window_warnings(response) for response in session.scalars(select(Response))}
    assert warned == {2: [], 3: [late]}


def test_quarantined_row_accepted_with_a_late_date_carries_the_window_warning(engine, settings, round_2019,
                                                                              tmp_path):
    """The analyst's fix goes through the same checks as a file: a date from before 2000 is still refused, one
    after the round closed is accepted and flagged."""
    placeholder = GOOD.replace("2019-04-01T10:00:00", "1980-01-01T00:00:00")
    ingest(settings, 2019, write_csv(tmp_path, "placeholder.csv", f"ESCP4I-01,{placeholder}"))
    [row] = quarantined(engine)
    assert row.reasons[0]["rule"] == "submit_date"
    with pytest.raises(ConsultError, match=r"still invalid: submitted_at: '1999-12-31T23:00:00'.*from 2000"):
        pipeline.accept_quarantined(settings, 2019, row.id, fixes={"submitted_at": "1999-12-31T23:00:00"})
    response = pipeline.accept_quarantined(settings, 2019, row.id, fixes={"submitted_at": "2019-08-01T12:00:00"})
    assert response.status == "accepted"
    assert window_warnings(response) == ["2019-08-01T12:00:00"]
    assert any(reason["rule"] == "fixed" for reason in response.warnings)


def test_form_submission_after_the_close_date_is_flagged_one_before_is_not(engine, settings, round_2019):
    """A form posted while the round is still open but after its close date (nobody closed it) is stored with
    the window warning, in the response and in the form file's report; one posted before the close is not."""
    from consult.form.submissions import cells_from_fields, find_participant, questionnaire_of, submit
    from consult.tokens import derive_token
    from tests.test_form_http import ENGLISH, FRENCH
    from tests.test_form_http import GOOD as FORM_GOOD

    stamps = {ENGLISH: dt.datetime(2019, 6, 1, 9, 0, tzinfo=dt.UTC),
              FRENCH: dt.datetime(2019, 7, 2, 9, 0, tzinfo=dt.UTC)}
    outcomes = {}
    for code, stamp in stamps.items():
        with session_scope(engine) as session:
            participant = find_participant(session, derive_token(settings.resolved_token_secret(), 2019, code))
            assert participant is not None
            questionnaire = questionnaire_of(session, participant)
        fields = {key: value if isinstance(value, list) else [value] for key, value in FORM_GOOD.items()}
        outcomes[code] = submit(engine, participant, questionnaire, cells_from_fields(questionnaire, fields),
                                complete=True, now=stamp)
    with session_scope(engine) as session:
        on_time = session.get(Response, outcomes[ENGLISH].response_id)
        late = session.get(Response, outcomes[FRENCH].response_id)
        late_report = session.get(IngestedFile, outcomes[FRENCH].file_id).report
        assert (on_time.status, late.status) == ("accepted", "accepted")
        assert window_warnings(on_time) == []
        assert [value[:10] for value in window_warnings(late)] == ["2019-07-02"]
    assert any("outside round 2019" in message for message in late_report["warnings"])
