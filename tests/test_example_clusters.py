"""A second consultation, not ESCP-4i: 30 clusters without strand (sector, country, size), questionnaires for
2023 and 2024 with every question kind (yes/no, single and multi select, integer, number, a 1-5 scale with
labels, text), a renamed option and a question new in 2024. It runs end to end through the command line (panel
import, round open, ingest, publish) and every figure of its summary and CSV, overall, per sector and year over
year, equals the one computed here from the example files with the standard library."""

from __future__ import annotations

import csv
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from consult import settings as settings_module
from consult.cli import app
from consult.settings import EXAMPLES_DIR
from tests.conftest import DATABASE_KINDS, TEST_TOKEN_SECRET, fresh_database

# One worker runs the whole module: the module's publication is made once per database, not once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("clusters")]

CLUSTERS = EXAMPLES_DIR / "clusters"
LABELS = {1: "Very dissatisfied", 2: "Dissatisfied", 3: "Neutral", 4: "Satisfied", 5: "Very satisfied"}
SUPPORT = {2023: ["helpdesk", "partner_search", "eu_calls", "matchmaking", "training"],
           2024: ["helpdesk", "partner_search", "eu_calls", "b2b_matchmaking", "training"]}
REGIONS = ["europe", "north_america", "asia", "africa", "latin_america"]


# --- the expected figures, from the files ----------------------------------------------------------------------


def panel() -> dict[str, dict[str, str]]:
    with (CLUSTERS / "panel.csv").open(encoding="utf-8") as handle:
        return {row["partnership_id"]: row for row in csv.DictReader(handle)}


def accepted(year: int) -> dict[str, dict[str, str]]:
    """Per cluster of the panel, its latest complete submission (a row without submit date is partial)."""
    latest: dict[str, dict[str, str]] = {}
    with (CLUSTERS / f"responses-{year}.csv").open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if row["partnership_id"] in panel() and row["submitted_at"]:
                before = latest.get(row["partnership_id"])
                if before is None or row["submitted_at"] >= before["submitted_at"]:
                    latest[row["partnership_id"]] = row
    return latest


def scale_value(cell: str) -> int:
    """``4``, ``4 - Satisfied`` or ``Satisfied``."""
    head = cell.split(" - ")[0].strip()
    if head.isdigit():
        return int(head)
    return {label.lower(): value for value, label in LABELS.items()}[cell.strip().lower()]


def fmt(value: float) -> str:
    """As the CSV writes numbers: integers bare, others with at most 4 decimals."""
    return str(int(value)) if float(value).is_integer() else f"{value:.4f}".rstrip("0").rstrip(".")


def expected_values(year: int) -> dict[tuple[str, str], float | None]:
    """(indicator, dimension) -> value, for every default indicator overall and per sector."""
    members = panel()
    rows = accepted(year)
    values: dict[tuple[str, str], float | None] = {}
    sectors = sorted({p["sector"] for p in members.values()})
    groups: list[tuple[str, list[str], list[dict[str, str]]]] = [("", list(members), list(rows.values()))]
    for sector in sectors:
        ids = [pid for pid, p in members.items() if p["sector"] == sector]
        groups.append((f"sector={sector}", ids, [rows[pid] for pid in ids if pid in rows]))

    def dim(group: str, option: str | None = None) -> str:
        return ";".join(part for part in (f"option={option}" if option is not None else "", group) if part)

    def share(part: float, whole: float) -> float | None:
        return 100.0 * part / whole if whole else None

    for group, ids, answers in groups:
        values[("consulted", dim(group))] = len(ids)
        values[("responses", dim(group))] = len(answers)
        values[("response_rate", dim(group))] = share(len(answers), len(ids))
        strategy = [r["strategy"] for r in answers if r["strategy"]]
        values[("strategy_yes", dim(group))] = strategy.count("yes")
        values[("strategy_yes_share", dim(group))] = share(strategy.count("yes"), len(strategy))
        regions = Counter(r["priority_region"] for r in answers if r["priority_region"])
        for region in REGIONS:
            values[("priority_region", dim(group, region))] = regions[region]
            values[("priority_region_share", dim(group, region))] = share(regions[region], sum(regions.values()))
        chosen = [set(r["support"].split(";")) for r in answers if r["support"]]
        support = Counter(code for codes in chosen for code in codes)
        for option in SUPPORT[year]:
            values[("support", dim(group, option))] = support[option]
            values[("support_share", dim(group, option))] = share(support[option], len(chosen))
        values[("support_distinct", dim(group))] = len(support)
        values[("support_selections", dim(group))] = sum(support.values())
        funding = sum(1 for codes in chosen if codes & {"helpdesk", "eu_calls"})
        values[("funding_support", dim(group))] = funding
        values[("funding_support_share", dim(group))] = share(funding, len(chosen))
        for code in ("staff", "budget_share"):
            numbers = [float(r[code]) for r in answers if r[code]]
            values[(f"{code}_sum", dim(group))] = sum(numbers) if numbers else None
            values[(f"{code}_mean", dim(group))] = statistics.mean(numbers) if numbers else None
            values[(f"{code}_median", dim(group))] = statistics.median(numbers) if numbers else None
        scale = [scale_value(r["satisfaction"]) for r in answers if r["satisfaction"]]
        values[("satisfaction_mean", dim(group))] = statistics.mean(scale) if scale else None
        values[("satisfaction_median", dim(group))] = statistics.median(scale) if scale else None
        for value in range(1, 6):
            values[("satisfaction", dim(group, str(value)))] = scale.count(value)
        values[("comment_answered", dim(group))] = sum(1 for r in answers if r["comment"].strip())
        if year == 2024:
            diagnostic = [r["diagnostic"] for r in answers if r["diagnostic"]]
            values[("diagnostic_yes", dim(group))] = diagnostic.count("yes")
            values[("diagnostic_yes_share", dim(group))] = share(diagnostic.count("yes"), len(diagnostic))
    return values


def competition_ranks(counts: dict[str, int]) -> dict[str, int]:
    return {code: 1 + sum(1 for other in counts.values() if other > n) for code, n in counts.items() if n > 0}


# --- running the consultation through the command line ---------------------------------------------------------


@pytest.fixture(scope="module", params=DATABASE_KINDS)
def published(request, database_templates, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """Both rounds opened, ingested and published through the command line, once per database and test process
    for this module's tests (they only read the published files; the database is dropped once they exist)."""
    if request.param in _PUBLISHED:  # pytest-xdist may tear module fixtures down between a module's tests
        return _PUBLISHED[request.param]
    folder = tmp_path_factory.mktemp("clusters")
    with fresh_database(request.param, database_templates, tmp_path_factory, folder) as url, \
            pytest.MonkeyPatch.context() as monkeypatch:
        for key, value in {"CONSULT_DATABASE_URL": url, "CONSULT_DATA_DIR": str(folder / "data"),
                           "CONSULT_OUTPUT_DIR": str(folder / "output"), "CONSULT_MAIL_BACKEND": "mailbox",
                           "CONSULT_TOKEN_SECRET": TEST_TOKEN_SECRET}.items():
            monkeypatch.setenv(key, value)
        settings_module.get_settings.cache_clear()
        runner = CliRunner()

        def run(*args: str) -> str:
            result = runner.invoke(app, list(args), catch_exceptions=False)
            assert result.exit_code == 0, result.output
            return result.output

        assert "attributes: sector, country, size" in run("panel", "import", str(CLUSTERS / "panel.csv"))
        out = folder / "site"
        for year in (2023, 2024):
            run("round", "open", str(year), "--questionnaire", str(CLUSTERS / f"questionnaire-{year}.yaml"),
                "--closes-on", f"{year}-06-30")
            run("ingest", str(year), str(CLUSTERS / f"responses-{year}.csv"))
            run("publish", str(year), "--out", str(out))
    settings_module.get_settings.cache_clear()
    _PUBLISHED[request.param] = out
    return out


_PUBLISHED: dict[str, Path] = {}


def read_indicators(out: Path, year: int) -> dict[tuple[str, str], dict[str, str]]:
    with (out / str(year) / f"indicators-{year}.csv").open(encoding="utf-8", newline="") as handle:
        return {(row["indicator"], row["dimension"]): row for row in csv.DictReader(handle)}


def test_every_indicator_of_both_years_is_in_the_csv_with_the_right_figure(published):
    """Every question, overall and per sector: the CSV value equals the one computed from the files; 2024 carries
    2023 as its previous value (the renamed option under its new code), the new question is marked new."""
    for year in (2023, 2024):
        table = read_indicators(published, year)
        expected = expected_values(year)
        for key, value in expected.items():
            assert key in table, key
            got = table[key]["value"]
            if value is None:
                assert got == "", key
            else:
                assert float(got) == pytest.approx(value, abs=1e-4), (year, key, got, value)
    table = read_indicators(published, 2024)
    before, now = expected_values(2023), expected_values(2024)
    for (indicator, dimension), value in now.items():
        row = table[(indicator, dimension)]
        if indicator.startswith("diagnostic"):
            assert (row["comparison"], row["previous_value"], row["change"]) == ("new", "", ""), dimension
            continue
        old_dimension = dimension.replace("option=b2b_matchmaking", "option=matchmaking")
        previous = before[(indicator, old_dimension)]
        if previous is None:
            assert row["previous_value"] == ""
            continue
        assert float(row["previous_value"]) == pytest.approx(previous, abs=1e-4), (indicator, dimension)
        if value is not None:
            assert float(row["change"]) == pytest.approx(value - previous, abs=1e-4), (indicator, dimension)


def test_options_are_ranked_with_ties_and_rank_changes_follow_the_renamed_option(published):
    table = read_indicators(published, 2024)
    for question, options in (("support", SUPPORT), ("priority_region", {2023: REGIONS, 2024: REGIONS})):
        counts = {year: {o: int(expected_values(year)[(question, f"option={o}")]) for o in options[year]}
                  for year in (2023, 2024)}
        ranks_now = competition_ranks(counts[2024])
        ranks_before = competition_ranks(counts[2023])
        for option in options[2024]:
            row = table[(question, f"option={option}")]
            old = "matchmaking" if option == "b2b_matchmaking" else option
            assert row["rank"] == str(ranks_now.get(option, "")), (question, option)
            assert row["previous_rank"] == str(ranks_before.get(old, "")), (question, option)
            if option in ranks_now and old in ranks_before:
                assert row["rank_change"] == str(ranks_before[old] - ranks_now[option])
    assert table[("support_new", "")]["value"] == "0" and table[("support_dropped", "")]["value"] == "0"


def _summary(out: Path, year: int) -> str:
    return re.sub(r"\\(.)", r"\1", (out / str(year) / f"summary-{year}.md").read_text(encoding="utf-8"))


def test_the_summary_words_every_question_with_its_figures(published):
    """A section per question, clusters named as the questionnaire names them, shares with their denominators,
    the most chosen options with ties, the scale with its labels, a table per sector, free text quoted; no word
    of another consultation (strand, partnership, SME)."""
    members, rows = panel(), accepted(2023)
    text = _summary(published, 2023)
    assert f"The {len(members)} clusters of the panel were consulted and {len(rows)} responses were collected" in text
    for word in ("partnership", "Strand", "strand", "SME"):
        assert word not in text, word
    strategy = [r["strategy"] for r in rows.values()]
    yes = strategy.count("yes")
    assert f"yes for {yes} of {len(strategy)} ({100 * yes / len(strategy):.1f}%) clusters that answered" in text
    support = Counter(code for r in rows.values() for code in set(r["support"].split(";")))
    top, n = support.most_common(1)[0]
    assert sum(1 for count in support.values() if count == n) == 1
    label = {"helpdesk": "Europe helpdesk", "partner_search": "Partner search", "eu_calls": "EU calls for proposals",
             "matchmaking": "Matchmaking events", "training": "Training"}[top]
    assert f"{label} is the most selected service ({n} clusters)" in text
    regions = Counter(r["priority_region"] for r in rows.values())
    best = max(regions.values())
    assert f"({best} clusters each)" in text or f"({best} clusters)" in text
    staff = [int(r["staff"]) for r in rows.values()]
    assert f"{sum(staff)} staff members in all from the {len(staff)} clusters that answered" in text
    scale = [scale_value(r["satisfaction"]) for r in rows.values()]
    assert f"a mean of {statistics.mean(scale):.2f}".rstrip("0").rstrip(".") in text
    assert f"5 - Very satisfied: {scale.count(5)} of {len(scale)}" in text
    by_sector = defaultdict(list)
    for pid, row in rows.items():
        by_sector[members[pid]["sector"]].append(row)
    assert "## Support services used, by sector" in text and "## By sector, 2023" in text
    header = next(line for line in text.splitlines() if line.startswith("| Answer | agrifood"))
    for sector, answers in by_sector.items():
        assert f"{sector} (n={len(answers)})" in header
    comments = [r["comment"] for r in rows.values() if r["comment"].strip()]
    assert "## Comments" in text
    for comment in comments:
        assert f"> {comment}" in text


def test_the_2024_summary_compares_with_2023_and_marks_the_new_question(published):
    text = _summary(published, 2024)
    before, now = accepted(2023), accepted(2024)
    assert f"In 2023, {len(before)} of 30 clusters had responded." in text
    assert "New question in 2024" in text and "not asked in 2023" in text
    staff = {year: sum(int(r["staff"]) for r in rows.values()) for year, rows in ((2023, before), (2024, now))}
    difference = staff[2024] - staff[2023]
    word = "more" if difference > 0 else "fewer"
    assert f"{abs(difference)} {word} than in 2023 ({staff[2023]})" in text
    assert "B2B matchmaking events (was \u201cmatchmaking\u201d)" in text
