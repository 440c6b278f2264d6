"""Which survey tool wrote an export, told from what the file holds (never from its name), and what that means.

Each tool writes its own identity and completeness columns, and some add rows or markers around the answers:

- **LimeSurvey** (CSV/XLSX): a response ``id``; a submit date (``submitdate`` in code headings, ``Date submitted``
  or ``Completed`` in full-text headings, ``Data invio`` in Italian, ...) empty for an incomplete response;
  ``N/A`` where a question was not shown; headings either codes (``Q07[SQ001]``) or full question texts
  (``How much ...? [Row text]``);
- **Qualtrics** (CSV): three header rows (codes, question texts, ``{"ImportId": ...}``); ``ResponseId``;
  ``Finished`` (1/0 or True/False), ``Progress`` and ``RecordedDate``;
- **KoBoToolbox** (XLSX/CSV): ``_id``, ``_uuid``, ``_submission_time``; group paths joined with ``/`` (or the
  ``.`` an export may be made with); ``select_multiple`` answers space-separated, or split into
  ``question/choice`` columns (joined with the same separator);
- **ODK Central** (CSV): ``SubmissionDate``, ``KEY`` and ``meta-instanceID``; group paths joined with ``-``;
  ``select_multiple`` space-separated; rows may stop short of the header (missing trailing cells are empty);
- **EUSurvey**: XLSX with metadata rows above a ``Contribution Id`` header, or the results XML
  (``<Results><Survey>...<Answers><AnswerSet>``), read here with defusedxml;
- anything else is a **plain** table with one column per question code or label.

:func:`recognise` returns what was recognised; the data-quality report shows it (tool, heading style, id column,
completeness column).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from consult.errors import ConsultError

Tool = str  # limesurvey | qualtrics | kobo | odk_central | eusurvey | plain

QUALTRICS_IMPORT_MARK = '{"ImportId"'


def normalise_header(text: str) -> str:
    """A heading compared loosely: lower case, letters and digits only (``Contribution Id`` -> ``contributionid``)."""
    return re.sub(r"[^0-9a-z]+", "", str(text).lstrip("\ufeff").lower())


def _aliases(*names: str) -> frozenset[str]:
    return frozenset(normalise_header(name) for name in names)


# LimeSurvey's metadata headings in the code style and in the full-text style of the languages we meet.
_LIMESURVEY_ID = _aliases("id", "Response ID", "ID risposta", "ID de la réponse", "ID de réponse", "Antwort ID",
                          "ID de respuesta", "ID da resposta", "Antwoord ID")
_LIMESURVEY_SUBMIT = _aliases("submitdate", "Date submitted", "Completed", "Data invio", "Date de soumission",
                              "Datum Abgeschickt", "Fecha de envío", "Data de submissão", "Data de envio",
                              "Datum verstuurd", "Datum ingediend")
_LIMESURVEY_MARKERS = _aliases("lastpage", "startlanguage", "Last page", "Last page seen", "Start language",
                               "Ultima pagina", "Lingua iniziale", "Dernière page", "Langue de départ",
                               "Letzte Seite", "Startsprache", "Última página", "Idioma inicial",
                               "Laatste pagina", "Starttaal", "seed", "datestamp", "startdate")
# The marker each tool writes where a question was not shown to the respondent: missing, not an answer.
NOT_SHOWN: dict[Tool, frozenset[str]] = {"limesurvey": frozenset({"n/a"})}


@dataclass
class Recognised:
    """What an export was found to be, and the columns that carry each response's identity and completeness."""

    tool: Tool
    heading_style: str = "code"  # code | full text
    id_column: str | None = None
    submit_column: str | None = None
    completeness_column: str | None = None
    # Per column: the question text a tool writes in a second header row (Qualtrics).
    column_labels: dict[str, str] = field(default_factory=dict)
    multi_separator: str = ";"
    group_separator: str | None = None  # KoBo "/" (or the "." an export may be set to), ODK Central "-"
    # Between a select_multiple question and one of its choices in a split column: KoBo uses its group
    # separator ("q/choice", "q.choice"), ODK Central always "/".
    choice_separator: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def not_shown(self) -> frozenset[str]:
        return NOT_SHOWN.get(self.tool, frozenset())

    def report(self) -> dict[str, str | None]:
        return {"tool": self.tool, "heading_style": self.heading_style, "id_column": self.id_column,
                "completeness_column": self.completeness_column or self.submit_column,
                "submit_date_column": self.submit_column}

    def describe(self) -> str:
        parts = [f"recognised export: {TOOL_NAMES.get(self.tool, self.tool)}, {self.heading_style} headings"]
        parts.append(f"response id column {self.id_column!r}" if self.id_column else "no response id column")
        completeness = self.completeness_column or self.submit_column
        parts.append(f"completeness from {completeness!r}" if completeness else "every row taken as complete")
        return ", ".join(parts)


TOOL_NAMES = {"limesurvey": "LimeSurvey", "qualtrics": "Qualtrics", "kobo": "KoBoToolbox",
              "odk_central": "ODK Central", "eusurvey": "EUSurvey", "plain": "plain"}


def recognise(cells: pd.DataFrame, file_format: str) -> Recognised:
    """Tell the tool from the headings (and, for Qualtrics, the two rows under them)."""
    columns = [str(column) for column in cells.columns]
    raw = set(columns)
    by_key: dict[str, str] = {}
    for column in columns:
        by_key.setdefault(normalise_header(column), column)
    if file_format == "xml":
        return Recognised(tool="eusurvey", id_column="Contribution Id", submit_column="Submitted")
    if "ResponseId" in raw or "responseid" in by_key and ("finished" in by_key or "progress" in by_key):
        labels = _qualtrics_labels(cells)
        return Recognised(
            tool="qualtrics", id_column=by_key.get("responseid"), submit_column=by_key.get("recordeddate"),
            completeness_column=by_key.get("finished") or by_key.get("progress"), column_labels=labels,
            multi_separator=",",  # Qualtrics writes a multiple answer as "1,3"
        )
    if "_submission_time" in raw and ("_id" in raw or "_uuid" in raw):
        separator = kobo_group_separator(columns)
        return Recognised(tool="kobo", id_column="_id" if "_id" in raw else "_uuid", submit_column="_submission_time",
                          multi_separator=" ", group_separator=separator, choice_separator=separator)
    if "SubmissionDate" in raw and ("KEY" in raw or "meta-instanceID" in raw):
        return Recognised(tool="odk_central", id_column="KEY" if "KEY" in raw else "meta-instanceID",
                          submit_column="SubmissionDate", multi_separator=" ", group_separator="-",
                          choice_separator="/")
    if "contributionid" in by_key:
        return Recognised(tool="eusurvey", id_column=by_key["contributionid"])
    submit = next((by_key[key] for key in _LIMESURVEY_SUBMIT if key in by_key), None)
    response_id = next((by_key[key] for key in _LIMESURVEY_ID if key in by_key), None)
    if response_id and (submit or any(key in by_key for key in _LIMESURVEY_MARKERS)):
        return Recognised(tool="limesurvey", id_column=response_id, submit_column=submit)
    return Recognised(tool="plain")


def kobo_group_separator(columns: list[str]) -> str:
    """The group separator a KoBo export was made with: ``/`` by default, ``.`` when the person exporting chose
    it (KoBo asks for one). Told from the question headings (KoBo's own ``_`` columns aside): the mark that
    joins more of them wins, ``/`` when none is joined."""
    questions = [column for column in columns if not column.startswith("_")]
    slashes = sum("/" in column for column in questions)
    dots = sum("." in column for column in questions)
    return "." if dots > slashes else "/"


def _qualtrics_labels(cells: pd.DataFrame) -> dict[str, str]:
    """The question texts of Qualtrics' second header row (when the third row holds the ImportIds)."""
    if len(cells) >= 2 and any(str(value).startswith(QUALTRICS_IMPORT_MARK) for value in cells.iloc[1].tolist()):
        return {str(column): str(text) for column, text in cells.iloc[0].items()}
    return {}


def prepare(cells: pd.DataFrame, recognised: Recognised) -> pd.DataFrame:
    """The response rows only: Qualtrics' second and third header rows are taken off (row numbers kept)."""
    if recognised.tool != "qualtrics":
        return cells
    header_rows = [
        index for position, index in enumerate(cells.index[:2])
        if position == 0 and recognised.column_labels
        or any(str(value).startswith(QUALTRICS_IMPORT_MARK) for value in cells.loc[index].tolist())
    ]
    if header_rows:
        recognised.notes.append(f"took {len(header_rows)} Qualtrics header row(s) (question texts, ImportIds) "
                                "off the responses")
    return cells.drop(index=header_rows)


def completeness(cells: pd.DataFrame, recognised: Recognised) -> pd.Series | None:
    """Whether each row is a complete response, for tools that say so in a column of their own (else None)."""
    column = recognised.completeness_column
    if recognised.tool == "qualtrics" and column:
        values = cells[column].astype(str).str.strip().str.lower()
        if column.lower() == "progress":
            return values == "100"
        return values.isin({"1", "true"})
    return None


# --- EUSurvey results XML ------------------------------------------------------------------------------------


def looks_like_xml(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(512).lstrip(b"\xef\xbb\xbf").lstrip()
    return head.startswith((b"<?xml", b"<Results"))


def read_eusurvey_xml(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """EUSurvey's results XML as a table: one row per ``AnswerSet`` (in file order, numbered from 1), one column
    per question, named by its short name (``bid``) where the export gives them, else by its text.

    Choices are written by their short names (several joined with ``;``); a matrix row becomes ``matrix[row]``,
    and so does each rated item of a rating question (``rating[item]``, its stars as a number: EUSurvey writes
    ``3/7``); a table cell becomes ``table[row][column]`` holding the text typed in it. The metadata become
    ``Contribution Id``, ``Submitted`` (``last``, else ``create``), ``Invitation`` and ``User``.
    """
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import ParseError, parse

    try:
        root = parse(str(path)).getroot()
    except DefusedXmlException as error:
        raise ConsultError(f"{path}: refused: the XML contains entity declarations ({type(error).__name__}), "
                           "which EUSurvey never writes; re-export the file") from None
    except ParseError as error:
        raise ConsultError(f"{path}: not a readable XML file ({error})") from None
    if root.tag != "Results" or root.find("Answers") is None:
        raise ConsultError(f"{path}: an XML file but not EUSurvey results (expected <Results> with <Answers>, "
                           f"found <{root.tag}>)")
    names: dict[str, str] = {}  # question uid -> column name
    answer_texts: dict[str, str] = {}  # answer uid -> its short name (or text)
    table_columns: set[str] = set()  # answer uids that are a table's columns: the typed text is the answer
    ratings: set[str] = set()  # question uids of rated items: "3/7" is 3 stars
    elements = root.find("Survey/Elements")
    group = ""  # the matrix, rating or table whose rows follow
    for element in list(elements) if elements is not None else []:
        uid, name = element.get("id", ""), _short_name(element)
        if element.tag in ("MatrixTitle", "TableTitle") or (element.tag == "Question"
                                                            and element.get("type") == "Rating"):
            group = name
        elif element.tag in ("MatrixQuestion", "TableQuestion", "RatingQuestion"):
            names[uid] = f"{group}[{name}]"
            if element.tag == "RatingQuestion":
                ratings.add(uid)
        elif element.tag in ("Question", "Text", "Section", "Image"):
            names[uid] = name
        elif element.tag in ("Answer", "MatrixAnswer", "TableAnswer"):
            answer_texts[uid] = name
            if element.tag == "TableAnswer":
                table_columns.add(uid)
    records: list[dict[str, str]] = []
    for answer_set in root.find("Answers") or []:
        if answer_set.tag != "AnswerSet":
            continue
        contribution = answer_set.get("id") or ""
        if contribution in ("", "Anonymous"):  # anonymous surveys hide the id; "list" still tells sets apart
            contribution = answer_set.get("list") or ""
        record = {"Contribution Id": contribution, "Submitted": _eusurvey_date(answer_set.get("last")
                                                                               or answer_set.get("create")),
                  "Invitation": answer_set.get("invitation") or "", "User": answer_set.get("user") or ""}
        for answer in answer_set.findall("Answer"):
            qid, aid, text = answer.get("qid", ""), answer.get("aid") or "", answer.text or ""
            column = names.get(qid, qid)
            if aid in table_columns:
                column, value = f"{column}[{answer_texts[aid]}]", text
            elif aid:
                value = answer_texts.get(aid, aid)
            elif qid in ratings:
                value = text.split("/", 1)[0].strip()
            else:
                value = text
            record[column] = f"{record[column]};{value}" if record.get(column) else value
        records.append(record)
    if not records:
        raise ConsultError(f"{path}: the EUSurvey results hold no answer set")
    columns = list(dict.fromkeys(["Contribution Id", "Submitted", "Invitation", "User", *names.values(),
                                  *(key for record in records for key in record)]))
    table = pd.DataFrame.from_records(records, columns=columns).fillna("").astype(str)
    table.index = pd.RangeIndex(1, len(table) + 1, name="row_number")
    return table, [f"read as EUSurvey results XML (survey {_survey_alias(root)}), {len(records)} answer set(s)"]


def _short_name(element: object) -> str:
    """An element's short name (``bid``), else its text. A short name written in square brackets (``[ID12]``,
    seen in public EUSurvey results) is taken without them, so that ``matrix[row]``
    stays one bracket deep."""
    bid = (element.get("bid") or "").strip()  # type: ignore[attr-defined]
    if not bid:
        return (element.text or "").strip()  # type: ignore[attr-defined]
    bracketed = re.fullmatch(r"\[([^\[\]]+)\]", bid)
    return bracketed[1] if bracketed else bid


def _survey_alias(root: object) -> str:
    survey = root.find("Survey")  # type: ignore[attr-defined]
    return (survey.get("alias") or survey.get("uid") or "?") if survey is not None else "?"


def _eusurvey_date(value: str | None) -> str:
    """``2024-03-05_14-02-11`` (EUSurvey's stamp) -> ``2024-03-05 14:02:11``."""
    if not value:
        return ""
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2})_(\d{2})-(\d{2})-(\d{2})", value.strip())
    return f"{match[1]} {match[2]}:{match[3]}:{match[4]}" if match else value
