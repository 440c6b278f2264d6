"""Benchmark: every declared indicator for N synthetic responses (default 1,000,000), with the comparison against
a previous round of the same size, next to baselines measured in the same run on the same frame:

- a plain pandas groupby (sum/mean/median of one integer column by strand),
- a plain explode + value_counts of the markets column (the core of the market indicator).

Usage: .venv/bin/python bench/bench_indicators.py [--rows N] [--seed S]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consult.indicators import (
    RoundData,
    build_round_data,
    compare,
    compute_values,
    previous_columns,
    round_data_from_frame,
)
from consult.questionnaire import load_questionnaire
from consult.settings import EXAMPLES_DIR

MARKETS = np.array(["US", "CA", "JP", "CN", "IL", "ZA", "IN", "KR", "SG", "MX", "AU", "CL", "VN", "TW", "MA", "BR", "AE", "SA", "TR", "NG", "KE", "EG", "AR", "CO", "PE", "NZ", "TH", "MY", "ID", "PH"])
SME_2019 = np.array(["business_contacts", "knowledge_sharing", "joint_events", "exports_imports", "soft_landing",
                     "other"])


def synthetic_round(year: int, rows: int, rng: np.random.Generator) -> RoundData:
    """``rows`` accepted responses of as many partnerships, answers shaped like the ingest stores them."""
    questionnaire = load_questionnaire(EXAMPLES_DIR / "escp4i" / f"questionnaire-{year}.yaml")
    weights = 1.0 / np.arange(1, len(MARKETS) + 1)
    market_picks = rng.choice(len(MARKETS), size=(rows, 5), p=weights / weights.sum())
    market_sizes = rng.integers(1, 6, size=rows)
    sme_picks = rng.integers(0, len(SME_2019), size=(rows, 3))
    sme_sizes = rng.integers(1, 4, size=rows)
    sme_codes = SME_2019 if year == 2019 else np.where(SME_2019 == "joint_events", "joint_business_events", SME_2019)
    markets = [row[:size] for row, size in zip(MARKETS[market_picks].tolist(), market_sizes.tolist(), strict=True)]
    smes = [row[:size] for row, size in zip(sme_codes[sme_picks].tolist(), sme_sizes.tolist(), strict=True)]
    # The frame is built column by column (as from_records would give it), which keeps the setup short.
    columns: dict[str, object] = {
        "markets": pd.Series(markets, dtype=object),
        "sme_involvement": pd.Series(smes, dtype=object),
        "cooperation_agreements": rng.poisson(1.3, size=rows),
        "business_missions_planned": pd.Series((rng.random(rows) < 0.6).tolist(), dtype=object),
        "sme_members": rng.integers(5, 200, size=rows),
        "success_story": pd.Series([None if i % 50 else "A story." for i in range(rows)], dtype=object),
    }
    if year == 2020:
        columns["digital_tools"] = pd.Series([bool(i % 3) for i in range(rows)], dtype=object)
    ids = np.arange(1, rows + 1)
    participants = pd.DataFrame({"partnership_id": ids, "strand": rng.integers(1, 3, size=rows)})
    return round_data_from_frame(year, questionnaire, participants, ids, pd.DataFrame(columns))


def loading_sample(rows: int, rng: np.random.Generator) -> list[dict[str, object]]:
    """Answers as stored (one JSON dict per response), to time the dicts -> frame step on a sample."""
    return [{"markets": ["US", "CA"], "sme_involvement": ["other"], "cooperation_agreements": int(n),
             "business_missions_planned": True, "sme_members": 10, "success_story": None}
            for n in rng.poisson(1.3, size=rows)]


def timed(label: str, function: Callable[[], object], repeat: int = 3) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    print(f"  {label:<58} {best:8.3f} s")
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="responses per round (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs (default 3)")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)

    print(f"indicators for {args.rows:,} synthetic responses per round (pandas {pd.__version__})")
    start = time.perf_counter()
    previous = synthetic_round(2019, args.rows, rng)
    current = synthetic_round(2020, args.rows, rng)
    print(f"  {'(setup: two synthetic rounds, answers -> frames)':<58} {time.perf_counter() - start:8.3f} s")

    sample_rows = min(args.rows, 100_000)
    sample = loading_sample(sample_rows, rng)
    ids = np.arange(1, sample_rows + 1)
    participants = pd.DataFrame({"partnership_id": ids, "strand": 1})
    loading, _ = timed(f"(answers dicts -> frame, {sample_rows:,}-row sample)",
                       lambda: build_round_data(2019, previous.questionnaire, participants, ids.tolist(), sample), 1)
    print(f"  {'  = for all rows, extrapolated':<58} {loading * args.rows / sample_rows:8.3f} s")

    # The baseline groups by strand as a column of the answers (the engine finds it in the round's snapshot).
    frame = current.answers.assign(strand=current.participants["strand"].to_numpy())
    baseline, _ = timed("baseline: groupby(strand) sum/mean/median of one column",
                        lambda: frame.groupby("strand")["cooperation_agreements"].agg(["sum", "mean", "median"]),
                        args.repeat)
    explode_baseline, _ = timed("baseline: explode + value_counts of markets",
                                lambda: frame["markets"].explode().value_counts(), args.repeat)

    columns_now = {q.code: _column(q) for q in current.questionnaire.questions}
    one_round, table = timed("all indicators of one round (compute_values)",
                             lambda: compute_values(current, columns_now, current.questionnaire), args.repeat)
    mapped = previous_columns(current.questionnaire, previous.questionnaire)

    def both_rounds() -> pd.DataFrame:
        now = compute_values(current, columns_now, current.questionnaire)
        before = compute_values(previous, mapped, current.questionnaire)
        return compare(now, before, year=2020, previous_columns_=mapped, questionnaire=current.questionnaire)

    year_over_year, compared = timed("both rounds + year-over-year comparison", both_rounds, args.repeat)
    assert isinstance(table, pd.DataFrame) and isinstance(compared, pd.DataFrame)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print()
    print(f"  indicator rows: {len(compared)}; peak memory {peak_mb:,.0f} MB")
    print(f"  one round   = {one_round / baseline:6.1f} x the groupby baseline, "
          f"{one_round / explode_baseline:5.1f} x the explode baseline")
    print(f"  year/year   = {year_over_year / baseline:6.1f} x the groupby baseline, "
          f"{year_over_year / explode_baseline:5.1f} x the explode baseline")
    print(f"  throughput  = {args.rows / one_round:,.0f} responses/s (one round)")


def _column(question):  # type: ignore[no-untyped-def]
    from consult.indicators import Column

    return Column(question=question, name=question.code)


if __name__ == "__main__":
    main()
