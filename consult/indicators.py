"""Indicators of a round, declared in one place, computed with vectorised pandas from the accepted responses,
compared with the previous round and stored in ``indicator_values``.

Comparisons are made on stable codes: the previous round's answers are read through the current questionnaire's
``previous_code`` mappings (renamed questions and options), so that 2019's ``joint_events`` is compared with 2020's
``joint_business_events``. A question (or option) that the previous questionnaire did not ask is marked ``new``:
its previous value is unknown, not zero.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    "strand",
]


# --------------------------------------------------------------------------------------------------------------
# The data of one round


@dataclass(frozen=True)
class RoundData:
    """One round as frames: who was consulted (``participants``: partnership_id, strand) and the accepted answers
    (``answers``: partnership_id, strand, one column per question code)."""

    year: int
    questionnaire: Questionnaire
    participants: pd.DataFrame
    answers: pd.DataFrame
    # Intermediate frames shared by several indicators of one question (e.g. the exploded markets).
    cache: dict[tuple[object, ...], pd.DataFrame] = field(default_factory=dict, compare=False, repr=False)


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
    round_ = get_round(session, year)
    return _load(session, round_)


def _load(session: Session, round_: Round) -> RoundData:
    questionnaire = round_questionnaire(round_)
    participants = pd.DataFrame(
        [(pid, int(attributes["strand"]) if (attributes or {}).get("strand") else None)
         for pid, attributes in session.execute(
            select(RoundParticipant.partnership_id, RoundParticipant.attributes).where(
                RoundParticipant.round_id == round_.id))],
        columns=["partnership_id", "strand"],
    )
    rows = session.execute(
        select(Response.partnership_id, Response.answers)
        .where(Response.round_id == round_.id, Response.status == "accepted")
        .order_by(Response.partnership_id)
    ).all()
    return build_round_data(round_.year, questionnaire, participants, [r.partnership_id for r in rows],
                            [r.answers or {} for r in rows])


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
    frame = frame.reindex(columns=list(questionnaire.codes)).reset_index(drop=True)
    frame.insert(0, "partnership_id", np.asarray(partnership_ids, dtype="int64"))
    duplicated = frame["partnership_id"].duplicated()
    if duplicated.any():
        pid = int(frame.loc[duplicated, "partnership_id"].iloc[0])
        raise ConsultError(f"round {year}: partnership id {pid} has more than one accepted response")
    strands = participants.set_index("partnership_id")["strand"]
    frame.insert(1, "strand", frame["partnership_id"].map(strands).astype("Int64"))
    return RoundData(year=year, questionnaire=questionnaire, participants=participants, answers=frame)


# --------------------------------------------------------------------------------------------------------------
# Computations (each returns rows: dimension key, strand, value, denominator)


Rows = list[dict[str, object]]
Compute = Callable[[RoundData, "Column | None"], Rows]


def _strands(data: RoundData) -> list[int]:
    return sorted(int(s) for s in data.participants["strand"].dropna().unique())


def _row(key: str | None, strand: int | None, value: float | None, denominator: float | None = None) -> dict:
    return {"key": key, "strand": strand, "value": value, "denominator": denominator}


def _consulted(data: RoundData, _column: Column | None) -> Rows:
    by_strand = data.participants.groupby("strand").size()
    return [_row(None, None, float(len(data.participants)))] + [
        _row(None, int(s), float(by_strand.get(s, 0))) for s in _strands(data)
    ]


def _responses(data: RoundData, _column: Column | None) -> Rows:
    consulted = data.participants.groupby("strand").size()
    answered = data.answers.groupby("strand").size()
    return [_row(None, None, float(len(data.answers)), float(len(data.participants)))] + [
        _row(None, s, float(answered.get(s, 0)), float(consulted.get(s, 0))) for s in _strands(data)
    ]


def _response_rate(data: RoundData, column: Column | None) -> Rows:
    return [
        {**row, "value": _percent(row["value"], row["denominator"])}  # type: ignore[arg-type]
        for row in _responses(data, column)
    ]


def _percent(part: float, whole: float | None) -> float | None:
    return None if not whole else 100.0 * part / whole


def _exploded(data: RoundData, column: Column) -> pd.DataFrame:
    """One row per (response, selected option) in current codes, each option counted once per response.

    Options are factorised to integer codes so that de-duplication and grouping never hash strings row by row."""
    key = ("exploded", column.name, tuple(sorted(column.option_map.items())))
    if key in data.cache:
        return data.cache[key]
    values = data.answers[column.name]
    exploded = values[values.notna()].explode().dropna()
    positions = exploded.index.to_numpy(dtype="int64")
    codes, uniques = pd.factorize(exploded.to_numpy(dtype=object))
    labels = np.array([column.option_map.get(str(u), str(u)) for u in uniques], dtype=object)
    categories, inverse = np.unique(labels, return_inverse=True) if len(labels) else (labels, codes[:0])
    codes = inverse[codes] if len(codes) else codes
    # An option listed twice in one answer (or two old codes merged into one) counts once for that partnership.
    keep = ~pd.Index(positions * max(len(categories), 1) + codes).duplicated()
    frame = pd.DataFrame({
        "response": positions[keep],
        "strand": data.answers["strand"].array.take(positions[keep]),
        "option": pd.Categorical.from_codes(codes[keep], categories=[str(c) for c in categories]),
    })
    data.cache[key] = frame
    return frame


def _answered(data: RoundData, column: Column) -> pd.Series:
    """Number of responses that answered the question, by strand."""
    mask = data.answers[column.name].notna()
    return mask.groupby(data.answers["strand"]).sum()


def _option_counts(data: RoundData, column: Column) -> Rows:
    exploded = _exploded(data, column)
    counts = exploded.groupby("option", observed=True).size()
    denominator = float(data.answers[column.name].notna().sum())
    return [_row(str(option), None, float(count), denominator) for option, count in counts.items()]


def _option_counts_by_strand(data: RoundData, column: Column) -> Rows:
    exploded = _exploded(data, column)
    counts = exploded.groupby(["option", "strand"], observed=True).size()
    answered = _answered(data, column)
    offered = _offered(column, exploded)
    rows = _option_counts(data, column)
    rows += [
        _row(option, s, float(counts.get((option, s), 0)), float(answered.get(s, 0)))
        for option in offered
        for s in _strands(data)
    ]
    # Options nobody chose still belong in the table (0 of n), so that a drop to zero is visible.
    seen = {row["key"] for row in rows if row["strand"] is None}
    total = float(data.answers[column.name].notna().sum())
    rows += [_row(option, None, 0.0, total) for option in offered if option not in seen]
    return rows


def _offered(column: Column, exploded: pd.DataFrame) -> list[str]:
    if isinstance(column.question.options, list):
        return [option.code for option in column.question.options]
    return sorted(str(option) for option in exploded["option"].unique())


def _distinct_options(data: RoundData, column: Column) -> Rows:
    return [_row(None, None, float(_exploded(data, column)["option"].nunique()))]


def _selections(data: RoundData, column: Column) -> Rows:
    denominator = float(data.answers[column.name].notna().sum())
    return [_row(None, None, float(len(_exploded(data, column))), denominator)]


def _numbers(data: RoundData, column: Column) -> pd.DataFrame:
    key = ("numbers", column.name)
    if key not in data.cache:
        data.cache[key] = _to_numbers(data, column)
    return data.cache[key]


def _to_numbers(data: RoundData, column: Column) -> pd.DataFrame:
    values = data.answers[column.name]
    try:
        numbers = pd.to_numeric(values, errors="raise")
    except (ValueError, TypeError) as error:
        raise ConsultError(
            f"round {data.year}: question {column.question.code}: an accepted answer is not a number ({error})"
        ) from None
    return pd.DataFrame({"strand": data.answers["strand"], "n": numbers.astype("Float64")}).dropna(subset=["n"])


def _number_stat(stat: str) -> Compute:
    def compute(data: RoundData, column: Column | None) -> Rows:
        assert column is not None
        numbers = _numbers(data, column)
        overall = numbers["n"].agg([stat, "count"])
        grouped = numbers.groupby("strand")["n"].agg([stat, "count"])
        rows = [_row(None, None, _float(overall[stat]), float(overall["count"]))]
        for s in _strands(data):
            if s in grouped.index:
                rows.append(_row(None, s, _float(grouped.loc[s, stat]), float(grouped.loc[s, "count"])))
            else:
                rows.append(_row(None, s, None, 0.0))
        return rows

    return compute


def _float(value: object) -> float | None:
    if value is None or value is pd.NA:
        return None
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


def _yes(data: RoundData, column: Column) -> pd.DataFrame:
    key = ("yes", column.name)
    if key not in data.cache:
        data.cache[key] = _to_yes(data, column)
    return data.cache[key]


def _to_yes(data: RoundData, column: Column) -> pd.DataFrame:
    values = data.answers[column.name]
    try:
        # Typed answers are booleans (or None): converted without a Python call per row.
        yes = pd.Series(pd.array(values.to_numpy(dtype=object), dtype="boolean"), index=values.index).astype("Float64")
    except (TypeError, ValueError):
        # "yes"/"no" strings are tolerated for answers stored by older ingests; anything else is an error.
        yes = values.map({True: 1.0, False: 0.0, "yes": 1.0, "no": 0.0}, na_action="ignore")
        unknown = values.notna() & yes.isna()
        if unknown.any():
            raise ConsultError(
                f"round {data.year}: question {column.question.code}: answer {values[unknown].iloc[0]!r} "
                "is not yes/no"
            ) from None
    return pd.DataFrame({"strand": data.answers["strand"], "yes": yes}).dropna(subset=["yes"])


def _yes_count(data: RoundData, column: Column | None) -> Rows:
    assert column is not None
    yes = _yes(data, column)
    return [_row(None, None, float(yes["yes"].sum()), float(len(yes)))]


def _yes_share(data: RoundData, column: Column | None) -> Rows:
    return [{**row, "value": _percent(row["value"], row["denominator"])}  # type: ignore[arg-type]
            for row in _yes_count(data, column)]


def _texts(data: RoundData, column: Column | None) -> Rows:
    assert column is not None
    texts = data.answers[column.name].astype("string").str.strip()
    return [_row(None, None, float((texts.fillna("") != "").sum()), float(len(data.answers)))]


# --------------------------------------------------------------------------------------------------------------
# The declaration


@dataclass(frozen=True)
class Indicator:
    """One indicator: what it is called, which question it reads, what it is split by and how it is computed."""

    name: str
    label: str
    question: str | None
    dimension: str  # what the rows are split by: "" (one value), "strand", "market", "activity;strand"
    compute: Compute | None  # None: derived from the comparison with the previous round
    unit: Unit = "count"
    ranked: bool = False  # rank the overall rows (descending, ties share the lowest rank)


INDICATORS: tuple[Indicator, ...] = (
    Indicator("consulted", "Partnerships consulted", None, "strand", _consulted),
    Indicator("responses", "Responses collected", None, "strand", _responses),
    Indicator("response_rate", "Response rate", None, "strand", _response_rate, unit="percent"),
    Indicator("market_partnerships", "Partnerships selecting the market", "markets", "market",
              _option_counts, ranked=True),
    Indicator("markets_distinct", "Distinct markets selected", "markets", "", _distinct_options),
    Indicator("market_selections", "Market selections", "markets", "", _selections),
    Indicator("sme_involvement", "Partnerships involving SMEs in the activity", "sme_involvement",
              "activity;strand", _option_counts_by_strand),
    Indicator("cooperation_agreements_total", "Cooperation agreements signed", "cooperation_agreements",
              "strand", _number_stat("sum")),
    Indicator("cooperation_agreements_mean", "Cooperation agreements per partnership (mean)",
              "cooperation_agreements", "strand", _number_stat("mean"), unit="number"),
    Indicator("cooperation_agreements_median", "Cooperation agreements per partnership (median)",
              "cooperation_agreements", "strand", _number_stat("median"), unit="number"),
    Indicator("business_missions_planned_yes", "Partnerships planning business missions beyond Europe",
              "business_missions_planned", "", _yes_count),
    Indicator("business_missions_planned_share", "Share planning business missions beyond Europe",
              "business_missions_planned", "", _yes_share, unit="percent"),
    Indicator("sme_members_total", "SME members actively involved", "sme_members", "strand",
              _number_stat("sum")),
    Indicator("sme_members_mean", "SME members per partnership (mean)", "sme_members", "strand",
              _number_stat("mean"), unit="number"),
    Indicator("sme_members_median", "SME members per partnership (median)", "sme_members", "strand",
              _number_stat("median"), unit="number"),
    Indicator("digital_tools_yes", "Partnerships using digital matchmaking tools", "digital_tools", "",
              _yes_count),
    Indicator("digital_tools_share", "Share using digital matchmaking tools", "digital_tools", "", _yes_share,
              unit="percent"),
    Indicator("success_stories", "Success stories shared", "success_story", "", _texts),
)

# Computed from the comparison of the ranked market rows, not from the answers.
MARKETS_NEW = Indicator("markets_new", "Markets selected this round, not the previous one", "markets", "", None)
MARKETS_DROPPED = Indicator("markets_dropped", "Markets selected the previous round, not this one", "markets", "",
                            None)
MARKET_INDICATOR = "market_partnerships"

BY_NAME: dict[str, Indicator] = {i.name: i for i in (*INDICATORS, MARKETS_NEW, MARKETS_DROPPED)}


def dimension_of(indicator: Indicator, key: str | None, strand: int | None) -> str:
    """The stored dimension: ``""``, ``strand=1``, ``market=US``, ``activity=business_contacts;strand=1``."""
    parts = []
    names = [name for name in indicator.dimension.split(";") if name and name != "strand"]
    if key is not None and names:
        parts.append(f"{names[0]}={key}")
    if strand is not None:
        parts.append(f"strand={strand}")
    return ";".join(parts)


# --------------------------------------------------------------------------------------------------------------
# Computing a round and comparing it with the previous one


def _current_columns(questionnaire: Questionnaire) -> dict[str, Column]:
    return {q.code: Column(question=q, name=q.code) for q in questionnaire.questions}


def _resolve(indicator: Indicator, questionnaire: Questionnaire) -> Question | None:
    """The question an indicator reads, by its stable code (or by the code it had before a rename)."""
    if indicator.question is None:
        return None
    for question in questionnaire.questions:
        if indicator.question in (question.code, question.previous_code):
            return question
    return None


def previous_columns(current: Questionnaire, previous: Questionnaire) -> dict[str, Column]:
    """For each current question the previous round also asked: where its answers sit in the previous frame and
    how the previous option codes translate into the current ones (``previous_code`` mappings)."""
    columns: dict[str, Column] = {}
    previous_codes = set(previous.codes)
    for question in current.questions:
        old_code = question.previous_code or question.code
        if old_code not in previous_codes:
            old_code = question.code if question.code in previous_codes else ""
        if not old_code:
            continue
        option_map: dict[str, str] = {}
        previous_options: frozenset[str] | None = None
        if isinstance(question.options, list):
            option_map = {question.previous_option_code(o.code): o.code for o in question.options
                          if question.previous_option_code(o.code) != o.code}
            old_options = previous.question(old_code).option_codes
            previous_options = frozenset(option_map.get(code, code) for code in old_options)
        columns[question.code] = Column(question=question, name=old_code, option_map=option_map,
                                        previous_options=previous_options)
    return columns


def compute_values(data: RoundData, columns: Mapping[str, Column], questionnaire: Questionnaire) -> pd.DataFrame:
    """All declared indicators of one round, in current codes (``columns``), one row per indicator and dimension."""
    frames = []
    for indicator in INDICATORS:
        question = _resolve(indicator, questionnaire)
        if indicator.question is not None and (question is None or question.code not in columns):
            continue
        column = columns[question.code] if question is not None else None
        assert indicator.compute is not None
        rows = pd.DataFrame(indicator.compute(data, column), columns=["key", "strand", "value", "denominator"])
        rows.insert(0, "indicator", indicator.name)
        rows["question"] = question.code if question is not None else None
        frames.append(rows)
    table = pd.concat(frames, ignore_index=True)
    table["strand"] = table["strand"].astype("Int64")
    table["value"] = table["value"].astype("Float64")
    table["denominator"] = table["denominator"].astype("Float64")
    table["dimension"] = [
        dimension_of(BY_NAME[name], None if pd.isna(key) else str(key), None if pd.isna(s) else int(s))
        for name, key, s in zip(table["indicator"], table["key"], table["strand"], strict=True)
    ]
    table["rank"] = pd.Series(pd.NA, index=table.index, dtype="Int64")
    for indicator in INDICATORS:
        if indicator.ranked:
            mask = (table["indicator"] == indicator.name) & table["strand"].isna() & (table["value"] > 0)
            # "Competition" ranking: tied markets share the best rank, the next one skips (1, 2, 2, 4).
            table.loc[mask, "rank"] = table.loc[mask, "value"].rank(method="min", ascending=False).astype("Int64")
    return table


@dataclass(frozen=True)
class Story:
    partnership_code: str
    partnership_name: str
    acronym: str | None
    strand: int | None
    text: str


@dataclass(frozen=True)
class IndicatorReport:
    """The indicators of a round compared with the previous round, plus what the summary quotes."""

    year: int
    previous_year: int | None
    questionnaire: Questionnaire
    table: pd.DataFrame  # TABLE_COLUMNS + question
    stories: tuple[Story, ...]
    new_questions: tuple[str, ...]

    def value(self, indicator: str, dimension: str = "") -> float | None:
        row = self.row(indicator, dimension)
        return None if row is None else _float(row["value"])

    def row(self, indicator: str, dimension: str = "") -> pd.Series | None:
        match = self.table[(self.table["indicator"] == indicator) & (self.table["dimension"] == dimension)]
        return None if match.empty else match.iloc[0]

    def rows(self, indicator: str) -> pd.DataFrame:
        return self.table[self.table["indicator"] == indicator]

    def records(self) -> list[dict[str, object]]:
        """The table as plain records (CSV columns), None for missing values."""
        frame = self.table[TABLE_COLUMNS].astype(object)
        return frame.where(frame.notna(), None).to_dict("records")


def compare(current: pd.DataFrame, previous: pd.DataFrame | None, *, year: int,
            previous_columns_: Mapping[str, Column] | None) -> pd.DataFrame:
    """Join each current row with the previous round's row of the same indicator and dimension (in current codes);
    add markets that were selected before and are not any more; mark what cannot be compared."""
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
        table = table.merge(before, on=["indicator", "dimension"], how="left")
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
        added = option_row & table["previous_value"].isna()
        table.loc[added, "previous_value"] = 0.0
        previous_base = previous[previous["strand"].isna() & previous["key"].notna()].drop_duplicates("indicator")
        base_of = dict(zip(previous_base["indicator"], previous_base["denominator"], strict=True))
        table.loc[added, "previous_denominator"] = table.loc[added, "indicator"].map(base_of).astype("Float64")
        table.loc[added & (table["value"] > 0), "comparison"] = "added"
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
    table = _with_market_turnover(table, has_previous=previous is not None)
    return table[[*TABLE_COLUMNS, "question"]].reset_index(drop=True)


def _dropped_rows(table: pd.DataFrame, previous: pd.DataFrame) -> pd.DataFrame:
    """Previous overall option rows (chosen at least once) with no current row: chosen by nobody this round."""
    options_before = previous[previous["key"].notna() & previous["strand"].isna() & (previous["value"] > 0)]
    present = set(zip(table["indicator"], table["dimension"], strict=True))
    keep = np.array([(i, d) not in present for i, d in
                     zip(options_before["indicator"], options_before["dimension"], strict=True)], dtype=bool)
    missing = options_before[keep]
    asked = set(table["question"].dropna())
    missing = missing[missing["question"].isin(list(asked))]
    if missing.empty:
        return missing.iloc[0:0]
    overall = table[table["strand"].isna() & table["key"].notna()].drop_duplicates("indicator")
    denominator_of = dict(zip(overall["indicator"], overall["denominator"], strict=True))
    return pd.DataFrame({
        "indicator": missing["indicator"].to_numpy(),
        "key": missing["key"].to_numpy(),
        "strand": pd.array([pd.NA] * len(missing), dtype="Int64"),
        "value": pd.array([0.0] * len(missing), dtype="Float64"),
        "denominator": pd.array([denominator_of.get(i) for i in missing["indicator"]], dtype="Float64"),
        "question": missing["question"].to_numpy(),
        "dimension": missing["dimension"].to_numpy(),
        "rank": pd.array([pd.NA] * len(missing), dtype="Int64"),
        "previous_value": missing["value"].to_numpy(),
        "previous_denominator": missing["denominator"].to_numpy(),
        "previous_rank": missing["rank"].astype("Int64").to_numpy(),
        "comparison": "dropped",
    })


def _with_market_turnover(table: pd.DataFrame, *, has_previous: bool) -> pd.DataFrame:
    markets = table[table["indicator"] == MARKET_INDICATOR]
    if markets.empty:
        return table
    extra = []
    for indicator, status in ((MARKETS_NEW, "added"), (MARKETS_DROPPED, "dropped")):
        count = float((markets["comparison"] == status).sum()) if has_previous else None
        extra.append({
            "round_year": table["round_year"].iloc[0], "indicator": indicator.name, "dimension": "",
            "value": count, "question": markets["question"].iloc[0],
            "comparison": "comparable" if has_previous else "first_round",
        })
    return pd.concat([table, pd.DataFrame(extra)], ignore_index=True)


def compute_report(session: Session, year: int) -> IndicatorReport:
    """Compute every declared indicator of round ``year`` and compare it with the previous round."""
    round_ = get_round(session, year)
    data = _load(session, round_)
    questionnaire = data.questionnaire
    current = compute_values(data, _current_columns(questionnaire), questionnaire)
    before = previous_round(session, year)
    previous_data = _load(session, before) if before is not None else None
    previous_table = None
    columns = None
    new_questions: tuple[str, ...] = ()
    # A previous round without any accepted response gives nothing to compare with (only "0 of 0").
    if previous_data is not None and len(previous_data.answers) == 0:
        previous_data = None
    if previous_data is not None:
        columns = previous_columns(questionnaire, previous_data.questionnaire)
        previous_table = compute_values(previous_data, columns, questionnaire)
        new_questions = tuple(code for code in questionnaire.codes if code not in columns)
    table = compare(current, previous_table, year=year, previous_columns_=columns)
    table = _sorted(table)
    return IndicatorReport(
        year=year,
        previous_year=previous_data.year if previous_data is not None else None,
        questionnaire=questionnaire,
        table=table,
        stories=_stories(session, round_, questionnaire),
        new_questions=new_questions,
    )


def _sorted(table: pd.DataFrame) -> pd.DataFrame:
    """A stable, meaningful order: declaration order, then rank / value, then dimension."""
    order = {name: position for position, name in enumerate(BY_NAME)}
    table = table.assign(
        _order=table["indicator"].map(order),
        _overall=table["strand"].notna().astype(int),
        _rank=table["rank"].fillna(10**6),
        _value=-table["value"].fillna(-1),
    )
    table = table.sort_values(["_order", "_overall", "strand", "_rank", "_value", "dimension"], kind="stable",
                              na_position="first")
    return table.drop(columns=["_order", "_overall", "_rank", "_value"]).reset_index(drop=True)


def _stories(session: Session, round_: Round, questionnaire: Questionnaire) -> tuple[Story, ...]:
    text_codes = [q.code for q in questionnaire.questions if q.kind == "text"]
    if not text_codes:
        return ()
    rows = session.execute(
        select(Partnership.code, Partnership.name, Partnership.attributes, RoundParticipant.attributes, Response.answers)
        .join(Partnership, Partnership.id == Response.partnership_id)
        .outerjoin(RoundParticipant, (RoundParticipant.round_id == Response.round_id)
                   & (RoundParticipant.partnership_id == Response.partnership_id))
        .where(Response.round_id == round_.id, Response.status == "accepted")
        .order_by(Partnership.code)
    ).all()
    stories = []
    for code, name, attributes, snapshot, answers in rows:
        acronym = (attributes or {}).get("acronym")
        strand = int(snapshot["strand"]) if (snapshot or {}).get("strand") else None
        for text_code in text_codes:
            text = (answers or {}).get(text_code)
            if isinstance(text, str) and text.strip():
                stories.append(Story(code, name, acronym, strand, text.strip()))
    return tuple(stories)


# --------------------------------------------------------------------------------------------------------------
# Storage


def store_report(session: Session, report: IndicatorReport) -> int:
    """Upsert the round's indicator values per (round, indicator, dimension) and remove the ones that no longer
    exist (e.g. a market nobody selects after a correction). Returns the number of rows stored."""
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
