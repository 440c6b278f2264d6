"""Columns of an export -> the canonical table: identity columns and one column per answer field.

The canonical table (``ResponseFile.cells``) has the columns ``token``, ``partnership_id``, ``email``,
``response_id``, ``submitted_at`` (each ``""`` when the file has no such column), ``complete`` and one column per
answer field of the questionnaire present in the file (:meth:`Questionnaire.answer_fields`: a question, a matrix
row ``code[row]``, an other text ``code[other]``, an option comment ``code[OPTIONcomment]``); multi-select answers
are joined with ``;``. A column is matched to a field by its code, or by its text in full-text headings.

Matching is strict where it matters: two columns that read as the same field, after headings are compared
loosely, are an error naming both (one never shadows the other silently), and a heading repeated in the header
refuses the file only when a question reads it. Answers a tool writes for "not shown" (LimeSurvey's ``N/A``) and
the questionnaire's ``not_applicable`` values are missing, not answers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from consult.errors import ConsultError
from consult.ingest.normalise import NO, YES
from consult.ingest.tools import Recognised, normalise_header
from consult.questionnaire import OTHER, Question, Questionnaire

IDENTITY_FIELDS = ("token", "partnership_id", "email", "submitted_at", "response_id")

# Header spellings of the identifying columns, compared after normalise_header.
IDENTITY_ALIASES: dict[str, set[str]] = {
    "token": {"token", "accesstoken", "accesscode", "invitationtoken"},
    "partnership_id": {"partnershipid", "partnership", "partnershipcode", "partnercode"},
    "email": {"email", "emailaddress", "contactemail", "mail"},
    "submitted_at": {"submittedat", "submitdate", "datesubmitted", "submissiondate", "submitted"},
    "response_id": {"responseid", "respondentid"},
}
# A per-option column (LimeSurvey's Q[OPT], KoBo's q/opt): "Y", "1", "X" or a yes word in the export's language.
SELECTED = {"y", "x"} | YES
NOT_SELECTED = {""} | NO
_BRACKETED = re.compile(r"^(?P<base>[^\[\]]+?)\s*\[(?P<inner>[^\[\]]+)\]$")
_QUALTRICS_TEXT = re.compile(r"^(?P<code>.+?)(?:_\d+)?_TEXT$")


@dataclass(frozen=True)
class _Target:
    """What a column holds: an identity field, a whole answer field, or one option of a multi-select."""

    kind: str  # identity | field | option
    name: str  # identity name or field code
    option: str = ""


def canonical_cells(
    path: Path, table: pd.DataFrame, questionnaire: Questionnaire, recognised: Recognised,
) -> tuple[pd.DataFrame, dict[str, list[str]], list[str]]:
    """(canonical cells, the columns each field was read from, notes for the data-quality report)."""
    fields = {field.code: field for field in questionnaire.answer_fields}
    targets = _targets(path, table, questionnaire, recognised)
    _refuse_repeated_headings(path, table, targets)

    identity: dict[str, str] = {}
    whole: dict[str, str] = {}
    options: dict[str, list[tuple[str, str]]] = {}
    unused: list[str] = []
    for column in table.columns:
        target = targets.get(column)
        if target is None:
            unused.append(column)
        elif target.kind == "identity":
            identity[target.name] = column
        elif target.kind == "field":
            whole[target.name] = column
        else:
            options.setdefault(target.name, []).append((target.option, column))
    notes: list[str] = []
    # A tool that writes a multi-select both whole and split (KoBo, ODK): the whole column is read.
    for code in [code for code in options if code in whole]:
        notes.append(f"{code}: read from {whole[code]!r}; its {len(options[code])} per-choice column(s) ignored")
        del options[code]

    question_columns: dict[str, list[str]] = {code: [column] for code, column in whole.items()}
    for code, pairs in options.items():
        question_columns.setdefault(code, []).extend(column for _, column in pairs)
    if not question_columns:
        raise ConsultError(
            f"{path}: no recognisable question column (expected some of {', '.join(questionnaire.codes)}); "
            f"the header has {', '.join(map(str, table.columns[:8])) or 'no column'}"
        )
    if questionnaire.anonymous:
        if "response_id" not in identity:
            raise ConsultError(f"{path}: this round is anonymous (match_by: response_id) but the file has no "
                               f"response id column ({_expected_id(recognised)})")
    elif not {"token", "partnership_id", "email"} & identity.keys():
        raise ConsultError(f"{path}: no column identifies the partnership (expected token, partnership_id or email"
                           f"{'; for an anonymous round set match_by: [response_id]' if recognised.id_column else ''})")

    empty = pd.Series("", index=table.index, dtype=str)
    canonical: dict[str, pd.Series] = {}
    for name in IDENTITY_FIELDS:
        canonical[name] = (
            pd.Series([value.strip() for value in table[identity[name]].tolist()], index=table.index, dtype=str)
            if name in identity else empty
        )
    not_asked_total = 0
    for code, field in fields.items():
        if code in whole:
            values = table[whole[code]].astype(str)
            if field.kind == "multi_select" and recognised.multi_separator != ";":
                pattern = r"\s+" if recognised.multi_separator == " " else rf"\s*{re.escape(recognised.multi_separator)}\s*"
                values = values.str.strip().str.split(pattern, regex=True).str.join(";")
        elif code in options:
            values = _join_option_columns(table, options[code])
        else:
            continue
        values, not_asked = _not_asked(values, field, questionnaire, recognised)
        not_asked_total += not_asked
        canonical[code] = values
    # A multi-select with other: true counts "other" as chosen when its text is given.
    for question in questionnaire.questions:
        other = f"{question.code}[{OTHER}]"
        if question.kind == "multi_select" and question.other and other in canonical and question.code in canonical:
            chosen = canonical[question.code]
            has_text = canonical[other].str.strip() != ""
            lacks = ~chosen.str.split(";").apply(lambda codes: OTHER in codes)
            add = has_text & lacks
            canonical[question.code] = chosen.where(~add, chosen.where(chosen == "", chosen + ";") + OTHER)

    notes.insert(0, recognised.describe())
    notes.extend(recognised.notes)
    if not_asked_total:
        notes.append(f"{not_asked_total} answer(s) marked not shown / not applicable: taken as not asked")
    if unused:
        shown = ", ".join(unused[:10]) + (f" and {len(unused) - 10} more" if len(unused) > 10 else "")
        notes.append(f"ignored {len(unused)} column(s) that match no question: {shown}")
    missing = [code for code in fields if code not in question_columns]
    if missing:
        notes.append(f"no column for question(s) {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}: "
                     "answers taken as empty")
    cells = pd.DataFrame(canonical, index=table.index)
    from consult.ingest.tools import completeness

    complete = completeness(table, recognised)
    if complete is not None:
        cells["complete"] = complete.to_numpy()
    elif "submitted_at" in identity and recognised.tool in ("limesurvey", "plain", "eusurvey"):
        cells["complete"] = cells["submitted_at"] != ""
    else:
        if "submitted_at" not in identity:
            notes.append("no submit-date column: every row is taken as a complete submission")
        cells["complete"] = True
    cells.attrs["identity_columns"] = tuple(identity)
    return cells, question_columns, notes


def _expected_id(recognised: Recognised) -> str:
    return {"limesurvey": "LimeSurvey's id", "qualtrics": "ResponseId", "kobo": "_id", "odk_central": "KEY",
            "eusurvey": "Contribution Id"}.get(recognised.tool, "a response id column")


def _targets(
    path: Path, table: pd.DataFrame, questionnaire: Questionnaire, recognised: Recognised
) -> dict[str, _Target]:
    """Each column's target; two columns with one target are an error naming both."""
    questions = {normalise_header(q.code): q for q in questionnaire.questions}
    fields_by_name: dict[str, str] = {}
    for field in questionnaire.answer_fields:
        fields_by_name.setdefault(normalise_header(field.code), field.code)
    codes = set(fields_by_name)
    for field in questionnaire.answer_fields:
        fields_by_name.setdefault(normalise_header(field.label), field.code)
    labels = {normalise_header(q.label): q for q in questionnaire.questions}
    identity_of = {alias: name for name, aliases in IDENTITY_ALIASES.items() for alias in aliases}
    tool_identity = {column: name for column, name in ((recognised.id_column, "response_id"),
                                                       (recognised.submit_column, "submitted_at")) if column}

    targets: dict[str, _Target] = {}
    first_column: dict[_Target, str] = {}
    for column in table.columns:
        target = _target(column, recognised, tool_identity, identity_of, fields_by_name, questions, labels)
        if target is None:
            continue
        if target in first_column:
            what = (f"option {target.option!r} of {target.name}" if target.kind == "option"
                    else f"the {target.name} column" if target.kind == "identity" else f"question {target.name}")
            raise ConsultError(f"{path}: columns {first_column[target]!r} and {column!r} both read as {what} "
                               "once headings are compared; rename or remove one of them")
        first_column[target] = column
        targets[column] = target
    # Full-text headings: the questions are found by their texts, not their codes.
    by_code = sum(1 for column, target in targets.items() if target.kind != "identity"
                  and (normalise_header(column) in codes
                       or any(normalise_header(base) in questions or normalise_header(base) in codes
                              for base in _bases(column, recognised))))
    by_text = sum(1 for target in targets.values() if target.kind != "identity") - by_code
    if by_text > by_code:
        recognised.heading_style = "full text"
    return targets


def _bases(column: str, recognised: Recognised) -> list[str]:
    """The question a column may belong to, as written: before ``[row]``; else the last part of its group path,
    or the part before it (a split column's question, before its choice)."""
    bracketed = _BRACKETED.match(column)
    if bracketed:
        return [bracketed["base"]]
    marks = "".join(dict.fromkeys(mark for mark in (recognised.group_separator, recognised.choice_separator) if mark))
    if not marks:
        return [column]
    return re.split(rf"[{re.escape(marks)}]", column)[-2:]


def _target(
    column: str, recognised: Recognised, tool_identity: dict[str | None, str], identity_of: dict[str, str],
    fields_by_name: dict[str, str], questions: dict[str, Question], labels: dict[str, Question],
) -> _Target | None:
    if column in tool_identity:
        return _Target("identity", tool_identity[column])
    key = normalise_header(column)
    if key in identity_of and identity_of[key] not in tool_identity.values():
        return _Target("identity", identity_of[key])
    names = [column]
    label = recognised.column_labels.get(column)
    if label:
        names.append(label)
    separator = recognised.group_separator
    if separator and separator in column:
        names.append(column.rsplit(separator, 1)[1])  # the question's name without its group path
    for name in names:
        code = fields_by_name.get(normalise_header(name))
        if code:
            return _Target("field", code)
    bracketed = _BRACKETED.match(column) or (_BRACKETED.match(label) if label else None)
    if bracketed:
        base = normalise_header(bracketed["base"])
        question = questions.get(base) or labels.get(base)
        if question is not None:
            return _inner_target(question, bracketed["inner"].strip())
    choice_mark = recognised.choice_separator
    if choice_mark and choice_mark in column:  # KoBo / ODK question/choice split columns
        prefix, choice = column.rsplit(choice_mark, 1)
        marks = re.escape(choice_mark + (separator or ""))
        question = questions.get(normalise_header(re.split(rf"[{marks}]", prefix)[-1]))
        if question is not None:
            return _inner_target(question, choice, split=True)
    qualtrics_other = _QUALTRICS_TEXT.match(column) if recognised.tool == "qualtrics" else None
    if qualtrics_other:  # Qualtrics: Q5_4_TEXT is the text written beside choice 4 ("Other")
        question = questions.get(normalise_header(qualtrics_other["code"]))
        if question is not None and question.other:
            return _Target("field", f"{question.code}[{OTHER}]")
    if separator and column.endswith(f"_{OTHER}"):  # KoBo / ODK "specify other" text question
        question = questions.get(normalise_header(column[: -len(OTHER) - 1].rsplit(separator, 1)[-1]))
        if question is not None and question.other:
            return _Target("field", f"{question.code}[{OTHER}]")
    return None


def _inner_target(question: Question, inner: str, *, split: bool = False) -> _Target | None:
    """What ``question[inner]`` is: a matrix row, the other text, an option's comment or a multi-select option
    (``split``: KoBo's ``question/choice`` column, where ``question/other`` is the choice, not the text)."""
    folded = inner.casefold()
    if question.kind == "matrix":
        for row in question.rows or []:
            if folded in (row.code.casefold(), row.label.strip().casefold()):
                return _Target("field", f"{question.code}[{row.code}]")
        return None
    options = question.options if isinstance(question.options, list) else []
    if folded == OTHER and question.other:
        # LimeSurvey's Q[other] is the written answer; KoBo's q/other is the choice flag of a multi-select.
        return _Target("option", question.code, OTHER) if split else _Target("field", f"{question.code}[{OTHER}]")
    for option in options:
        if option.comment and folded in (f"{option.code}comment".casefold(), f"{option.label} comment".casefold()):
            return _Target("field", f"{question.code}[{option.code}comment]")
    if question.kind == "multi_select":
        code = question.option_lookup.get(folded) if options else inner.strip().upper()
        if code:
            return _Target("option", question.code, code)
    return None


def _refuse_repeated_headings(path: Path, table: pd.DataFrame, targets: dict[str, _Target]) -> None:
    """A heading written twice refuses the file only when a question (or the identity) reads it."""
    repeated: dict[str, list[str]] = table.attrs.get("repeated_headings") or {}
    for heading, columns in repeated.items():
        read = [column for column in columns if column in targets]
        if read:
            raise ConsultError(f"{path}: the heading {heading!r} appears {len(columns)} times and "
                               f"{_what(targets[read[0]])} reads it: which column holds the answer is ambiguous")


def _what(target: _Target) -> str:
    return f"the {target.name} column" if target.kind == "identity" else f"question {target.name}"


def _not_asked(
    values: pd.Series, field: Question, questionnaire: Questionnaire, recognised: Recognised
) -> tuple[pd.Series, int]:
    markers = {value.strip().casefold() for value in [*questionnaire.not_applicable, *field.not_applicable]}
    markers |= recognised.not_shown
    if not markers:
        return values, 0
    hit = values.str.strip().str.casefold().isin(markers)
    count = int(hit.sum())
    return (values.where(~hit, "") if count else values), count


def _join_option_columns(table: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.Series:
    """One column per option (``Y``/``1``/``Yes`` or empty/``0``/``No``) -> ``OPT1;OPT2``; other cell values are kept
    as ``OPT=value`` so that validation shows them instead of silently dropping them."""
    parts: list[pd.Series] = []
    for option, column in pairs:
        cell = table[column].astype(str).str.strip()
        lowered = cell.str.casefold()
        part = pd.Series("", index=table.index, dtype=object)
        part[lowered.isin(SELECTED)] = option
        odd = ~lowered.isin(SELECTED | NOT_SELECTED | {"n/a"})
        part[odd] = option + "=" + cell[odd]
        parts.append(part)
    joined = pd.Series("", index=table.index, dtype=object)
    for part in parts:
        joined = joined.where(part == "", joined.where(joined == "", joined + ";") + part)
    return joined.astype(str)
