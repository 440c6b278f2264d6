"""Indicators of a round, derived from the questionnaire (one set per question kind), computed with vectorised
pandas/numpy from the accepted responses, compared with the previous round and stored in ``indicator_values``.

The default indicators (the contract of ``indicators-YEAR.csv``):

- participation: ``consulted``, ``responses``, ``response_rate``;
- single and multi select: ``<code>`` (respondents choosing each option, dimension ``option=<code>``, ranked,
  ties sharing a rank) and ``<code>_share``; multi select also ``<code>_distinct`` and ``<code>_selections``;
  after a first round, ``<code>_new`` and ``<code>_dropped`` (options chosen this round and not the previous one,
  and the reverse);
- yes/no: ``<code>_yes``, ``<code>_yes_share``;
- integer and number: ``<code>_sum``, ``<code>_mean``, ``<code>_median``;
- scale: ``<code>_mean``, ``<code>_median`` and ``<code>`` per value (``option=4``);
- text: ``<code>_answered``.

Each again per breakdown attribute of the questionnaire (``breakdown_by``), with ``;<attribute>=<value>`` added to
the dimension (``option=US;sector=water``), from the attributes each partnership had when the round opened. Every
share and mean has its denominator: the respondents who answered that question (for participation, those
consulted). The questionnaire's ``indicators:`` section renames, hides or adds indicators and sets their labels and
ranking.

Comparisons are made on stable codes: the previous round's answers are read through the current questionnaire's
``previous_code`` mappings (renamed questions and options), so that 2019's ``joint_events`` is compared with 2020's
``joint_business_events``. A question (or option) that the previous questionnaire did not ask is marked ``new``:
its previous value is unknown, not zero.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pandas as pd
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.questionnaire import Question, Questionnaire
from consult.rounds import get_round, previous_round, round_questionnaire
from db.models import IndicatorValue, Partnership, Response, Round, RoundParticipant

Unit = Literal["count", "percent", "number"]
Comparison = Literal["comparable", "first_round", "new", "added", "dropped"]

# Columns of the indicator table, in the order of the published CSV (the first six are the contract).
TABLE_COLUMNS = [
    "round_year",
    "indicator",
    "dimension",
    "value",
    "previous_value",
    "change",
    "change_pct",
    "denominator",
    "previous_denominator",
    "rank",
    "previous_rank",
    "rank_change",
    "comparison",
    "key",
    "group",
]

# What each default statistic of a question is called (suffix of the question code) and measures.
PARTICIPATION = ("consulted", "responses", "response_rate")


@dataclass(frozen=True)
class IndicatorSpec:
    """One default (or declared) indicator: its name, which question and statistic it is, its unit."""

    name: str
    label: str
    question: str | None
    stat: str  # consulted, responses, response_rate, count, share, distinct, selections, yes, yes_share, sum,
    # mean, median, answered, new, dropped, any_of
    unit: Unit = "count"
    ranked: bool = False
    options: tuple[str, ...] = ()  # any_of


def indicator_specs(questionnaire: Questionnaire) -> list[IndicatorSpec]:
    """The default indicators of a questionnaire, in questionnaire order, then the declared ones."""
    section = questionnaire.indicators
    unranked = set(section.unranked) if section else set()
    plural = questionnaire.respondent.plural
    specs = [
        IndicatorSpec("consulted", f"{plural.capitalize()} consulted", None, "consulted"),
        IndicatorSpec("responses", "Responses collected", None, "responses"),
        IndicatorSpec("response_rate", "Response rate", None, "response_rate", "percent"),
    ]
    for question in questionnaire.indicator_fields:
        code, label = question.code, question.label
        if question.is_select:
            specs += [
                IndicatorSpec(code, label, code, "count", ranked=code not in unranked),
                IndicatorSpec(f"{code}_share", f"{label} (share)", code, "share", "percent"),
            ]
            if question.kind == "multi_select":
                specs += [IndicatorSpec(f"{code}_distinct", f"{label}: distinct options chosen", code, "distinct"),
                          IndicatorSpec(f"{code}_selections", f"{label}: options chosen in all", code, "selections")]
            specs += [IndicatorSpec(f"{code}_new", f"{label}: chosen this round, not the previous one", code, "new"),
                      IndicatorSpec(f"{code}_dropped", f"{label}: chosen the previous round, not this one", code,
                                    "dropped")]
        elif question.kind == "yes_no":
            specs += [IndicatorSpec(f"{code}_yes", f"{label}: yes", code, "yes"),
                      IndicatorSpec(f"{code}_yes_share", label, code, "yes_share", "percent")]
        elif question.kind in ("integer", "number"):
            specs += [IndicatorSpec(f"{code}_sum", label, code, "sum"),
                      IndicatorSpec(f"{code}_mean", f"{label} (mean)", code, "mean", "number"),
                      IndicatorSpec(f"{code}_median", f"{label} (median)", code, "median", "number")]
        elif question.kind == "scale":
            specs += [IndicatorSpec(f"{code}_mean", f"{label} (mean)", code, "mean", "number"),
                      IndicatorSpec(f"{code}_median", f"{label} (median)", code, "median", "number"),
                      IndicatorSpec(code, label, code, "count")]
        elif question.kind == "text":
            specs.append(IndicatorSpec(f"{code}_answered", f"{label} (answers)", code, "answered"))
    for added in section.add if section else []:
        specs.append(IndicatorSpec(added.name, added.label or added.name, added.question, "any_of",
                                   options=tuple(added.any_of)))
        specs.append(IndicatorSpec(f"{added.name}_share", f"{added.label or added.name} (share)", added.question,
                                   "any_of_share", "percent", options=tuple(added.any_of)))
    if section:
        specs = [IndicatorSpec(spec.name, section.labels.get(published_name(questionnaire, spec.name), spec.label),
                               spec.question, spec.stat, spec.unit, spec.ranked, spec.options) for spec in specs]
    return specs


def published_name(questionnaire: Questionnaire, name: str) -> str:
    """The name an indicator is published under (the ``indicators.rename`` of the questionnaire)."""
    section = questionnaire.indicators
    return section.rename.get(name, name) if section else name


# --------------------------------------------------------------------------------------------------------------
# The data of one round


@dataclass(frozen=True)
class RoundData:
    """One round as frames: who was consulted (``participants``: partnership_id, then one text column per panel
    attribute, as the round snapshotted them) and the accepted answers (``answers``: partnership_id, one column
    per question code)."""

    year: int
    questionnaire: Questionnaire
    participants: pd.DataFrame
    answers: pd.DataFrame
    # Intermediate arrays shared by several indicators of one question (e.g. the exploded options).
    cache: dict[tuple[object, ...], object] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class Column:
    """Where a (current) question's answers sit in a round's frame, and how that round's option codes translate
    into the current codes."""

    question: Question
    name: str
    option_map: Mapping[str, str] = field(default_factory=dict)
    previous_options: frozenset[str] | None = None  # option codes (current spelling) the round offered


def load_round_data(session: Session, year: int) -> RoundData:
    """Read the participants and accepted responses of round ``year`` into frames."""
    return _load(session, get_round(session, year))


def _load(session: Session, round_: Round) -> RoundData:
    questionnaire = round_questionnaire(round_)
    snapshot = session.execute(
        select(RoundParticipant.partnership_id, RoundParticipant.attributes).where(
            RoundParticipant.round_id == round_.id)
    ).all()
    participants = participants_frame([pid for pid, _ in snapshot], [attributes or {} for _, attributes in snapshot])
    rows = session.execute(
        select(Response.partnership_id, Response.answers)
        .where(Response.round_id == round_.id, Response.status == "accepted")
        .order_by(Response.partnership_id)
    ).all()
    # An anonymous round's responses belong to no partnership: each stands for itself (a negative id that no
    # participant has), so it counts as a response but falls in no breakdown group.
    ids = [r.partnership_id if r.partnership_id is not None else -1 - n for n, r in enumerate(rows)]
    return build_round_data(round_.year, questionnaire, participants, ids, [r.answers or {} for r in rows])


def participants_frame(partnership_ids: list[int], attributes: list[dict[str, str]]) -> pd.DataFrame:
    """partnership_id, then one column per attribute any participant has (text; missing when it has none)."""
    frame = pd.DataFrame.from_records(attributes) if attributes else pd.DataFrame(index=range(0))
    frame = frame.reset_index(drop=True)
    frame.insert(0, "partnership_id", np.asarray(partnership_ids, dtype="int64"))
    return frame


def build_round_data(
    year: int,
    questionnaire: Questionnaire,
    participants: pd.DataFrame,
    partnership_ids: list[int],
    answers: list[dict[str, object]],
) -> RoundData:
    """Assemble a RoundData from the stored records: one ``answers`` dict per accepted response."""
    frame = pd.DataFrame.from_records(answers) if answers else pd.DataFrame(index=range(0))
    return round_data_from_frame(year, questionnaire, participants, partnership_ids, frame)


def round_data_from_frame(
    year: int,
    questionnaire: Questionnaire,
    participants: pd.DataFrame,
    partnership_ids: list[int] | np.ndarray,
    frame: pd.DataFrame,
) -> RoundData:
    """Assemble a RoundData from a frame with one column per question code (missing questions become empty)."""
    frame = frame.reindex(columns=[field.code for field in questionnaire.indicator_fields]).reset_index(drop=True)
    frame.insert(0, "partnership_id", np.asarray(partnership_ids, dtype="int64"))
    duplicated = frame["partnership_id"].duplicated()
    if duplicated.any():
        pid = int(frame.loc[duplicated, "partnership_id"].iloc[0])
        raise ConsultError(f"round {year}: partnership id {pid} has more than one accepted response")
    return RoundData(year=year, questionnaire=questionnaire, participants=participants, answers=frame)


# --------------------------------------------------------------------------------------------------------------
# Breakdown groups


@dataclass(frozen=True)
class Groups:
    """The values of one breakdown attribute in a round, and each participant's and response's position in
    them (-1: the partnership has no value for it)."""

    attribute: str
    values: tuple[str, ...]
    of_participants: np.ndarray
    of_answers: np.ndarray

    def label(self, position: int) -> str:
        return f"{self.attribute}={self.values[position]}"


def _natural(value: str) -> tuple[object, ...]:
    """Sort key: ``2`` before ``10``, text alphabetically."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part.casefold())
                 for part in re.split(r"(\d+)", value) if part)


def groups_of(data: RoundData, attribute: str) -> Groups:
    key = ("groups", attribute)
    cached = data.cache.get(key)
    if cached is not None:
        return cached  # type: ignore[return-value]
    if attribute in data.participants.columns:
        text = data.participants[attribute].astype("string").str.strip()
        text = text.mask(text == "")
    else:
        text = pd.Series(pd.NA, index=data.participants.index, dtype="string")
    codes, uniques = pd.factorize(text, use_na_sentinel=True)
    ordered = sorted((str(u) for u in uniques), key=_natural)
    position = np.array([ordered.index(str(u)) for u in uniques] + [-1], dtype="int64")
    of_participants = position.take(np.where(codes < 0, len(uniques), codes))
    index = pd.Index(data.participants["partnership_id"].to_numpy(dtype="int64"))
    where = index.get_indexer(data.answers["partnership_id"].to_numpy(dtype="int64"))
    of_answers = np.where(where >= 0, of_participants.take(np.maximum(where, 0)) if len(of_participants)
                          else -1, -1).astype("int64")
    groups = Groups(attribute, tuple(ordered), of_participants.astype("int64"), of_answers)
    data.cache[key] = groups
    return groups


def _per_group(groups: Groups, mask: np.ndarray | None = None, weights: np.ndarray | None = None) -> np.ndarray:
    """Per group value: the number of answers (``mask``: those counted) or the sum of ``weights``."""
    codes = groups.of_answers
    keep = codes >= 0 if mask is None else (codes >= 0) & mask
    return np.bincount(codes[keep], weights=None if weights is None else weights[keep],
                       minlength=len(groups.values)).astype("float64")


# --------------------------------------------------------------------------------------------------------------
# Computations: each appends rows (name, key, group, value, denominator, position)


Row = tuple[str, str | None, str, float | None, float | None, int]


class _Rows:
    def __init__(self) -> None:
        self.rows: list[Row] = []

    def add(self, name: str, key: str | None, group: str, value: float | None, denominator: float | None,
            position: int = 0) -> None:
        self.rows.append((name, key, group, _float(value), _float(denominator), position))


def _percent(part: float | None, whole: float | None) -> float | None:
    return None if part is None or not whole else 100.0 * part / whole


def _participation(data: RoundData, breakdowns: list[Groups], out: _Rows) -> None:
    consulted, responses = float(len(data.participants)), float(len(data.answers))
    out.add("consulted", None, "", consulted, None)
    out.add("responses", None, "", responses, consulted)
    out.add("response_rate", None, "", _percent(responses, consulted), consulted)
    for groups in breakdowns:
        valid = groups.of_participants >= 0
        by_group = np.bincount(groups.of_participants[valid], minlength=len(groups.values))
        answered = _per_group(groups)
        for i in range(len(groups.values)):
            out.add("consulted", None, groups.label(i), float(by_group[i]), None)
            out.add("responses", None, groups.label(i), float(answered[i]), float(by_group[i]))
            out.add("response_rate", None, groups.label(i), _percent(float(answered[i]), float(by_group[i])),
                    float(by_group[i]))


def _answered_mask(data: RoundData, column: Column) -> np.ndarray:
    key = ("answered", column.name)
    if key not in data.cache:
        values = data.answers[column.name]
        data.cache[key] = values.notna().to_numpy()
    return data.cache[key]  # type: ignore[return-value]


def _exploded(data: RoundData, column: Column) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(response position, option position, options): one entry per (response, selected option) in current
    codes, each option counted once per response.

    Options are factorised to integer codes so that de-duplication and counting never hash strings row by row."""
    key = ("exploded", column.name, tuple(sorted(column.option_map.items())))
    if key in data.cache:
        return data.cache[key]  # type: ignore[return-value]
    values = data.answers[column.name]
    if column.question.kind == "single_select":
        present = values.notna().to_numpy()
        positions = np.flatnonzero(present).astype("int64")
        raw = values.to_numpy(dtype=object)[present]
    else:
        exploded = values[values.notna()].explode().dropna()
        positions = exploded.index.to_numpy(dtype="int64")
        raw = exploded.to_numpy(dtype=object)
    codes, uniques = pd.factorize(raw)
    labels = np.array([column.option_map.get(str(u), str(u)) for u in uniques], dtype=object)
    categories, inverse = np.unique(labels, return_inverse=True) if len(labels) else (labels, codes[:0])
    codes = inverse[codes] if len(codes) else codes.astype("int64")
    # An option listed twice in one answer (or two old codes merged into one) counts once for that partnership.
    keep = ~pd.Index(positions * max(len(categories), 1) + codes).duplicated()
    result = (positions[keep], codes[keep].astype("int64"), [str(c) for c in categories])
    data.cache[key] = result
    return result


def _offered(column: Column) -> list[str]:
    if isinstance(column.question.options, list):
        return [option.code for option in column.question.options]
    return []


def _select(data: RoundData, column: Column, breakdowns: list[Groups], out: _Rows) -> None:
    code = column.question.code
    positions, options, categories = _exploded(data, column)
    counts = np.bincount(options, minlength=len(categories)).astype("float64")
    answered = _answered_mask(data, column)
    total = float(answered.sum())
    offered = _offered(column)
    # Every offered option (a drop to zero stays visible), then any other option chosen (ISO country codes).
    index_of = {option: i for i, option in enumerate(categories)}
    listed = offered + sorted((c for c, n in zip(categories, counts, strict=True) if n > 0 and c not in offered),
                              key=lambda c: (-counts[index_of[c]], c))
    for position, option in enumerate(listed):
        n = counts[index_of[option]] if option in index_of else 0.0
        out.add(code, option, "", n, total, position)
        out.add(f"{code}_share", option, "", _percent(n, total), total, position)
    if column.question.kind == "multi_select":
        out.add(f"{code}_distinct", None, "", float((counts > 0).sum()), None)
        out.add(f"{code}_selections", None, "", float(len(options)), total)
    for groups in breakdowns:
        size = max(len(categories), 1)
        group = groups.of_answers.take(positions) if len(positions) else positions
        valid = group >= 0
        matrix = np.bincount(group[valid] * size + options[valid], minlength=len(groups.values) * size)
        matrix = matrix.reshape(len(groups.values), size).astype("float64")
        base = _per_group(groups, answered)
        for g in range(len(groups.values)):
            label = groups.label(g)
            for position, option in enumerate(listed):
                n = matrix[g, index_of[option]] if option in index_of else 0.0
                out.add(code, option, label, n, base[g], position)
                out.add(f"{code}_share", option, label, _percent(n, base[g]), base[g], position)
            if column.question.kind == "multi_select":
                out.add(f"{code}_distinct", None, label, float((matrix[g] > 0).sum()), None)
                out.add(f"{code}_selections", None, label, float(matrix[g].sum()), base[g])


def _any_of(data: RoundData, column: Column, name: str, chosen: tuple[str, ...], breakdowns: list[Groups],
            out: _Rows) -> None:
    positions, options, categories = _exploded(data, column)
    wanted = np.array([c in chosen for c in categories] + [False], dtype=bool)
    hit = np.zeros(len(data.answers), dtype=bool)
    hit[positions[wanted.take(options)] if len(options) else positions] = True
    answered = _answered_mask(data, column)
    n, total = float(hit.sum()), float(answered.sum())
    out.add(name, None, "", n, total)
    out.add(f"{name}_share", None, "", _percent(n, total), total)
    for groups in breakdowns:
        counts, base = _per_group(groups, hit), _per_group(groups, answered)
        for g in range(len(groups.values)):
            out.add(name, None, groups.label(g), counts[g], base[g])
            out.add(f"{name}_share", None, groups.label(g), _percent(counts[g], base[g]), base[g])


def _numbers(data: RoundData, column: Column) -> np.ndarray:
    key = ("numbers", column.name)
    if key not in data.cache:
        values = data.answers[column.name]
        try:
            numbers = pd.to_numeric(values, errors="raise")
        except (ValueError, TypeError) as error:
            raise ConsultError(
                f"round {data.year}: question {column.question.code}: an accepted answer is not a number ({error})"
            ) from None
        data.cache[key] = numbers.astype("float64").to_numpy()
    return data.cache[key]  # type: ignore[return-value]


def _statistics(code: str, numbers: np.ndarray, breakdowns: list[Groups], out: _Rows, *, with_sum: bool) -> None:
    present = ~np.isnan(numbers)
    valid = numbers[present]
    n = float(len(valid))
    if with_sum:
        out.add(f"{code}_sum", None, "", float(valid.sum()) if n else None, n)
    out.add(f"{code}_mean", None, "", float(valid.mean()) if n else None, n)
    out.add(f"{code}_median", None, "", float(np.median(valid)) if n else None, n)
    for groups in breakdowns:
        keep = present & (groups.of_answers >= 0)
        frame = pd.DataFrame({"g": groups.of_answers[keep], "n": numbers[keep]})
        stats = frame.groupby("g")["n"].agg(["sum", "mean", "median", "count"])
        for g in range(len(groups.values)):
            label = groups.label(g)
            if g in stats.index:
                row = stats.loc[g]
                values = (float(row["sum"]), float(row["mean"]), float(row["median"]), float(row["count"]))
            else:
                values = (None, None, None, 0.0)
            if with_sum:
                out.add(f"{code}_sum", None, label, values[0], values[3])
            out.add(f"{code}_mean", None, label, values[1], values[3])
            out.add(f"{code}_median", None, label, values[2], values[3])


def _scale(data: RoundData, column: Column, breakdowns: list[Groups], out: _Rows) -> None:
    question, code = column.question, column.question.code
    numbers = _numbers(data, column)
    _statistics(code, numbers, breakdowns, out, with_sum=False)
    scale = question.scale_values
    low = scale[0]
    present = ~np.isnan(numbers)
    inside = present & (numbers >= low) & (numbers <= scale[-1]) & (np.floor(numbers) == numbers)
    offsets = np.where(inside, numbers, low).astype("int64") - low
    counts = np.bincount(offsets[inside], minlength=len(scale)).astype("float64")
    total = float(present.sum())
    for position, value in enumerate(scale):
        out.add(code, str(value), "", counts[position], total, position)
    for groups in breakdowns:
        keep = inside & (groups.of_answers >= 0)
        matrix = np.bincount(groups.of_answers[keep] * len(scale) + offsets[keep],
                             minlength=len(groups.values) * len(scale)).reshape(len(groups.values), len(scale))
        base = _per_group(groups, present)
        for g in range(len(groups.values)):
            for position, value in enumerate(scale):
                out.add(code, str(value), groups.label(g), float(matrix[g, position]), base[g], position)


def _yes(data: RoundData, column: Column) -> np.ndarray:
    key = ("yes", column.name)
    if key in data.cache:
        return data.cache[key]  # type: ignore[return-value]
    values = data.answers[column.name]
    try:
        # Typed answers are booleans (or None): converted without a Python call per row.
        yes = pd.array(values.to_numpy(dtype=object), dtype="boolean").astype("Float64").to_numpy(
            dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        # "yes"/"no" strings are tolerated for answers stored by older ingests; anything else is an error.
        mapped = values.map({True: 1.0, False: 0.0, "yes": 1.0, "no": 0.0}, na_action="ignore")
        unknown = values.notna() & mapped.isna()
        if unknown.any():
            raise ConsultError(
                f"round {data.year}: question {column.question.code}: answer {values[unknown].iloc[0]!r} "
                "is not yes/no"
            ) from None
        yes = mapped.astype("float64").to_numpy()
    data.cache[key] = yes
    return yes


def _yes_no(data: RoundData, column: Column, breakdowns: list[Groups], out: _Rows) -> None:
    code = column.question.code
    yes = _yes(data, column)
    present = ~np.isnan(yes)
    n, total = float(np.nansum(yes)), float(present.sum())
    out.add(f"{code}_yes", None, "", n, total)
    out.add(f"{code}_yes_share", None, "", _percent(n, total), total)
    for groups in breakdowns:
        counts, base = _per_group(groups, present & (yes == 1.0)), _per_group(groups, present)
        for g in range(len(groups.values)):
            out.add(f"{code}_yes", None, groups.label(g), counts[g], base[g])
            out.add(f"{code}_yes_share", None, groups.label(g), _percent(counts[g], base[g]), base[g])


def _text(data: RoundData, column: Column, breakdowns: list[Groups], out: _Rows) -> None:
    code = column.question.code
    values = data.answers[column.name]
    answered = (values.astype("string").str.strip().fillna("") != "").to_numpy()
    out.add(f"{code}_answered", None, "", float(answered.sum()), float(len(data.answers)))
    for groups in breakdowns:
        counts, base = _per_group(groups, answered), _per_group(groups)
        for g in range(len(groups.values)):
            out.add(f"{code}_answered", None, groups.label(g), counts[g], base[g])


def _float(value: object) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


# --------------------------------------------------------------------------------------------------------------
# Computing a round and comparing it with the previous one


def _current_columns(questionnaire: Questionnaire) -> dict[str, Column]:
    return {q.code: Column(question=q, name=q.code) for q in questionnaire.indicator_fields}


def previous_columns(current: Questionnaire, previous: Questionnaire) -> dict[str, Column]:
    """For each current question the previous round also asked: where its answers sit in the previous frame and
    how the previous option codes translate into the current ones (``previous_code`` mappings)."""
    columns: dict[str, Column] = {}
    previous_codes = {field.code for field in previous.indicator_fields}
    for question in current.indicator_fields:
        old_code = question.previous_code or question.code
        if old_code not in previous_codes:
            old_code = question.code if question.code in previous_codes else ""
        if not old_code or previous.field(old_code).kind != question.kind:
            continue
        option_map: dict[str, str] = {}
        previous_options: frozenset[str] | None = None
        if isinstance(question.options, list):
            option_map = {question.previous_option_code(o.code): o.code for o in question.options
                          if question.previous_option_code(o.code) != o.code}
            old_options = previous.field(old_code).option_codes
            previous_options = frozenset(option_map.get(code, code) for code in old_options)
        elif question.kind == "scale":
            old = previous.field(old_code)
            previous_options = frozenset(str(v) for v in old.scale_values)
        columns[question.code] = Column(question=question, name=old_code, option_map=option_map,
                                        previous_options=previous_options)
    return columns


def compute_values(data: RoundData, columns: Mapping[str, Column], questionnaire: Questionnaire) -> pd.DataFrame:
    """Every default and declared indicator of one round, in current codes (``columns``), one row per indicator
    and dimension, broken down by the current questionnaire's ``breakdown_by``."""
    breakdowns = [groups_of(data, attribute) for attribute in questionnaire.breakdown_by]
    out = _Rows()
    _participation(data, breakdowns, out)
    for question in questionnaire.indicator_fields:
        column = columns.get(question.code)
        if column is None:
            continue
        if question.is_select:
            _select(data, column, breakdowns, out)
        elif question.kind == "yes_no":
            _yes_no(data, column, breakdowns, out)
        elif question.kind in ("integer", "number"):
            _statistics(question.code, _numbers(data, column), breakdowns, out, with_sum=True)
        elif question.kind == "scale":
            _scale(data, column, breakdowns, out)
        elif question.kind == "text":
            _text(data, column, breakdowns, out)
    for spec in indicator_specs(questionnaire):
        if spec.stat == "any_of" and spec.question in columns:
            _any_of(data, columns[spec.question], spec.name, spec.options, breakdowns, out)
    table = pd.DataFrame(out.rows, columns=["indicator", "key", "group", "value", "denominator", "position"])
    specs = {spec.name: spec for spec in indicator_specs(questionnaire)}
    table["question"] = table["indicator"].map({n: s.question for n, s in specs.items()})
    table["value"] = table["value"].astype("Float64")
    table["denominator"] = table["denominator"].astype("Float64")
    table["dimension"] = [_dimension(key, group) for key, group in zip(table["key"], table["group"], strict=True)]
    table["rank"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
    for spec in specs.values():
        if spec.ranked:
            mask = (table["indicator"] == spec.name) & (table["group"] == "") & (table["value"] > 0)
            # "Competition" ranking: tied options share the best rank, the next one skips (1, 2, 2, 4).
            table.loc[mask, "rank"] = table.loc[mask, "value"].rank(method="min", ascending=False).astype("Int64")
    return table


def _dimension(key: object, group: str) -> str:
    parts = [] if key is None or (isinstance(key, float) and math.isnan(key)) else [f"option={key}"]
    if group:
        parts.append(group)
    return ";".join(parts)


@dataclass(frozen=True)
class Story:
    """A free-text answer, quoted as written."""

    partnership_code: str
    partnership_name: str
    acronym: str | None
    attributes: dict[str, str]
    question: str
    text: str


@dataclass(frozen=True)
class _RowPositions:
    """Where the rows of an indicator table are: the first row of each (indicator, dimension) and of each
    (question, statistic, dimension), and every row of each (question, statistic), in table order. A missing
    question is None."""

    by_indicator: dict[tuple[str, str], int]
    by_stat_and_dimension: dict[tuple[str | None, str, str], int]
    by_stat: dict[tuple[str | None, str], list[int]]

    @classmethod
    def of(cls, table: pd.DataFrame) -> _RowPositions:
        positions = cls({}, {}, {})
        questions = table["question"].astype(object).where(table["question"].notna(), None)
        for position, (indicator, question, stat, dimension) in enumerate(
            zip(table["indicator"], questions, table["stat"], table["dimension"], strict=True)
        ):
            positions.by_indicator.setdefault((indicator, dimension), position)
            positions.by_stat_and_dimension.setdefault((question, stat, dimension), position)
            positions.by_stat.setdefault((question, stat), []).append(position)
        return positions


@dataclass(frozen=True)
class IndicatorReport:
    """The indicators of a round compared with the previous round, plus what the summary quotes.

    ``table`` holds TABLE_COLUMNS plus ``question``, ``stat`` (what the row measures), ``unit`` and ``hidden``
    (declared hidden: not published, still available to the narrative)."""

    year: int
    previous_year: int | None
    questionnaire: Questionnaire
    table: pd.DataFrame
    stories: tuple[Story, ...]
    new_questions: tuple[str, ...]

    def value(self, indicator: str, dimension: str = "") -> float | None:
        row = self.row(indicator, dimension)
        return None if row is None else _float(row["value"])

    def row(self, indicator: str, dimension: str = "") -> pd.Series | None:
        position = self._positions.by_indicator.get((indicator, dimension))
        return None if position is None else self.table.iloc[position]

    def rows(self, indicator: str) -> pd.DataFrame:
        return self.table[self.table["indicator"] == indicator]

    def stat_rows(self, question: str | None, stat: str) -> pd.DataFrame:
        """The rows of one statistic of one question, whatever the indicator is published as."""
        return self.table.iloc[self._positions.by_stat.get((question, stat), [])]

    def stat_row(self, question: str | None, stat: str, dimension: str = "") -> pd.Series | None:
        position = self._positions.by_stat_and_dimension.get((question, stat, dimension))
        return None if position is None else self.table.iloc[position]

    @cached_property
    def _positions(self) -> _RowPositions:
        # A summary looks rows up hundreds of times; each lookup used to compare whole columns of the table.
        return _RowPositions.of(self.table)

    def records(self) -> list[dict[str, object]]:
        """The published table as plain records (CSV columns), None for missing values."""
        frame = self.table.loc[~self.table["hidden"], TABLE_COLUMNS].astype(object)
        return frame.where(frame.notna(), None).to_dict("records")


def compare(current: pd.DataFrame, previous: pd.DataFrame | None, *, year: int,
            previous_columns_: Mapping[str, Column] | None,
            questionnaire: Questionnaire | None = None) -> pd.DataFrame:
    """Join each current row with the previous round's row of the same indicator and dimension (in current codes);
    add options that were chosen before and are not any more; mark what cannot be compared."""
    table = current.copy()
    if previous is None:
        for name in ("previous_value", "previous_denominator", "change", "change_pct"):
            table[name] = pd.Series(pd.NA, index=table.index, dtype="Float64")
        table["previous_rank"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
        table["comparison"] = "first_round"
    else:
        assert previous_columns_ is not None
        before = previous[["indicator", "dimension", "value", "denominator", "rank"]].rename(
            columns={"value": "previous_value", "denominator": "previous_denominator", "rank": "previous_rank"}
        )
        table = table.merge(before, on=["indicator", "dimension"], how="left", indicator="_previous_row")
        comparable_question = table["question"].isna() | table["question"].isin(list(previous_columns_))
        table["comparison"] = np.where(comparable_question, "comparable", "new")
        for code, column in previous_columns_.items():
            if column.previous_options is None:
                continue
            new_option = (table["question"] == code) & table["key"].notna() & ~table["key"].isin(
                list(column.previous_options))
            table.loc[new_option, "comparison"] = "new"
        # An option offered both times but chosen by nobody last time was a real zero.
        option_row = table["key"].notna() & (table["comparison"] == "comparable")
        # (An option row the previous round has, with no value - a share of nobody - stays unknown.)
        added = option_row & (table["_previous_row"] == "left_only")
        table = table.drop(columns="_previous_row")
        previous_base = previous[previous["key"].notna()].drop_duplicates(["indicator", "group"])
        base_of = {(i, g): d for i, g, d in zip(previous_base["indicator"], previous_base["group"],
                                                previous_base["denominator"], strict=True)}
        share = table["indicator"].str.endswith("_share")
        table.loc[added, "previous_value"] = 0.0
        table.loc[added, "previous_denominator"] = pd.array(
            [base_of.get((i, g)) for i, g in zip(table.loc[added, "indicator"], table.loc[added, "group"],
                                                 strict=True)], dtype="Float64")
        table.loc[added & (table["value"] > 0) & (table["group"] == "") & ~share, "comparison"] = "added"
        dropped = _dropped_rows(table, previous)
        table = pd.concat([table, dropped], ignore_index=True) if not dropped.empty else table
        new = table["comparison"] == "new"
        table.loc[new, ["previous_value", "previous_denominator"]] = pd.NA
        table.loc[new, "previous_rank"] = pd.NA
        table["change"] = (table["value"] - table["previous_value"]).astype("Float64")
        ratio = table["change"] / table["previous_value"].where(table["previous_value"] != 0)
        table["change_pct"] = (100.0 * ratio).astype("Float64")
    table["rank_change"] = (table["previous_rank"] - table["rank"]).astype("Int64")
    table["round_year"] = year
    table = _with_turnover(table, has_previous=previous is not None, questionnaire=questionnaire)
    return table[[*TABLE_COLUMNS, "question", "position"]].reset_index(drop=True)


def _dropped_rows(table: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Previous overall option rows (chosen at least once) with no current row: chosen by nobody this round."""
    counts = previous[previous["key"].notna() & (previous["group"] == "") & (previous["value"] > 0)
                      & ~previous["indicator"].str.endswith("_share")]
    present = set(zip(table["indicator"], table["dimension"], strict=True))
    keep = np.array([(i, d) not in present for i, d in zip(counts["indicator"], counts["dimension"], strict=True)],
                    dtype=bool)
    missing = counts[keep]
    asked = set(table["question"].dropna())
    missing = missing[missing["question"].isin(list(asked))]
    if missing.empty:
        return missing.iloc[0:0]
    overall = table[(table["group"] == "") & table["key"].notna()].drop_duplicates("indicator")
    denominator_of = dict(zip(overall["indicator"], overall["denominator"], strict=True))
    return pd.DataFrame({
        "indicator": missing["indicator"].to_numpy(),
        "key": missing["key"].to_numpy(),
        "group": "",
        "value": pd.array([0.0] * len(missing), dtype="Float64"),
        "denominator": pd.array([denominator_of.get(i) for i in missing["indicator"]], dtype="Float64"),
        "question": missing["question"].to_numpy(),
        "dimension": missing["dimension"].to_numpy(),
        "position": 10**6,
        "rank": pd.array([pd.NA] * len(missing), dtype="Int64"),
        "previous_value": missing["value"].to_numpy(),
        "previous_denominator": missing["denominator"].to_numpy(),
        "previous_rank": missing["rank"].astype("Int64").to_numpy(),
        "comparison": "dropped",
    })


def _with_turnover(table: pd.DataFrame, *, has_previous: bool, questionnaire: Questionnaire | None) -> pd.DataFrame:
    """``<code>_new`` and ``<code>_dropped`` of every select question: options chosen this round and not the
    previous one, and the reverse (unknown in a first round)."""
    if questionnaire is None:
        return table
    extra = []
    for question in questionnaire.indicator_fields:
        if not question.is_select:
            continue
        options = table[(table["indicator"] == question.code) & (table["group"] == "")]
        if options.empty:
            continue
        comparable = has_previous and not (options["comparison"] == "new").all()
        for suffix, status in (("_new", "added"), ("_dropped", "dropped")):
            count = float((options["comparison"] == status).sum()) if comparable else None
            extra.append({
                "round_year": table["round_year"].iloc[0], "indicator": question.code + suffix, "dimension": "",
                "key": None, "group": "", "value": count, "question": question.code, "position": 0,
                "comparison": ("comparable" if comparable else "new") if has_previous else "first_round",
            })
    if extra:
        table = pd.concat([table, pd.DataFrame(extra)], ignore_index=True)
    table["value"] = table["value"].astype("Float64")
    return table


def compute_report(session: Session, year: int) -> IndicatorReport:
    """Compute every indicator of round ``year`` and compare it with the previous round."""
    round_ = get_round(session, year)
    data = _load(session, round_)
    before = previous_round(session, year)
    previous_data = _load(session, before) if before is not None else None
    # A previous round without any accepted response gives nothing to compare with (only "0 of 0").
    if previous_data is not None and len(previous_data.answers) == 0:
        previous_data = None
    return report_from_data(data, previous_data, stories=_stories(session, round_, data.questionnaire))


def report_from_data(data: RoundData, previous_data: RoundData | None, *,
                     stories: tuple[Story, ...] = ()) -> IndicatorReport:
    """The compared indicator table of one round (and the previous one, if any) held in frames."""
    questionnaire = data.questionnaire
    current = compute_values(data, _current_columns(questionnaire), questionnaire)
    previous_table = None
    columns = None
    new_questions: tuple[str, ...] = ()
    if previous_data is not None:
        columns = previous_columns(questionnaire, previous_data.questionnaire)
        previous_table = compute_values(previous_data, columns, questionnaire)
        new_questions = tuple(field.code for field in questionnaire.indicator_fields if field.code not in columns)
    table = compare(current, previous_table, year=data.year, previous_columns_=columns, questionnaire=questionnaire)
    table = _published(_sorted(table, questionnaire), questionnaire)
    return IndicatorReport(
        year=data.year,
        previous_year=previous_data.year if previous_data is not None else None,
        questionnaire=questionnaire,
        table=table,
        stories=stories,
        new_questions=new_questions,
    )


def _published(table: pd.DataFrame, questionnaire: Questionnaire) -> pd.DataFrame:
    """Add what each row measures (``stat``, ``unit``), apply the questionnaire's renames and hidden list."""
    specs = {spec.name: spec for spec in indicator_specs(questionnaire)}
    table = table.copy()
    table["stat"] = table["indicator"].map({name: spec.stat for name, spec in specs.items()})
    table["unit"] = table["indicator"].map({name: spec.unit for name, spec in specs.items()})
    table["label"] = table["indicator"].map({name: spec.label for name, spec in specs.items()})
    section = questionnaire.indicators
    hidden = set(section.hide) if section else set()
    table["hidden"] = table["indicator"].isin(list(hidden))
    if section and section.rename:
        table["indicator"] = table["indicator"].map(lambda name: section.rename.get(name, name))
    return table


def _sorted(table: pd.DataFrame, questionnaire: Questionnaire) -> pd.DataFrame:
    """A stable, meaningful order: questionnaire order, overall before each group, then rank / option order."""
    order = {spec.name: position for position, spec in enumerate(indicator_specs(questionnaire))}
    attributes = questionnaire.breakdown_by

    def group_key(group: str) -> tuple[object, ...]:
        attribute, _, value = group.partition("=")
        return (attributes.index(attribute) if attribute in attributes else len(attributes), _natural(value))

    groups = sorted({g for g in table["group"] if g}, key=group_key)
    group_order = {g: i + 1 for i, g in enumerate(groups)}
    group_order[""] = 0
    table = table.assign(
        _order=table["indicator"].map(order).fillna(len(order)),
        _group=table["group"].map(group_order),
        _rank=table["rank"].fillna(10**6),
        _position=table["position"].fillna(10**6),
    )
    table = table.sort_values(["_order", "_group", "_rank", "_position", "dimension"], kind="stable")
    return table.drop(columns=["_order", "_group", "_rank", "_position"]).reset_index(drop=True)


def _stories(session: Session, round_: Round, questionnaire: Questionnaire) -> tuple[Story, ...]:
    text_codes = [q.code for q in questionnaire.questions if q.kind == "text"]
    if not text_codes:
        return ()
    rows = session.execute(
        select(Partnership.code, Partnership.name, Partnership.attributes, RoundParticipant.attributes,
               Response.answers, Response.response_key)
        # Outer: an anonymous round's responses have no partnership, and their texts are quoted all the same.
        .outerjoin(Partnership, Partnership.id == Response.partnership_id)
        .outerjoin(RoundParticipant, (RoundParticipant.round_id == Response.round_id)
                   & (RoundParticipant.partnership_id == Response.partnership_id))
        .where(Response.round_id == round_.id, Response.status == "accepted")
        .order_by(Partnership.code, Response.response_key)
    ).all()
    stories = []
    for code, name, attributes, snapshot, answers, response_key in rows:
        if code is None:
            code, name = f"response {response_key}", f"an anonymous {questionnaire.respondent.singular}"
        for text_code in text_codes:
            text = (answers or {}).get(text_code)
            if isinstance(text, str) and text.strip():
                stories.append(Story(code, name, (attributes or {}).get("acronym") or None, dict(snapshot or {}),
                                     text_code, text.strip()))
    return tuple(stories)


# --------------------------------------------------------------------------------------------------------------
# Storage


def store_report(session: Session, report: IndicatorReport) -> int:
    """Upsert the round's indicator values per (round, indicator, dimension) and remove the ones that no longer
    exist (e.g. an option nobody chooses after a correction). Returns the number of rows stored."""
    round_ = get_round(session, report.year)
    existing = {
        (row.indicator, row.dimension): row
        for row in session.scalars(select(IndicatorValue).where(IndicatorValue.round_id == round_.id))
    }
    wanted = set()
    for record in report.records():
        key = (str(record["indicator"]), str(record["dimension"]))
        wanted.add(key)
        row = existing.get(key)
        if row is None:
            row = IndicatorValue(round_id=round_.id, indicator=key[0], dimension=key[1])
            session.add(row)
        row.value = _float(record["value"])
        row.denominator = _float(record["denominator"])
        row.rank = _int(record["rank"])
        row.previous_value = _float(record["previous_value"])
        row.previous_rank = _int(record["previous_rank"])
        row.change = _float(record["change"])
        row.comparison = str(record["comparison"])
    for key, row in existing.items():
        if key not in wanted:
            session.delete(row)
    session.flush()
    return len(wanted)


def _int(value: object) -> int | None:
    return None if value is None or value is pd.NA else int(value)  # type: ignore[call-overload]


def stored_count(session: Session, year: int) -> int:
    round_ = get_round(session, year)
    return int(session.scalar(select(func.count()).where(IndicatorValue.round_id == round_.id)) or 0)


def format_number(value: object) -> str:
    """Numbers as the CSV and tables show them: integers without decimals, others with at most 4 decimals."""
    number = _float(value)
    if number is None:
        return ""
    if number == int(number) and abs(number) < 1e15:
        return str(int(number))
    return f"{number:.4f}".rstrip("0").rstrip(".")
