"""Cells (strings as exported) -> typed answers, per question kind, vectorised with pandas.

The typed table keeps, per question code ``q``:

- ``q``: the cleaned answer as a string (``<NA>`` when unanswered) — multi-select codes joined with ``;``,
  market codes upper-cased, yes/no spelled ``yes``/``no``; this is what the expectations check;
- ``q__num`` for integer and number questions: the value as a float (``NaN`` when it is not a number).

Nothing is rejected here: deciding what is an error is the expectation suite's job (:mod:`validation`). Fixes
made on the way (a market code in lower case) come back as per-row warnings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import pandas as pd

from consult.questionnaire import ISO3166, Question, Questionnaire

YES = {"yes", "y", "true", "1", "oui", "ja", "si", "sí"}
NO = {"no", "n", "false", "0", "non", "nein"}
INTEGER_PATTERN = r"^[+-]?\d+$"
NUMBER_PATTERN = r"^[+-]?(\d+([.,]\d*)?|[.,]\d+)$"

Reason = dict[str, Any]


@dataclass
class Normalised:
    typed: pd.DataFrame
    warnings: dict[int, list[Reason]] = field(default_factory=dict)


def _add_warnings(target: dict[int, list[Reason]], rows: pd.Series, make: Any) -> None:
    for row_number, value in rows.items():
        target.setdefault(int(row_number), []).append(make(value))  # type: ignore[arg-type]


def _blank_to_na(values: pd.Series) -> pd.Series:
    cleaned = values.astype(str).str.strip()
    return cleaned.where(cleaned != "", pd.NA).astype("str")


def normalise(cells: pd.DataFrame, questionnaire: Questionnaire, *, timezone: str = "UTC") -> Normalised:
    """Type every question column of the canonical cells; columns missing from the file come out empty."""
    typed: dict[str, pd.Series] = {}
    warnings: dict[int, list[Reason]] = {}
    empty = pd.Series(pd.NA, index=cells.index, dtype="str")
    for question in questionnaire.questions:
        values = cells[question.code] if question.code in cells.columns else empty
        typed.update(_normalise_question(question, values, warnings))
    typed["submitted_at"] = parse_timestamps(cells["submitted_at"], timezone)
    return Normalised(typed=pd.DataFrame(typed, index=cells.index), warnings=warnings)


def _normalise_question(question: Question, values: pd.Series, warnings: dict[int, list[Reason]]) -> dict[str, pd.Series]:
    code = question.code
    if question.kind in ("integer", "number"):
        cleaned = _blank_to_na(values)
        as_number = cleaned.str.replace(",", ".", regex=False) if question.kind == "number" else cleaned
        return {code: cleaned, f"{code}__num": pd.to_numeric(as_number, errors="coerce").astype("float64")}
    if question.kind == "multi_select":
        cleaned = _blank_to_na(values).str.replace(r"\s*;\s*", ";", regex=True).str.replace(r";{2,}", ";", regex=True)
        cleaned = cleaned.str.strip(";")
        cleaned = cleaned.where(cleaned != "", pd.NA).astype("str")
        if question.options == ISO3166:
            upper = cleaned.str.upper()
            changed = cleaned.notna() & (upper != cleaned)
            _add_warnings(
                warnings,
                cleaned[changed],
                lambda value, code=code: {
                    "rule": "upper_cased",
                    "column": code,
                    "value": value,
                    "severity": "warning",
                    "message": f"market code(s) {value!r} upper-cased to {value.upper()!r}",
                },
            )
            cleaned = upper
        return {code: cleaned}
    if question.kind == "yes_no":
        cleaned = _blank_to_na(values)
        lowered = cleaned.str.lower()
        spelled = lowered.where(~lowered.isin(YES), "yes")
        spelled = spelled.where(~lowered.isin(NO), "no")
        # Keep an unrecognised answer as typed so the expectation reports it as it was written.
        return {code: spelled.where(lowered.isin(YES | NO), cleaned).astype("str")}
    if question.kind == "single_select":
        return {code: _blank_to_na(values)}
    # Free text is kept exactly as written (HTML, formulas, line breaks): it is escaped wherever it is shown.
    text = values.astype(str)
    return {code: text.where(text.str.strip() != "", pd.NA).astype("str")}


def parse_timestamps(values: pd.Series, timezone: str) -> pd.Series:
    """Submit dates as UTC timestamps; naive ones are local time in ``timezone``. Unparseable -> NaT."""
    text = values.astype(str).str.strip()
    text = text.where(text != "", None)
    parsed = pd.to_datetime(text, errors="coerce", format="ISO8601", utc=False)
    if parsed.isna().sum() > text.isna().sum():
        retry = text.notna() & parsed.isna()
        again = pd.to_datetime(text[retry], errors="coerce", format="mixed", dayfirst=True, utc=False)
        if isinstance(again.dtype, pd.DatetimeTZDtype) != isinstance(parsed.dtype, pd.DatetimeTZDtype):
            return _parse_each(text, timezone)
        parsed = parsed.copy()
        parsed[retry] = again
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    if not pd.api.types.is_datetime64_any_dtype(parsed.dtype):
        return _parse_each(text, timezone)
    localised = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
    return localised.dt.tz_convert("UTC")


def _parse_each(text: pd.Series, timezone: str) -> pd.Series:
    """Mixed naive and zoned timestamps: slow path, one at a time (rare)."""

    def one(value: Any) -> pd.Timestamp:
        if value is None or pd.isna(value):
            return pd.NaT
        try:
            stamp = pd.Timestamp(value)
        except (ValueError, TypeError):
            return pd.NaT
        return stamp.tz_localize(timezone).tz_convert("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")

    return pd.Series([one(value) for value in text.tolist()], index=text.index, dtype="datetime64[ns, UTC]")


def answers_json(typed: pd.DataFrame, questionnaire: Questionnaire) -> pd.Series:
    """``responses.answers`` for every row, as JSON text built column by column (no Python loop per row).

    Shape: ``{question_code: value}`` — a list of option codes for multi_select, a string for single_select and
    text, an int for integer, a float for number, a bool for yes_no, ``null`` when unanswered or not a valid
    value of its kind.
    """
    fragments: list[pd.Series] = []
    for question in questionnaire.questions:
        code = question.code
        key = json.dumps(code) + ": "
        column = typed[code]
        if question.kind == "multi_select":
            valid = column.notna() & column.str.fullmatch(r"[^\"\\;]+(;[^\"\\;]+)*")
            value = ('["' + column.str.replace(";", '", "', regex=False) + '"]').where(valid, "null")
        elif question.kind == "integer":
            number = typed[f"{code}__num"]
            valid = number.notna() & column.str.fullmatch(INTEGER_PATTERN) & (number.abs() < 2**53)
            value = number.where(valid, 0).astype("int64").astype(str).where(valid, "null")
        elif question.kind == "number":
            number = typed[f"{code}__num"]
            valid = number.notna() & (number.abs() != float("inf"))
            value = number.astype(str).where(valid, "null")
        elif question.kind == "yes_no":
            value = column.map({"yes": "true", "no": "false"}).fillna("null")
        else:
            value = column.map(json.dumps, na_action="ignore").fillna("null")
        fragments.append(key + value.astype(object))
    joined = reduce(lambda left, right: left + ", " + right, fragments)
    return "{" + joined + "}"
