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
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pandas as pd

from consult.questionnaire import ISO3166, Question, Questionnaire

YES = {"yes", "y", "true", "1", "oui", "ja", "si", "sí"}
NO = {"no", "n", "false", "0", "non", "nein"}
INTEGER_PATTERN = r"^[+-]?\d+$"
NUMBER_PATTERN = r"^[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)$"

Reason = dict[str, Any]


@dataclass
class Normalised:
    typed: pd.DataFrame
    warnings: dict[int, list[Reason]] = field(default_factory=dict)


def _per_value(values: pd.Series, clean: Callable[[str], Any]) -> pd.Series:
    """Apply ``clean`` once per distinct cell value, not once per row: survey answers repeat a lot (yes/no,
    small integers, option combinations), so a million rows hold a few thousand distinct values."""
    codes, uniques = pd.factorize(values, use_na_sentinel=True)
    cleaned = np.array([clean(str(value)) for value in uniques] + [None], dtype=object)
    return pd.Series(cleaned.take(codes), index=values.index, dtype=object)  # code -1 (missing) -> None


def _text(value: str) -> str | None:
    return value.strip() or None


def _number(value: str) -> float:
    try:
        return float(value.strip().replace(",", "."))
    except ValueError:
        return float("nan")


def _integer(value: str) -> float:
    try:
        return float(value.strip())
    except ValueError:
        return float("nan")


def _options(value: str, *, upper: bool) -> str | None:
    codes = [code.strip() for code in value.split(";")]
    joined = ";".join(code.upper() if upper else code for code in codes if code)
    return joined or None


def _yes_no(value: str) -> str | None:
    cleaned = value.strip()
    lowered = cleaned.lower()
    if lowered in YES:
        return "yes"
    if lowered in NO:
        return "no"
    # Keep an unrecognised answer as written so the expectation reports it as it was.
    return cleaned or None


def normalise(cells: pd.DataFrame, questionnaire: Questionnaire, *, timezone: str = "UTC") -> Normalised:
    """Type every question column of the canonical cells; columns missing from the file come out empty."""
    typed: dict[str, pd.Series] = {}
    warnings: dict[int, list[Reason]] = {}
    empty = pd.Series("", index=cells.index, dtype=object)
    for question in questionnaire.questions:
        values = cells[question.code] if question.code in cells.columns else empty
        typed.update(_normalise_question(question, values, warnings))
    typed["submitted_at"] = parse_timestamps(cells["submitted_at"], timezone)
    return Normalised(typed=pd.DataFrame(typed, index=cells.index), warnings=warnings)


def _normalise_question(
    question: Question, values: pd.Series, warnings: dict[int, list[Reason]]
) -> dict[str, pd.Series]:
    code = question.code
    if question.kind in ("integer", "number"):
        cleaned = _per_value(values, _text)
        parse = _integer if question.kind == "integer" else _number
        number = _per_value(values, parse).astype("float64")
        return {code: cleaned, f"{code}__num": number}
    if question.kind == "multi_select":
        upper = question.options == ISO3166
        cleaned = _per_value(values, lambda value: _options(value, upper=upper))
        if upper:
            as_written = _per_value(values, lambda value: _options(value, upper=False))
            changed = cleaned.notna() & (as_written != cleaned)
            for row_number, value in as_written[changed].items():
                warnings.setdefault(int(row_number), []).append(  # type: ignore[arg-type]
                    {
                        "expectation": "normalise",
                        "rule": "upper_cased",
                        "column": code,
                        "severity": "warning",
                        "value": value,
                        "message": f"market code(s) {value!r} upper-cased to {value.upper()!r}",
                    }
                )
        return {code: cleaned}
    if question.kind == "yes_no":
        return {code: _per_value(values, _yes_no)}
    if question.kind == "single_select":
        return {code: _per_value(values, _text)}
    # Free text is kept exactly as written (HTML, formulas, line breaks): it is escaped wherever it is shown.
    text = values.astype(object)
    blank = np.array([not str(value).strip() for value in text.tolist()], dtype=bool)
    return {code: text.where(~blank, None)}


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
    """``responses.answers`` for every row, as JSON text built from one fragment per distinct value.

    Shape: ``{question_code: value}`` — a list of option codes for multi_select, a string for single_select and
    text, an int for integer, a float for number, a bool for yes_no, ``null`` when unanswered or not a valid
    value of its kind.
    """
    # One "key": value fragment per distinct value, then one join per row.
    fragments: list[list[str]] = []
    for question in questionnaire.questions:
        code = question.code
        key = json.dumps(code) + ": "
        null = key + "null"
        column = typed[code]
        if question.kind == "multi_select":
            value = _per_value(
                column, lambda text, key=key: key + json.dumps(text.split(";")) if _SAFE_CODES.fullmatch(text) else None
            )
        elif question.kind == "integer":
            value = _per_value(
                column,
                lambda text, key=key: key + str(int(text)) if _INTEGER.fullmatch(text) and abs(int(text)) < 2**53 else None,
            )
        elif question.kind == "number":
            number = typed[f"{code}__num"]
            value = _per_value(
                number.astype(object).where(number.notna() & number.abs().ne(float("inf")), None),
                lambda text, key=key: key + text,
            )
        elif question.kind == "yes_no":
            value = column.map({"yes": key + "true", "no": key + "false"})
        elif question.kind == "single_select":
            value = _per_value(column, lambda text, key=key: key + json.dumps(text))
        else:
            # Free text is mostly distinct: orjson writes it 5x faster than json.dumps (same JSON value).
            value = pd.Series([key + _json_string(text) if isinstance(text, str) else None for text in column.tolist()],
                              dtype=object)
        cells = np.array(value, dtype=object)
        cells[pd.isna(cells)] = null
        fragments.append(cells.tolist())
    return pd.Series(["{" + ", ".join(parts) + "}" for parts in zip(*fragments, strict=True)], index=typed.index,
                     dtype=object)


def _json_string(text: str) -> str:
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, which orjson refuses and json escapes
        return json.dumps(text)


_SAFE_CODES = re.compile(r"[^\"\\;]+(;[^\"\\;]+)*")
_INTEGER = re.compile(INTEGER_PATTERN)
