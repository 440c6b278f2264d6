"""The narrative's wording rules: ties worded as ties, country names from codes, percentages with their
denominator, small-base changes as counts."""

from __future__ import annotations

from consult.indicators import compute_report
from consult.narrative import build_narrative, change_in_counts, change_in_share, market_name, rate, share
from db.engine import session_scope
from tests.factories import add_responses


def answer(markets: list[str]) -> dict[str, object]:
    return {"markets": markets, "sme_involvement": ["other"], "cooperation_agreements": 1,
            "business_missions_planned": True, "sme_members": 10, "success_story": None}


def markets_sentence(engine, rows) -> str:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        add_responses(session, 2019, rows)
        report = compute_report(session, 2019)
    return next(p.text for p in build_narrative(report) if p.topic == "markets")


def test_markets_tied_first_are_worded_as_a_tie(engine, round_2019):
    """Two markets with 2 partnerships each share first place; the next ones share third place, not second."""
    text = markets_sentence(engine, [
        {"partnership_id": "ESCP4I-01", "answers": answer(["US", "CA", "NL"])},
        {"partnership_id": "ESCP4I-02", "answers": answer(["CA", "US"])},
        {"partnership_id": "ESCP4I-03", "answers": answer(["JP"])},
    ])
    assert text.startswith("Canada and the United States of America are the most selected markets "
                           "(2 partnerships each); Japan and the Netherlands share third place (1 partnership each).")


def test_a_single_second_market_is_named_the_second(engine, round_2019):
    text = markets_sentence(engine, [
        {"partnership_id": "ESCP4I-01", "answers": answer(["US", "CA"])},
        {"partnership_id": "ESCP4I-02", "answers": answer(["US", "CA"])},
        {"partnership_id": "ESCP4I-03", "answers": answer(["US", "KR"])},
    ])
    assert text.startswith("The United States of America is the most selected market (3 partnerships), "
                           "Canada the second (2 partnerships), followed by the Republic of Korea (1 partnership).")


def test_country_names_come_from_codes_with_the_article_english_needs():
    assert market_name("US") == "the United States of America"
    assert market_name("GB") == "the United Kingdom"
    assert market_name("NL") == "the Netherlands"
    assert market_name("JP") == "Japan"
    assert market_name("KR", article=False) == "Republic of Korea"


def test_percentages_always_carry_their_denominator():
    assert share(12, 19) == "12 of 19 (63.2%)"
    assert rate(19, 23) == "82.6% (19 of 23)"


def test_a_change_on_a_small_base_is_worded_as_counts():
    assert change_in_share(14, 20, 12, 19, 2019) == "against 12 of 19 (63.2%) in 2019"
    assert change_in_counts(30, 21, 2019, "") == "9 more than in 2019 (21)"


def test_a_change_on_a_large_base_is_worded_as_a_percentage():
    assert change_in_share(700, 1000, 600, 1000, 2019) == (
        "up 10.0 percentage points from 600 of 1,000 (60.0%) in 2019")
    assert change_in_counts(1100, 1000, 2019, "") == "100 more than in 2019 (1,000), +10.0%"
