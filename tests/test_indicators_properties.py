"""Property tests: for random questionnaires (every question kind, a breakdown attribute) and random answers of
two rounds, every default indicator, overall and per group, and its previous value equal a plain-Python
computation from the same answers."""

from __future__ import annotations

import math
import statistics
from typing import Any

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consult.indicators import report_from_data, round_data_from_frame
from consult.questionnaire import parse_questionnaire

KINDS = ["multi_select", "single_select", "yes_no", "integer", "number", "scale", "text"]


@st.composite
def questionnaires(draw: st.DrawFn) -> dict[str, Any]:
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=5))
    questions = []
    for number, kind in enumerate(kinds):
        question: dict[str, Any] = {"code": f"q{number}", "kind": kind, "label": f"Question {number}"}
        if kind in ("multi_select", "single_select"):
            size = draw(st.integers(1, 4))
            question["options"] = [f"o{i}" for i in range(size)]
        if kind == "scale":
            low = draw(st.integers(-1, 1))
            question.update(min=low, max=low + draw(st.integers(1, 5)))
        questions.append(question)
    return {"code": "p", "version": 1, "title": "Property", "breakdown_by": ["grp"], "questions": questions}


def answer(draw: st.DrawFn, question: dict[str, Any]) -> object:
    if draw(st.booleans()) and draw(st.booleans()):
        return None  # unanswered
    kind = question["kind"]
    if kind == "multi_select":
        return draw(st.lists(st.sampled_from(question["options"]), min_size=1, max_size=5))  # repeats count once
    if kind == "single_select":
        return draw(st.sampled_from(question["options"]))
    if kind == "yes_no":
        return draw(st.booleans())
    if kind == "integer":
        return draw(st.integers(0, 1000))
    if kind == "number":
        return draw(st.sampled_from([0.0, 0.5, 1.25, 2.0, 10.5, 99.75]))
    if kind == "scale":
        return draw(st.integers(question["min"], question["max"]))
    return draw(st.sampled_from(["", "  ", "a story", "x"]))


@st.composite
def rounds(draw: st.DrawFn) -> tuple[dict[str, Any], dict[int, str | None], list[dict[int, dict[str, object]]]]:
    definition = draw(questionnaires())
    size = draw(st.integers(1, 12))
    groups = {pid: draw(st.sampled_from(["a", "b", "c", None])) for pid in range(1, size + 1)}
    answered_rounds = []
    for _ in range(2):
        responders = draw(st.lists(st.sampled_from(list(groups)), unique=True, min_size=1))
        answered_rounds.append({pid: {q["code"]: answer(draw, q) for q in definition["questions"]}
                                for pid in sorted(responders)})
    return definition, groups, answered_rounds


def _percent(part: float, whole: float) -> float | None:
    return 100.0 * part / whole if whole else None


def expected(definition: dict[str, Any], groups: dict[int, str | None],
             answers: dict[int, dict[str, object]]) -> dict[tuple[str, str], tuple[float | None, float | None]]:
    """(indicator, dimension) -> (value, denominator), computed with plain Python."""
    values: dict[tuple[str, str], tuple[float | None, float | None]] = {}
    names = sorted({g for g in groups.values() if g is not None})
    subsets = [("", list(groups))] + [(f"grp={g}", [p for p, v in groups.items() if v == g]) for g in names]
    for group, members in subsets:
        def dim(option: str | None = None, group: str = group) -> str:
            return ";".join(part for part in (f"option={option}" if option is not None else "", group) if part)

        rows = [answers[p] for p in members if p in answers]
        values[("consulted", dim())] = (len(members), None)
        values[("responses", dim())] = (len(rows), len(members))
        values[("response_rate", dim())] = (_percent(len(rows), len(members)), len(members))
        for question in definition["questions"]:
            code, kind = question["code"], question["kind"]
            given_ = [row[code] for row in rows if row[code] is not None]
            n = len(given_)
            if kind in ("multi_select", "single_select"):
                chosen = [set(a) if isinstance(a, list) else {a} for a in given_]
                for option in question["options"]:
                    count = sum(option in c for c in chosen)
                    values[(code, dim(option))] = (count, n)
                    values[(f"{code}_share", dim(option))] = (_percent(count, n), n)
                if kind == "multi_select":
                    values[(f"{code}_distinct", dim())] = (len(set().union(*chosen)) if chosen else 0, None)
                    values[(f"{code}_selections", dim())] = (sum(len(c) for c in chosen), n)
            elif kind == "yes_no":
                yes = sum(1 for a in given_ if a is True)
                values[(f"{code}_yes", dim())] = (yes, n)
                values[(f"{code}_yes_share", dim())] = (_percent(yes, n), n)
            elif kind in ("integer", "number", "scale"):
                numbers = [float(a) for a in given_]  # type: ignore[arg-type]
                if kind != "scale":
                    values[(f"{code}_sum", dim())] = (sum(numbers) if numbers else None, n)
                values[(f"{code}_mean", dim())] = (statistics.mean(numbers) if numbers else None, n)
                values[(f"{code}_median", dim())] = (statistics.median(numbers) if numbers else None, n)
                if kind == "scale":
                    for value in range(question["min"], question["max"] + 1):
                        values[(code, dim(str(value)))] = (numbers.count(value), n)
            elif kind == "text":
                texts = sum(1 for a in given_ if str(a).strip())
                values[(f"{code}_answered", dim())] = (texts, len(rows))
    return values


def _frame(definition: dict[str, Any], answers: dict[int, dict[str, object]]) -> pd.DataFrame:
    return pd.DataFrame.from_records([answers[p] for p in sorted(answers)],
                                     columns=[q["code"] for q in definition["questions"]])


def _same(got: object, want: float | None) -> bool:
    if want is None:
        return got is None or got is pd.NA or (isinstance(got, float) and math.isnan(got))
    return got is not None and got is not pd.NA and math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rounds())
@pytest.mark.slow
def test_every_default_indicator_equals_a_plain_python_computation(case):  # type: ignore[no-untyped-def]
    definition, groups, (before, now) = case
    questionnaire = parse_questionnaire(definition, source="property")
    participants = pd.DataFrame({"partnership_id": list(groups), "grp": list(groups.values())})

    def data(year: int, answers: dict[int, dict[str, object]]):  # type: ignore[no-untyped-def]
        return round_data_from_frame(year, questionnaire, participants, sorted(answers), _frame(definition, answers))

    report = report_from_data(data(2031, now), data(2030, before))
    want, want_before = expected(definition, groups, now), expected(definition, groups, before)
    table = report.table
    measured = table[table["stat"].notna() & ~table["stat"].isin(["new", "dropped", "any_of", "any_of_share"])]
    got = {(r.indicator, r.dimension): r for r in measured.itertuples()}
    assert set(got) == set(want)
    for key, (value, denominator) in want.items():
        row = got[key]
        assert _same(row.value, value), (key, row.value, value)
        if denominator is not None:
            assert _same(row.denominator, denominator), (key, row.denominator, denominator)
        assert _same(row.previous_value, want_before[key][0]), (key, row.previous_value, want_before[key][0])
        if value is not None and want_before[key][0] is not None:
            assert _same(row.change, value - want_before[key][0]), key
    for question in definition["questions"]:
        if question["kind"] not in ("multi_select", "single_select"):
            continue
        counts = {o: want[(question["code"], f"option={o}")][0] for o in question["options"]}
        for option, count in counts.items():
            rank = got[(question["code"], f"option={option}")].rank
            if count:
                assert rank == 1 + sum(1 for other in counts.values() if other > count)
            else:
                assert rank is pd.NA
