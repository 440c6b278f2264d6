"""Indicators of a round and their comparison with the previous round.

Expected figures are computed here from the example CSV files with the standard library (``Counter``,
``statistics``), never with the code under test. The responses are stored with the statuses the ingest gives
(accepted, superseded, partial), so that counting anything but the accepted answers shows up as a wrong figure.
"""

from __future__ import annotations

import statistics
from collections import Counter

import pandas as pd
import pytest
from sqlalchemy import select

from consult.indicators import compute_report, store_report
from db.engine import session_scope
from db.models import IndicatorValue, Response, Round
from tests.factories import (
    accepted_reference_rows,
    add_reference_responses,
    add_responses,
    open_reference_round,
    panel_strands,
    split,
)


def competition_ranks(counts: Counter[str]) -> dict[str, int]:
    """1 + the number of markets selected strictly more often (ties share the best rank)."""
    return {code: 1 + sum(1 for other in counts.values() if other > n) for code, n in counts.items()}


def market_counts(year: int) -> Counter[str]:
    return Counter(code for row in accepted_reference_rows(year).values() for code in set(split(row["markets"])))


def sme_counts(year: int, strand: int | None = None) -> Counter[str]:
    strands = panel_strands()
    return Counter(
        option
        for pid, row in accepted_reference_rows(year).items()
        if strand is None or strands[pid] == strand
        for option in set(split(row["sme_involvement"]))
    )


@pytest.fixture
def round_2019_answered(engine, round_2019):
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    return 2019


@pytest.fixture
def rounds_2019_2020(engine, settings, round_2019_answered):
    with session_scope(engine) as session:
        open_reference_round(session, 2020, token_secret=settings.resolved_token_secret())
        add_reference_responses(session, 2020)
    return 2020


def overall(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of an indicator over all respondents (not per breakdown group)."""
    return rows[rows["group"] == ""]


def report_of(engine, year: int):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return compute_report(session, year)


def test_consulted_responses_and_response_rate_come_with_their_denominators(engine, round_2019_answered):
    """23 consulted, 19 responses; the response rate overall and by strand is responders over consulted."""
    report = report_of(engine, 2019)
    strands = panel_strands()
    accepted = accepted_reference_rows(2019)
    consulted_by_strand = Counter(strands.values())
    responses_by_strand = Counter(strands[pid] for pid in accepted)
    assert report.value("consulted") == len(strands) == 23
    assert report.value("responses") == len(accepted) == 19
    assert report.row("response_rate")["denominator"] == 23
    assert report.value("response_rate") == pytest.approx(100 * 19 / 23)
    for strand, consulted in consulted_by_strand.items():
        assert report.value("consulted", f"strand={strand}") == consulted
        row = report.row("response_rate", f"strand={strand}")
        assert row["denominator"] == consulted
        assert row["value"] == pytest.approx(100 * responses_by_strand[strand] / consulted)


def test_markets_are_counted_once_per_partnership_and_ranked_with_ties_kept(engine, round_2019_answered):
    """US 8 is first; Canada and Japan (7 each) share rank 2; China, next, is 4th (competition ranking)."""
    report = report_of(engine, 2019)
    expected = market_counts(2019)
    ranks = competition_ranks(expected)
    rows = overall(report.rows("markets"))
    assert {row.key: row.value for row in rows.itertuples()} == dict(expected)
    assert {row.key: row.rank for row in rows.itertuples()} == ranks
    assert (ranks["US"], ranks["CA"], ranks["JP"], ranks["CN"]) == (1, 2, 2, 4)
    assert list(rows["key"])[:3] == ["US", "CA", "JP"]
    assert "BR" not in expected  # only the superseded 2019 row names Brazil
    assert report.value("markets_distinct") == len(expected)
    assert report.value("markets_selections") == sum(expected.values())


def test_sme_involvement_is_counted_per_activity_and_strand(engine, round_2019_answered):
    """Strand 1: business contacts 8, knowledge sharing 7, joint business events 4, each over 13 responders."""
    report = report_of(engine, 2019)
    strands = panel_strands()
    responders = Counter(strands[pid] for pid in accepted_reference_rows(2019))
    for strand in (1, 2):
        for option, n in sme_counts(2019, strand).items():
            row = report.row("sme_involvement", f"option={option};strand={strand}")
            assert (row["value"], row["denominator"]) == (n, responders[strand])
    for option, n in sme_counts(2019).items():
        assert report.value("sme_involvement", f"option={option}") == n
    strand1 = sme_counts(2019, 1)
    assert (strand1["business_contacts"], strand1["knowledge_sharing"], strand1["joint_events"]) == (8, 7, 4)


def test_cooperation_agreements_sme_members_and_business_missions(engine, round_2019_answered):
    """21 agreements in total; mean and median per partnership; 12 of 19 plan business missions."""
    report = report_of(engine, 2019)
    rows = accepted_reference_rows(2019).values()
    agreements = [int(row["cooperation_agreements"]) for row in rows]
    members = [int(row["sme_members"]) for row in rows]
    planned = [row["business_missions_planned"] == "yes" for row in rows]
    assert report.value("cooperation_agreements_sum") == sum(agreements) == 21
    assert report.value("cooperation_agreements_mean") == pytest.approx(statistics.mean(agreements))
    assert report.value("cooperation_agreements_median") == statistics.median(agreements)
    assert report.value("sme_members_sum") == sum(members)
    assert report.value("sme_members_median") == statistics.median(members)
    missions = report.row("business_missions_planned_yes_share")
    assert missions["denominator"] == len(planned)
    assert missions["value"] == pytest.approx(100 * sum(planned) / len(planned))
    assert missions["value"] > 50


def test_the_first_round_is_not_compared_with_anything(engine, round_2019_answered):
    report = report_of(engine, 2019)
    assert report.previous_year is None
    assert set(report.table["comparison"]) == {"first_round"}
    assert report.table["previous_value"].isna().all()


def test_2020_changes_and_rank_changes_are_against_2019(engine, rounds_2019_2020):
    """Each market's change is its 2020 count minus its 2019 count; rank change is old rank minus new rank."""
    report = report_of(engine, 2020)
    before, after = market_counts(2019), market_counts(2020)
    ranks_before, ranks_after = competition_ranks(before), competition_ranks(after)
    rows = {row.key: row for row in overall(report.rows("markets")).itertuples()}
    assert set(rows) == set(before) | set(after)
    for code, row in rows.items():
        assert row.value == after.get(code, 0)
        assert row.previous_value == before.get(code, 0)
        assert row.change == after.get(code, 0) - before.get(code, 0)
        if code in before and code in after:
            assert row.rank_change == ranks_before[code] - ranks_after[code], code
    assert rows["IN"].rank_change == 2  # 7th -> 5th
    total = report.row("cooperation_agreements_sum")
    agreements = {year: sum(int(r["cooperation_agreements"]) for r in accepted_reference_rows(year).values())
                  for year in (2019, 2020)}
    assert (total["value"], total["previous_value"], total["change"]) == (
        agreements[2020], agreements[2019], agreements[2020] - agreements[2019])
    assert total["change_pct"] == pytest.approx(100 * (agreements[2020] - agreements[2019]) / agreements[2019])


def test_new_and_dropped_markets_are_named_and_counted(engine, rounds_2019_2020):
    report = report_of(engine, 2020)
    before, after = set(market_counts(2019)), set(market_counts(2020))
    rows = overall(report.rows("markets"))
    assert set(rows[rows["comparison"] == "added"]["key"]) == after - before == {"BR"}
    assert set(rows[rows["comparison"] == "dropped"]["key"]) == before - after == {"MA"}
    assert report.value("markets_new") == 1
    assert report.value("markets_dropped") == 1


def test_a_question_new_this_year_is_marked_new_not_a_change_from_zero(engine, rounds_2019_2020):
    """digital_tools was not asked in 2019: no previous value, no change."""
    report = report_of(engine, 2020)
    answered = [row["digital_tools"] for row in accepted_reference_rows(2020).values() if row["digital_tools"]]
    row = report.row("digital_tools_yes")
    assert row["comparison"] == "new"
    assert row["value"] == answered.count("yes")
    assert row["denominator"] == len(answered)
    assert pd.isna(row["previous_value"]) and pd.isna(row["change"])
    assert report.new_questions == ("digital_tools",)


def test_a_renamed_option_is_compared_with_its_previous_code(engine, rounds_2019_2020):
    """2020's joint_business_events (previous_code joint_events) is compared with 2019's joint_events."""
    report = report_of(engine, 2020)
    for strand in (None, 1, 2):
        dimension = "option=joint_business_events" + (f";strand={strand}" if strand else "")
        row = report.row("sme_involvement", dimension)
        assert row["comparison"] == "comparable"
        assert row["value"] == sme_counts(2020, strand)["joint_business_events"]
        assert row["previous_value"] == sme_counts(2019, strand)["joint_events"]
    assert report.row("sme_involvement", "option=joint_events") is None


def test_storing_twice_keeps_one_row_per_round_indicator_and_dimension(engine, rounds_2019_2020):
    """Re-computing upserts; a dimension that disappears (a market nobody selects any more) is removed."""
    with session_scope(engine) as session:
        report = compute_report(session, 2020)
        first = store_report(session, report)
        store_report(session, compute_report(session, 2020))
    with session_scope(engine) as session:
        keys = session.execute(select(IndicatorValue.indicator, IndicatorValue.dimension)
                               .join(Round).where(Round.year == 2020)).all()
        assert len(keys) == len(set(keys)) == first
        stored = session.scalars(select(IndicatorValue).join(Round).where(
            Round.year == 2020, IndicatorValue.indicator == "markets",
            IndicatorValue.dimension == "option=IN")).one()
        assert (stored.value, stored.previous_value, stored.rank, stored.previous_rank) == (4, 3, 5, 7)
        # A correction: the only partnership selecting Taiwan in 2020 no longer does.
        taiwan = [r for r in session.scalars(select(Response).join(Round, Round.id == Response.round_id).where(
            Round.year == 2020, Response.status == "accepted")) if "TW" in (r.answers.get("markets") or [])]
        assert len(taiwan) == market_counts(2020)["TW"] == 1
        taiwan[0].answers = {**taiwan[0].answers, "markets": [c for c in taiwan[0].answers["markets"] if c != "TW"]}
        session.flush()
        store_report(session, compute_report(session, 2020))
        stored = session.scalars(select(IndicatorValue).join(Round).where(
            Round.year == 2020, IndicatorValue.indicator == "markets", IndicatorValue.dimension == "option=TW")).one()
        assert (stored.value, stored.previous_value, stored.comparison) == (0, 1, "dropped")


def test_an_option_listed_twice_in_one_answer_counts_once(engine, round_2019):
    with session_scope(engine) as session:
        add_responses(session, 2019, [
            {"partnership_id": "ESCP4I-01", "answers": {"markets": ["US", "US", "CA"], "sme_involvement": None}},
            {"partnership_id": "ESCP4I-02", "answers": {"markets": ["US"], "sme_involvement": ["other"]}},
        ])
        report = compute_report(session, 2019)
    assert report.value("markets", "option=US") == 2
    assert report.value("markets", "option=CA") == 1
    assert report.row("sme_involvement", "option=other")["denominator"] == 1  # one answered the question
