"""Expectation suites are data generated from the questionnaire and reviewed in git; validation explains every
bad value with the expectation that caught it."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from consult.ingest.matching import Directory, match_partnerships
from consult.ingest.normalise import answers_json, normalise, parse_timestamps
from consult.ingest.validation import build_suite, suite_path, validate
from consult.questionnaire import load_questionnaire, parse_questionnaire
from consult.settings import EXPECTATIONS_DIR
from db.bulk import timestamp_texts
from tests.factories import EXAMPLES

DATA = Path(__file__).resolve().parent / "data" / "ingest"


def _key(expectation: dict) -> str:
    return json.dumps({k: expectation[k] for k in ("type", "kwargs", "severity")}, sort_keys=True)


@pytest.mark.parametrize("year", [2019, 2020])
def test_committed_suite_holds_every_generated_expectation(year):
    """expectations/escp4i-v{year}.json is in git and contains what the questionnaire generates (analysts may
    add rules by hand; regenerate with `python -m consult.ingest.validation QUESTIONNAIRE.yaml`)."""
    questionnaire = load_questionnaire(EXAMPLES / f"questionnaire-{year}.yaml")
    path = suite_path(questionnaire)
    assert path == EXPECTATIONS_DIR / f"escp4i-v{year}.json" and path.is_file()
    committed = {_key(e) for e in json.loads(path.read_text(encoding="utf-8"))["expectations"]}
    assert {_key(e) for e in build_suite(questionnaire)["expectations"]} <= committed


def test_suite_rules_follow_the_questionnaire():
    """Required questions get a not-null error, integers a whole-number and a range error and a year-over-year
    warning, multi-selects an allowed-options error, free text a length error."""
    yaml_questions = yaml.safe_load((EXAMPLES / "questionnaire-2019.yaml").read_text(encoding="utf-8"))
    suite = build_suite(load_questionnaire(EXAMPLES / "questionnaire-2019.yaml"))
    rules = {(e["meta"]["field"], e["meta"]["rule"]): e["severity"] for e in suite["expectations"]}
    for question in yaml_questions["questions"]:
        code = question["code"]
        assert ((code, "required") in rules) == bool(question.get("required")), code
        if question["kind"] == "integer":
            assert rules[(code, "integer")] == rules[(code, "range")] == "critical"
            assert rules[(code, "year_over_year")] == "warning"
        if question["kind"] == "multi_select":
            assert rules[(code, "options")] == "critical"
    assert rules[("success_story", "length")] == "critical"
    assert rules[("partnership", "one_per_partnership")] == "warning"


def _directory() -> Directory:
    return Directory(round_id=1, year=2030, token_hashes={}, other_round_tokens={}, codes={"P-1": 1, "P-2": 2},
                     emails={"a@x.example": 1}, not_consulted=frozenset({"P-3"}))


def test_number_single_select_and_yes_no_questions_are_checked():
    """Other question kinds: a decimal number with a comma, a single choice, yes/no spelled 'Oui'."""
    questionnaire = parse_questionnaire(
        {
            "code": "demo", "version": 1, "title": "Demo", "match_by": ["partnership_id", "email"],
            "questions": [
                {"code": "budget", "kind": "number", "label": "Budget", "min": 0, "required": True},
                {"code": "size", "kind": "single_select", "label": "Size", "options": ["small", "large"]},
                {"code": "export", "kind": "yes_no", "label": "Exports"},
            ],
        },
        source="demo",
    )
    cells = pd.DataFrame(
        {"token": ["", "", ""], "partnership_id": ["P-1", "", "P-2"], "email": ["", "A@X.example", ""],
         "submitted_at": ["2019-01-01", "2019-01-02", "2019-01-03"], "complete": [True, True, True],
         "budget": ["12,5", "-1", "lots"], "size": ["small", "huge", ""], "export": ["Oui", "maybe", "no"]},
        index=pd.Index([2, 3, 4], name="row_number"),
    )
    match = match_partnerships(cells, _directory(), list(questionnaire.match_by))
    assert match["matched_by"].tolist() == ["partnership_id", "email", "partnership_id"]
    typed = normalise(cells, questionnaire).typed
    result = validate(typed, cells, match, questionnaire, build_suite(questionnaire),
                      limits=pd.DataFrame(), has_submit_date=True, asset_name="demo")
    assert 2 not in result.errors
    assert [r["message"] for r in result.errors[3]] == [
        "budget: -1 is outside 0..any", "size: 'huge' is not one of the options", "export: 'maybe' is not yes or no"]
    assert [r["message"] for r in result.errors[4]] == ["budget: 'lots' is not a number"]
    assert json.loads(answers_json(typed, questionnaire)[2]) == {"budget": 12.5, "size": "small", "export": True}


def test_match_by_token_only_refuses_partnership_ids():
    """A questionnaire that matches by token only does not trust a typed partnership id."""
    cells = pd.DataFrame({"token": [""], "partnership_id": ["P-1"], "email": [""]}, index=[2])
    match = match_partnerships(cells, _directory(), ["token"])
    assert match["match_error"].tolist() == ["this questionnaire matches by token only: a partnership id is not enough"]


def test_committed_limesurvey_xlsx_fixture_is_ingested(engine, settings, round_2019):
    """The LimeSurvey XLSX fixture (tokens of the test secret): two accepted answers, one partial; its HTML and
    line break in free text kept as written."""
    from tests.test_ingest_store import ingest, responses_by_code

    summary = ingest(settings, 2019, DATA / "limesurvey-2019.xlsx")
    counts = summary.files[0]
    assert (counts.layout, counts.accepted, counts.partial, counts.quarantined) == ("limesurvey", 2, 1, 0)
    accepted = responses_by_code(engine, "accepted")
    assert accepted["ESCP4I-02"][0].answers == {
        "markets": ["CA"], "sme_involvement": ["business_contacts", "joint_events"], "cooperation_agreements": 1,
        "business_missions_planned": False, "sme_members": 18,
        "success_story": "Met <b>buyers</b> in Toronto;\nsigned one MoU"}
    assert [r.status for r in responses_by_code(engine)["ESCP4I-12"]] == ["partial"]


def test_submit_dates_naive_zoned_and_mixed_in_one_file_all_become_utc():
    """A naive date is local time of the consultation; a date with an offset keeps it; both in one file work.
    Only declared formats are read: "1 March 2019 10:00" is not ISO 8601, so it is no date (quarantined)."""
    values = pd.Series(["2019-03-01T10:00:00", "", "2019-03-01T10:00:00+02:00", "1 March 2019 10:00", "soon"])
    parsed = parse_timestamps(values, "Europe/Brussels")
    expected = [pd.Timestamp("2019-03-01T09:00:00Z"), pd.NaT, pd.Timestamp("2019-03-01T08:00:00Z"),
                pd.NaT, pd.NaT]
    assert [None if pd.isna(v) else v for v in parsed.tolist()] == [None if pd.isna(v) else v for v in expected]


def test_submit_dates_are_written_in_the_databases_own_text_layout(engine):
    """The bulk path writes what SQLAlchemy itself would write, and NULL for a missing date."""
    stamps = pd.Series(pd.to_datetime(["2019-03-01T09:00:00.5Z", None, "2019-12-31T23:59:59Z"], utc=True, format="ISO8601"))
    with engine.connect() as connection:
        texts = timestamp_texts(connection, stamps).tolist()
    suffix = "" if engine.dialect.name == "sqlite" else "+00:00"
    assert texts == [f"2019-03-01 09:00:00.500000{suffix}", None, f"2019-12-31 23:59:59.000000{suffix}"]


def test_submit_dates_are_read_by_declared_formats_and_bounded():
    """Invalid, ambiguous without ``dayfirst``, before 2000 or after tomorrow: no date. Day first when declared."""
    now = pd.Timestamp("2019-06-01T12:00:00Z")
    values = pd.Series(["2019-13-01", "-1", "04/03/2019", "2999-01-01", "1999-12-31T23:00:00Z",
                        "2019-06-02T11:00:00Z", "2019-06-02T13:00:00Z", "2019-03-04 09:12:00",
                        "2300-01-01T00:00:00+01:00", "2019-03-04T09:12:00Z"])
    parsed = parse_timestamps(values, "Europe/Brussels", now=now)
    kept = {values[i]: parsed[i] for i in range(len(values)) if not pd.isna(parsed[i])}
    assert kept == {"2019-06-02T11:00:00Z": pd.Timestamp("2019-06-02T11:00:00Z"),
                    "2019-03-04 09:12:00": pd.Timestamp("2019-03-04T08:12:00Z"),
                    "2019-03-04T09:12:00Z": pd.Timestamp("2019-03-04T09:12:00Z")}
    day_first = parse_timestamps(pd.Series(["04/03/2019", "04.03.2019 10:30", "31/12/2019"]), "UTC", dayfirst=True,
                                 now=pd.Timestamp("2020-01-01", tz="UTC"))
    assert day_first.tolist() == [pd.Timestamp("2019-03-04", tz="UTC"), pd.Timestamp("2019-03-04T10:30Z"),
                                  pd.Timestamp("2019-12-31", tz="UTC")]


def test_the_suite_run_agrees_with_great_expectations_own_checkpoint_run():
    """run_suite calls GX's validator directly (no Checkpoint, each expectation's configuration built once): on a
    table with failures of every kind, each expectation passes or fails with the same unexpected count as when the
    same suite runs through GX's documented Checkpoint API, and a second run in the same process agrees too."""
    import great_expectations as gx

    from consult.ingest.validation import _gx_context, _gx_suite, run_suite

    questionnaire = load_questionnaire(EXAMPLES / "questionnaire-2019.yaml")
    suite = build_suite(questionnaire)
    columns = sorted({kwargs[key] for item in suite["expectations"] for kwargs in [item["kwargs"]]
                      for key in ("column", "column_A", "column_B") if key in kwargs}
                     | {name for item in suite["expectations"] for name in item["kwargs"].get("column_list", [])})
    values = [None, "x", 7, -3, 10**9, "US", "yes", "a" * 5000]
    frame = pd.DataFrame({name: [values[(position + shift) % len(values)] for shift in range(16)]
                          for position, name in enumerate(columns)}, dtype=object)
    frame["row_number"] = range(2, 18)

    context = _gx_context()
    batch = context.data_sources.add_pandas("p").add_dataframe_asset("a").add_batch_definition_whole_dataframe("b")
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="v", data=batch, suite=context.suites.add(_gx_suite(gx, suite))))
    checkpoint = context.checkpoints.add(gx.Checkpoint(
        name="c", validation_definitions=[definition], actions=[],
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["row_number"]}))
    (official,) = checkpoint.run(batch_parameters={"dataframe": frame}).run_results.values()
    expected = [(item.expectation_config.type, item.success, (item.result or {}).get("unexpected_count"))
                for item in official.results]
    assert any(not success for _, success, _ in expected)  # the table does fail some expectations

    for _ in range(2):
        run = run_suite(frame, suite, asset_name="a.csv")
        found = [(item.expectation_config.type, item.success, (item.result or {}).get("unexpected_count"))
                 for item in run.gx_result.results]
        assert sorted(found, key=repr) == sorted(expected, key=repr)
        assert sum(len(item["rows"]) for item in run.expectations) == sum(count or 0 for *_, count in expected)
