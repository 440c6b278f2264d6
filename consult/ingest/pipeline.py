"""The ingest stages as plain functions over a batch of files: read -> match -> validate -> store.

Each stage takes every file of the batch at once (the flow runs one task per stage, never one per file or row).
Reading comes first for all files, so that an unreadable file stops the batch before anything is stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.ingest import tools
from consult.ingest.columns import canonical_cells
from consult.ingest.data_docs import has_page_for
from consult.ingest.matching import load_directory, match_partnerships
from consult.ingest.normalise import AnswerWriter, Normalised, Reason, normalise
from consult.ingest.readers import ReadLimits, ResponseFile, read_response_file
from consult.ingest.store import (
    FileSummary,
    IngestSummary,
    RowsToStore,
    get_quarantined,
    is_already_ingested,
    store_file,
    write_rows,
)
from consult.ingest.validation import (
    ValidationResult,
    load_suite,
    previous_limits,
    render_data_docs,
    validate,
)
from consult.questionnaire import Questionnaire
from consult.rounds import get_round, previous_round, round_questionnaire
from consult.settings import EXPECTATIONS_DIR, Settings
from db.engine import get_engine, session_scope
from db.models import IngestedFile, QuarantinedRow, Response


@dataclass
class MatchedFile:
    file: ResponseFile
    match: pd.DataFrame
    duplicate: bool = False
    # Already stored, but its report never got written (a run that stopped after the store): validated again
    # for the report and the Data Docs only, never stored twice.
    report_only: bool = False


@dataclass
class ValidatedFile:
    file: ResponseFile
    match: pd.DataFrame
    duplicate: bool
    submitted_at: pd.Series | None = None
    answers: AnswerWriter | None = None
    warnings: dict[int, list[Reason]] = field(default_factory=dict)
    validation: ValidationResult = field(default_factory=ValidationResult)
    anonymous: bool = False


def _engine(settings: Settings) -> Engine:
    return get_engine(settings.resolved_database_url)


def _round_questionnaire(session: Session, year: int) -> Questionnaire:
    return round_questionnaire(get_round(session, year))


def data_docs_dir(settings: Settings, year: int) -> Path:
    return settings.output_dir / "data-docs" / str(year)


def read_files(settings: Settings, year: int, paths: list[str]) -> list[ResponseFile]:
    """Read every file; the first unreadable one stops the batch with a ConsultError naming it."""
    if not paths:
        raise ConsultError("no response file given")
    with session_scope(_engine(settings)) as session:
        questionnaire = _round_questionnaire(session, year)
    limits = ReadLimits.from_settings(settings)
    return [read_response_file(Path(path), questionnaire, limits) for path in paths]


def match_files(settings: Settings, year: int, files: list[ResponseFile]) -> list[MatchedFile]:
    engine = _engine(settings)
    with session_scope(engine) as session:
        round_ = get_round(session, year)
        questionnaire = round_questionnaire(round_)
        carried = {name: any(bool((item.cells[name] != "").any()) for item in files) for name in ("token", "email")}
        directory = load_directory(session, round_, with_tokens=carried["token"], with_emails=carried["email"])
    matched = []
    seen: set[str] = set()
    for response_file in files:
        # The same bytes twice in one batch, or already ingested: stored once, skipped afterwards.
        repeated_in_batch = response_file.sha256 in seen
        duplicate = repeated_in_batch or is_already_ingested(engine, year, response_file.sha256)
        seen.add(response_file.sha256)
        report_only = (duplicate and not repeated_in_batch
                       and not has_page_for(data_docs_dir(settings, year), response_file.sha256))
        match = (
            match_partnerships(response_file.cells, directory, list(questionnaire.match_by))
            if not duplicate or report_only
            else pd.DataFrame(index=response_file.cells.index)
        )
        matched.append(MatchedFile(file=response_file, match=match, duplicate=duplicate, report_only=report_only))
    return matched


@dataclass(frozen=True)
class RoundWindow:
    """When a round took answers: from its opening to its close day (see :func:`check_submit_dates`)."""

    opened: dt.datetime
    closes_on: dt.date
    year: int

    @classmethod
    def of(cls, round_: Any) -> RoundWindow:
        return cls(opened=round_.opened_at, closes_on=round_.closes_on, year=round_.year)


def check_rows(
    cells: pd.DataFrame,
    match: pd.DataFrame,
    questionnaire: Questionnaire,
    suite: dict[str, Any],
    *,
    limits: pd.DataFrame,
    timezone: str,
    has_submit_date: bool,
    asset_name: str,
    window: RoundWindow,
) -> tuple[Normalised, ValidationResult, dict[int, list[Reason]]]:
    """The one path every answer takes before it is stored, whether it comes in a file of a million rows, as a
    quarantined row an analyst fixed, or as one submission of the response form (a one-row ``cells`` frame):
    normalise the cells, run the expectation suite on the complete rows, check the submit dates against the
    round's window. Returns the typed table, the suite's findings and every row's warnings (the normaliser's,
    the suite's and the window's)."""
    normalised = normalise(cells, questionnaire, timezone=timezone)
    validation = validate(
        normalised.typed, cells, match, questionnaire, suite, limits=limits, has_submit_date=has_submit_date,
        asset_name=asset_name,
    )
    outside = check_submit_dates(normalised.typed["submitted_at"], cells, window)
    return normalised, validation, _merge(normalised.warnings, validation.warnings, outside)


def validate_files(settings: Settings, year: int, matched: list[MatchedFile]) -> list[ValidatedFile]:
    """Type the answers and run the expectation suite once per file (its Data Docs: :func:`write_data_docs`)."""
    with session_scope(_engine(settings)) as session:
        round_ = get_round(session, year)
        questionnaire = round_questionnaire(round_)
        before = previous_round(session, year)
        limits = previous_limits(session, before.id if before else None, questionnaire)
        window = RoundWindow.of(round_)
    suite, suite_source = load_suite(questionnaire, EXPECTATIONS_DIR)
    validated = []
    for item in matched:
        if item.duplicate and not item.report_only:
            validated.append(ValidatedFile(file=item.file, match=item.match, duplicate=True))
            continue
        normalised, validation, warnings = check_rows(
            item.file.cells, item.match, questionnaire, suite, limits=limits, timezone=settings.timezone,
            has_submit_date=item.file.has_submit_date, asset_name=item.file.name, window=window,
        )
        validation.suite_source = suite_source
        validated.append(
            ValidatedFile(
                file=item.file,
                match=item.match,
                duplicate=item.duplicate,
                submitted_at=normalised.typed["submitted_at"],
                answers=AnswerWriter(normalised.typed, questionnaire),
                warnings=warnings,
                validation=validation,
                anonymous=questionnaire.anonymous,
            )
        )
    return validated


def check_submit_dates(
    submitted_at: pd.Series, cells: pd.DataFrame, window: RoundWindow
) -> dict[int, list[Reason]]:
    """Warnings about submit dates outside the round's open..close window (close day included).

    A date that is no submission date at all (before 2000, such as an anonymised 1980-01-01, or after tomorrow)
    never gets here: ``parse_timestamps`` reads it as missing and the suite quarantines its row with the value."""
    warnings: dict[int, list[Reason]] = {}
    dates = submitted_at.dropna()
    if dates.empty:
        return warnings
    opened = pd.Timestamp(window.opened)
    opened = opened.tz_localize("UTC") if opened.tzinfo is None else opened.tz_convert("UTC")
    # The close day counts whole, in any time zone a respondent may be in.
    closes = pd.Timestamp(window.closes_on, tz="UTC") + pd.Timedelta(days=1, hours=14)
    # A round opened after its close date is a past round entered afterwards: its opening says nothing about
    # when answers came in, so only the close date bounds them.
    opens = opened.normalize() - pd.Timedelta(hours=14) if opened < closes else pd.Timestamp.min.tz_localize("UTC")
    outside = (dates < opens) | (dates > closes)
    for row_number, value in dates[outside].items():
        written = str(cells.at[row_number, "submitted_at"]) if "submitted_at" in cells.columns else str(value)
        warnings.setdefault(int(row_number), []).append(
            {"expectation": "submit_date_in_round", "rule": "submit_date_window", "column": "submitted_at",
             "severity": "warning", "value": written,
             "message": f"submitted_at: {written} is outside round {window.year} ("
                        + (f"{opened.date().isoformat()} to " if opened < closes else "closing ")
                        + f"{window.closes_on.isoformat()})"})
    return warnings


def write_data_docs(settings: Settings, year: int, validated: list[ValidatedFile]) -> str | None:
    """The Great Expectations Data Docs of the batch, in the output folder; the path of their index page."""
    runs = []
    for item in validated:
        if item.validation.suite_run is not None:
            item.validation.suite_run.file_sha256 = item.file.sha256
            runs.append(item.validation.suite_run)
    folder = data_docs_dir(settings, year)
    # Nothing validated this time (files already ingested): the round's earlier Data Docs, if any.
    index = render_data_docs(runs, folder, cap=settings.data_docs_max_unexpected) or (folder / "index.html")
    return str(index.resolve()) if index.exists() else None


def _merge(*sources: dict[int, list[Reason]]) -> dict[int, list[Reason]]:
    merged: dict[int, list[Reason]] = {}
    for source in sources:
        for row_number, reasons in source.items():
            merged.setdefault(row_number, []).extend(reasons)
    return merged


def _file_report(item: ValidatedFile) -> dict[str, Any]:
    return {
        "format": item.file.file_format,
        "recognised": item.file.recognised,
        "notes": item.file.notes,
        "question_columns": item.file.question_columns,
        "suite": item.validation.suite_source,
        "expectations": [
            {"expectation": o.expectation, "rule": o.rule, "field": o.field, "severity": o.severity,
             "success": o.success, "checked": o.checked, "unexpected": o.unexpected, "examples": o.examples}
            for o in item.validation.outcomes
        ],
    }


def store_files(settings: Settings, year: int, validated: list[ValidatedFile]) -> IngestSummary:
    """Store each file in its own transaction; files already ingested are skipped."""
    engine = _engine(settings)
    summary = IngestSummary(year=year)
    for item in validated:
        if item.duplicate:
            summary.files.append(
                FileSummary(name=item.file.name, sha256=item.file.sha256, skipped_as_duplicate_file=True,
                            layout=item.file.layout, encoding=item.file.encoding, delimiter=item.file.delimiter)
            )
            continue
        assert item.submitted_at is not None and item.answers is not None
        rows = RowsToStore(
            raw=item.file.raw,
            complete=item.file.cells["complete"].astype(bool),
            partnership=item.match["partnership"],
            matched_by=item.match["matched_by"],
            match_error=item.match["match_error"],
            submitted_at=item.submitted_at,
            answers=item.answers,
            errors=item.validation.errors,
            warnings=item.warnings,
            response_key=item.file.cells["response_id"] if item.anonymous else None,
        )
        file_summary = store_file(
            engine, year=year, sha256=item.file.sha256, name=item.file.name, size_bytes=item.file.size_bytes,
            layout=item.file.layout, encoding=item.file.encoding, delimiter=item.file.delimiter,
            report=_file_report(item), rows=rows, content=item.file.content,
            secret=settings.resolved_token_secret(),
        )
        file_summary.notes = item.file.notes
        summary.files.append(file_summary)
    return summary


# --- quarantine: accept after review -----------------------------------------------------------------------


def accept_quarantined(
    settings: Settings,
    year: int,
    row_id: int,
    *,
    fixes: dict[str, str] | None = None,
    partnership_code: str | None = None,
    note: str | None = None,
) -> Response:
    """Re-validate a quarantined row (with the analyst's fixes) and store it as a response.

    ``fixes`` maps question codes (or ``submitted_at``) to corrected cell values; ``partnership_code`` assigns
    the row to a partnership of the round when it matched none. The raw cells stay as exported; the fixes are
    recorded as warnings of the response. Still invalid -> ConsultError listing what is wrong, nothing stored.
    """
    engine = _engine(settings)
    with session_scope(engine) as session:
        row = get_quarantined(session, year, row_id)
        if row.status != "open":
            raise ConsultError(f"quarantined row {row_id} is already {row.status}")
        round_ = get_round(session, year)
        questionnaire = round_questionnaire(round_)
        window = RoundWindow.of(round_)
        directory = load_directory(session, round_)
        before = previous_round(session, year)
        limits = previous_limits(session, before.id if before else None, questionnaire)
        file_name = session.scalar(select(IngestedFile.name).where(IngestedFile.id == row.file_id)) or "?"
        raw = pd.DataFrame([{key: "" if value is None else str(value) for key, value in row.raw.items()}],
                           index=pd.Index([row.row_number], name="row_number"), dtype=str)
        row_file_id, row_number = row.file_id, row.row_number
    fixes = dict(fixes or {})
    cells, _, _ = canonical_cells(Path(file_name), raw, questionnaire,
                                  tools.recognise(raw, Path(file_name).suffix.lstrip(".").lower()))
    unknown = [key for key in fixes if key not in cells.columns and key not in questionnaire.codes]
    if unknown:
        raise ConsultError(f"--set {unknown[0]}: not a question code of {questionnaire.code} v{questionnaire.version}")
    for key, value in fixes.items():
        cells[key] = pd.Series([value], index=cells.index, dtype=str)
    if "submitted_at" in fixes:
        cells["complete"] = cells["submitted_at"] != ""
    if partnership_code:
        code = partnership_code.strip().upper()
        if code not in directory.codes:
            raise ConsultError(f"--partnership {partnership_code}: not a partnership consulted in round {year}")
        match = pd.DataFrame({"partnership": pd.Series([directory.codes[code]], dtype="Int64", index=cells.index),
                              "matched_by": ["analyst"], "match_error": [""]}, index=cells.index)
    else:
        match = match_partnerships(cells, directory, list(questionnaire.match_by))
    if match["match_error"].iloc[0]:
        raise ConsultError(f"row {row_number} of {file_name}: {match['match_error'].iloc[0]} (use --partnership CODE)")
    suite, _ = load_suite(questionnaire, EXPECTATIONS_DIR)
    normalised, validation, checked_warnings = check_rows(
        cells, match, questionnaire, suite, limits=limits, timezone=settings.timezone, has_submit_date=True,
        asset_name=f"{file_name} row {row_number}", window=window,
    )
    if validation.errors:
        messages = "; ".join(reason["message"] for reason in validation.errors[row_number])
        raise ConsultError(f"row {row_number} of {file_name} is still invalid: {messages}")
    review: list[Reason] = [
        {"expectation": "analyst_review", "rule": "fixed", "column": key, "severity": "warning", "value": value,
         "message": f"{key} set to {value!r} by an analyst"}
        for key, value in fixes.items()
    ]
    rows = RowsToStore(
        raw=raw, complete=cells["complete"].astype(bool), partnership=match["partnership"],
        matched_by=match["matched_by"], match_error=match["match_error"],
        submitted_at=normalised.typed["submitted_at"], answers=AnswerWriter(normalised.typed, questionnaire),
        errors={}, warnings=_merge(checked_warnings, {row_number: review} if review else {}),
        response_key=cells["response_id"] if questionnaire.anonymous else None,
    )
    # The response and the review decision are written together or not at all.
    with engine.begin() as connection:
        write_rows(connection, round_id=directory.round_id, file_id=row_file_id, rows=rows)
        response_id = connection.scalar(
            select(Response.id).where(Response.file_id == row_file_id, Response.row_number == row_number)
        )
        connection.execute(
            update(QuarantinedRow)
            .where(QuarantinedRow.id == row_id)
            .values(
                status="accepted",
                response_id=response_id,
                reviewed_at=dt.datetime.now(dt.UTC),
                review_note=note or ("; ".join(r["message"] for r in review) if review else None),
            )
        )
    with session_scope(engine) as session:
        response = session.get(Response, response_id)
        assert response is not None
        session.expunge(response)
    return response
