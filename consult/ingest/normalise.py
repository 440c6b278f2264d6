"""Cells (strings as exported) -> typed answers, per question kind, vectorised with pandas.

The typed table keeps, per question code ``q``:

- ``q``: the cleaned answer as a string (``<NA>`` when unanswered) — multi-select codes joined with ``;``,
  market codes upper-cased, yes/no spelled ``yes``/``no``; this is what the expectations check;
- ``q__num`` for integer, number and scale questions: the value as a float (``NaN`` when it is not a number).

A scale answer may be written as its value (``5``), as LimeSurvey's full text (``5 - A great extent``) or as the
label alone (``A great extent``); all three come out as ``5``. Anything else is kept as written, for the
expectation to report.

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

# Yes and no as respondents and survey tools write them in the questionnaires' languages (en, fr, de, it, es, pt,
# nl), compared case-insensitively. No installable package keeps these words (CLDR's yes/no strings are not in
# Babel), so this table is ours: add a language's words here, with and without its accents.
YES_WORDS = {
    "en": {"yes", "y", "true"}, "fr": {"oui", "o", "vrai"}, "de": {"ja", "j", "wahr"},
    "it": {"sì", "si", "s", "vero"}, "es": {"sí", "si", "s", "verdadero"}, "pt": {"sim", "s", "verdadeiro"},
    "nl": {"ja", "j", "waar"},
}
NO_WORDS = {
    "en": {"no", "n", "false"}, "fr": {"non", "faux"}, "de": {"nein", "falsch"},
    "it": {"no", "n", "falso"}, "es": {"no", "n", "falso"}, "pt": {"não", "nao", "n", "falso"},
    "nl": {"nee", "n", "onwaar"},
}
YES = {"1"}.union(*YES_WORDS.values())
NO = {"0"}.union(*NO_WORDS.values())
# Bounded: a number is checked as text before it is converted, so a 100,000-digit "integer" is a quarantined
# value, not a ValueError (Python's int() refuses over 4,300 digits) that fails the whole file. 15 digits stay
# exact in a float (and in JSON).
INTEGER_PATTERN = r"^[+-]?\d{1,15}$"
NUMBER_PATTERN = r"^[+-]?(?:\d{1,15}(?:[.,]\d{0,15})?|[.,]\d{1,15})$"
MAX_DIGITS = 15

Reason = dict[str, Any]
_ALL = slice(None)


@dataclass
class Normalised:
    typed: pd.DataFrame
    warnings: dict[int, list[Reason]] = field(default_factory=dict)


def _categorical(codes: np.ndarray, uniques: list[str], clean: Callable[[str], str | None], index: pd.Index) -> pd.Series:
    """``clean`` applied once per distinct cell value (``uniques``; ``codes``: each row's position in them, -1
    when missing), not once per row: survey answers repeat a lot (yes/no, small integers, option combinations),
    so a million rows hold a few thousand distinct values. The result is a categorical column (``None`` ->
    missing).

    Categoricals are what keeps validation cheap: Great Expectations filters, copies and fingerprints the
    whole table once per expectation, and a categorical column is one byte a row where text is a pointer to a
    Python string; it also hands its distinct values to the next step without another pass over the rows.
    """
    cleaned = np.array([clean(value) for value in uniques] + [None], dtype=object)
    category_codes, categories = pd.factorize(cleaned, use_na_sentinel=True)
    # A row's code -1 (missing) takes the appended None, whose category code is -1 too.
    return pd.Series(pd.Categorical.from_codes(category_codes.take(codes), categories=categories), index=index)


def _floats(codes: np.ndarray, uniques: list[str], parse: Callable[[str], float], index: pd.Index) -> pd.Series:
    numbers = np.array([parse(value) for value in uniques] + [np.nan], dtype="float64")
    return pd.Series(numbers.take(codes), index=index)


def distinct(column: pd.Series) -> tuple[np.ndarray, list[Any]]:
    """(per-row position in the distinct values or -1 when missing, the distinct values) of a column; free of
    charge for a categorical one."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(), list(column.cat.categories)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    return codes, list(uniques)


_LINE_BREAKS = re.compile("\r\n?|[\u2028\u2029\x85\x0b\x0c]")


def normalise_line_breaks(value: str) -> str:
    """CRLF, a lone CR, NEL, vertical tab, form feed and U+2028/U+2029 -> LF."""
    return _LINE_BREAKS.sub("\n", value) if isinstance(value, str) else value


def _text(value: str) -> str | None:
    return value.strip() or None


def _number(value: str) -> float:
    if len(value) > 2 * MAX_DIGITS + 8:  # not a number the suite accepts: not converted at all
        return float("nan")
    try:
        return float(value.strip().replace(",", "."))
    except ValueError:
        return float("nan")


def _integer(value: str) -> float:
    if len(value) > MAX_DIGITS + 8:
        return float("nan")
    try:
        return float(value.strip())
    except ValueError:
        return float("nan")


def _options(value: str, *, upper: bool, lookup: dict[str, str] | None = None) -> str | None:
    codes = [code.strip() for code in value.split(";")]
    if lookup:
        codes = [lookup.get(code.casefold(), code) for code in codes]
    joined = ";".join(code.upper() if upper else code for code in codes if code)
    return joined or None


def _yes_no(value: str) -> str | None:
    cleaned = value.strip()
    lowered = cleaned.casefold()
    if lowered in YES:
        return "yes"
    if lowered in NO:
        return "no"
    # Keep an unrecognised answer as written so the expectation reports it as it was.
    return cleaned or None


# ``5``, ``5.0``, ``5 - A great extent``, ``5: Agree``, ``5) Agree``; not ``3.5`` nor ``5-4``.
_SCALE_FULL_TEXT = re.compile(r"^\s*([+-]?\d+)(?:\.0+)?\s*(?:(?:[-–—:)]|\.\s)\s*(?:\D.*)?)?$", re.DOTALL)


def scale_reader(question: Question) -> Callable[[str], str | None]:
    """A scale cell -> its value as text (``"5"``), or the cell as written when it is not a value of the scale's
    wording (the expectation then reports it)."""
    by_label = {label.strip().casefold(): value for value, label in (question.labels or {}).items()}

    def read(cell: str) -> str | None:
        text = cell.strip()
        if not text:
            return None
        found = _SCALE_FULL_TEXT.match(text)
        if found:
            return str(int(found.group(1)))
        value = by_label.get(text.casefold())
        return str(value) if value is not None else text

    return read


def normalise(cells: pd.DataFrame, questionnaire: Questionnaire, *, timezone: str = "UTC") -> Normalised:
    """Type every question column of the canonical cells; columns missing from the file come out empty."""
    typed: dict[str, pd.Series] = {}
    warnings: dict[int, list[Reason]] = {}
    empty = pd.Series("", index=cells.index, dtype=object)
    for question in questionnaire.answer_fields:
        values = cells[question.code] if question.code in cells.columns else empty
        typed.update(_normalise_question(question, values, warnings))
    typed["submitted_at"] = parse_timestamps(cells["submitted_at"], timezone, dayfirst=questionnaire.dayfirst)
    return Normalised(typed=pd.DataFrame(typed, index=cells.index), warnings=warnings)


def _normalise_question(
    question: Question, values: pd.Series, warnings: dict[int, list[Reason]]
) -> dict[str, pd.Series]:
    code = question.code
    if question.kind == "text":
        # Free text is kept as written (HTML, formulas): it is escaped wherever it is shown. Only its line breaks
        # are made one kind: a lone CR or U+2028 would otherwise start a new line in some renderers (Markdown)
        # and not in others (the code that quotes the text line by line).
        text = values.astype(str).str.replace(_LINE_BREAKS.pattern, "\n", regex=True).to_numpy(dtype=object)
        blank = np.array([not value.strip() for value in text.tolist()], dtype=bool)
        kept = text.copy()
        kept[blank] = None
        return {code: pd.Series(kept, index=values.index, dtype=object)}
    # Every other kind works on the column's distinct values, found once here.
    codes, found = distinct(values)
    uniques = [str(value) for value in found]
    if question.kind in ("integer", "number"):
        parse = _integer if question.kind == "integer" else _number
        return {code: _categorical(codes, uniques, _text, values.index),
                f"{code}__num": _floats(codes, uniques, parse, values.index)}
    if question.kind == "scale":
        cleaned = _categorical(codes, uniques, scale_reader(question), values.index)
        value_codes, value_texts = distinct(cleaned)
        return {code: cleaned,
                f"{code}__num": _floats(value_codes, [str(text) for text in value_texts], _integer, values.index)}
    if question.kind == "multi_select":
        upper = question.options == ISO3166
        lookup = question.option_lookup
        cleaned = _categorical(codes, uniques, lambda value: _options(value, upper=upper, lookup=lookup),
                               values.index)
        if upper:
            as_written = [_options(value, upper=False) for value in uniques]
            changed = [i for i, text in enumerate(as_written) if text is not None and text != text.upper()]
            for position in np.flatnonzero(np.isin(codes, changed)):
                value = as_written[codes[position]]
                warnings.setdefault(int(values.index[position]), []).append(
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
        return {code: _categorical(codes, uniques, _yes_no, values.index)}
    lookup = question.option_lookup  # single_select: an option's label (as tools export it) is its code
    return {code: _categorical(codes, uniques, lambda value: _choice(value, lookup), values.index)}


def _choice(value: str, lookup: dict[str, str]) -> str | None:
    cleaned = value.strip()
    return lookup.get(cleaned.casefold(), cleaned) or None


# The earliest submission date taken as real: survey exports of this engine's panels start long after it, and
# a "1900-01-01" or a year -1 is a spreadsheet's placeholder, not a date.
EARLIEST_SUBMISSION = pd.Timestamp("2000-01-01", tz="UTC")
# Day-first spellings, read only where the questionnaire declares ``dayfirst: true`` (04/03/2019 = 4 March).
DAY_FIRST_FORMATS = ("%d/%m/%Y %H:%M:%S", "%d/%m/%Y %H:%M", "%d/%m/%Y", "%d.%m.%Y %H:%M:%S", "%d.%m.%Y %H:%M", "%d.%m.%Y")
# A time followed by an offset or Z (a bare "2019-03-04" ends in "-04", which is no offset).
_ZONED = r"\d:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?:Z|[+-]\d{2}(?::?\d{2})?)$"


def parse_timestamps(
    values: pd.Series, timezone: str, *, dayfirst: bool = False, now: pd.Timestamp | None = None
) -> pd.Series:
    """Submit dates as UTC timestamps, read by declared formats only; anything else -> NaT (then quarantined
    with its value by the suite's submit-date expectation).

    - ISO 8601, strictly (``2019-13-01`` is no date), which covers LimeSurvey's ``YYYY-MM-DD HH:MM:SS`` and the
      date cells of XLSX exports (EUSurvey's included: the reader writes them as ISO 8601);
    - ``DD/MM/YYYY [HH:MM[:SS]]`` and ``DD.MM.YYYY ...`` only with ``dayfirst`` (the questionnaire's ``dayfirst:
      true``): without it ``04/03/2019`` is ambiguous and not guessed;
    - naive times are local time in ``timezone``; zoned ones keep their offset; both may be mixed in one file;
    - a date before 2000-01-01 or more than a day after ``now`` is no submission date (a ``2999-01-01`` would
      otherwise be the "latest submission" for ever).
    """
    text = values.astype(str).str.strip()
    present = text != ""
    parsed = pd.Series(pd.NaT, index=values.index, dtype="datetime64[us, UTC]")
    try:  # one pass when the file is all naive or all zoned with one offset (the usual case)
        stamps = pd.to_datetime(text[present], format="ISO8601", errors="coerce")
    except ValueError:  # naive and zoned (or several offsets) in one file: each group on its own
        stamps = None
    if stamps is not None and isinstance(stamps.dtype, pd.DatetimeTZDtype):
        parsed[present] = stamps.dt.tz_convert("UTC").dt.as_unit("us")
        zoned = present
    elif stamps is not None:
        zoned = pd.Series(False, index=values.index)
    else:
        zoned = present & text.str.contains(_ZONED, regex=True)
        parsed[zoned] = pd.to_datetime(text[zoned], format="ISO8601", errors="coerce", utc=True).dt.as_unit("us")
    naive = present & ~zoned
    if naive.any():
        local = (stamps if stamps is not None else pd.to_datetime(text[naive], format="ISO8601", errors="coerce"))
        local = local.astype("datetime64[us]")
        if dayfirst and local.isna().any():
            for day_first_format in DAY_FIRST_FORMATS:
                missing = local.isna()
                if not missing.any():
                    break
                again = pd.to_datetime(text[naive][missing], format=day_first_format, errors="coerce")
                local[missing] = again.astype("datetime64[us]")
        localised = local.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="shift_forward")
        parsed[naive] = localised.dt.tz_convert("UTC")
    latest = (now if now is not None else pd.Timestamp.now(tz="UTC")) + pd.Timedelta(days=1)
    parsed[(parsed < EARLIEST_SUBMISSION) | (parsed > latest)] = pd.NaT
    return parsed.astype("datetime64[ns, UTC]")


class AnswerWriter:
    """``responses.answers`` as JSON text, for any rows of a typed table, built from one fragment per distinct
    value (free text aside).

    Shape: ``{question_code: value}`` — a list of option codes for multi_select, a string for single_select and
    text, an int for integer, a float for number, a bool for yes_no, ``null`` when unanswered or not a valid
    value of its kind. The store asks for a chunk of rows at a time, so a million-row file never holds a
    million JSON texts at once.
    """

    def __init__(self, typed: pd.DataFrame, questionnaire: Questionnaire) -> None:
        self.index = typed.index
        # Per question: (per-row codes, fragments by code with the missing one last) or the free-text column.
        self._columns: list[tuple[np.ndarray, np.ndarray] | tuple[str, np.ndarray, str]] = []
        questions = list(questionnaire.answer_fields)
        for number, question in enumerate(questions):
            # The braces travel with the first and last fragments: the per-row work is a single C-level join.
            key = ("{" if number == 0 else "") + json.dumps(question.code) + ":"
            end = "}" if number == len(questions) - 1 else ""
            column = typed[question.code]
            if question.kind == "text":
                self._columns.append((key, column.to_numpy(dtype=object), end))
                continue
            if question.kind == "number":
                numbers = typed[f"{question.code}__num"]
                column = numbers.astype(object).where(numbers.notna() & numbers.abs().ne(float("inf")), None)
            codes, uniques = distinct(column)
            written = [_ANSWER_WRITERS[question.kind](str(value)) for value in uniques]
            fragments = np.array([key + ("null" if text is None else text) + end for text in written]
                                 + [key + "null" + end], dtype=object)
            self._columns.append((codes, fragments))

    def rows(self, positions: np.ndarray | slice = _ALL) -> list[str]:
        parts: list[list[str]] = []
        for column in self._columns:
            if len(column) == 3:
                key, texts, end = column
                # Free text is mostly distinct: one fragment per row; orjson writes it 5x faster than json.dumps.
                parts.append([key + (_json_string(text) if isinstance(text, str) else "null") + end
                              for text in texts[positions].tolist()])
            else:
                codes, fragments = column
                parts.append(fragments.take(codes[positions]).tolist())
        return list(map(",".join, zip(*parts, strict=True)))


def answers_json(typed: pd.DataFrame, questionnaire: Questionnaire) -> pd.Series:
    """:class:`AnswerWriter`'s JSON for every row of ``typed``."""
    return pd.Series(AnswerWriter(typed, questionnaire).rows(), index=typed.index, dtype=object)


def _multi_select_json(text: str) -> str | None:
    return json.dumps(text.split(";"), separators=(",", ":")) if _SAFE_CODES.fullmatch(text) else None


def _integer_json(text: str) -> str | None:
    return str(int(text)) if _INTEGER.fullmatch(text) else None


_ANSWER_WRITERS: dict[str, Callable[[str], str | None]] = {
    "multi_select": _multi_select_json,
    "integer": _integer_json,
    "scale": _integer_json,
    "number": str,  # a float already (its repr is valid JSON: nan and inf were set aside)
    "yes_no": {"yes": "true", "no": "false"}.get,
    "single_select": json.dumps,
}


def _json_string(text: str) -> str:
    try:
        return orjson.dumps(text).decode()
    except orjson.JSONEncodeError:  # a lone surrogate, which orjson refuses and json escapes
        return json.dumps(text)


_SAFE_CODES = re.compile(r"[^\"\\;]+(;[^\"\\;]+)*")
_INTEGER = re.compile(INTEGER_PATTERN)
