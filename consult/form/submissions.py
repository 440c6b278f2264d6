"""Answers given in the response form: look a token up, check a submission on the ingest's own path, store it.

A form submission is stored exactly as a response file of one row is: an ``ingested_files`` row (layout
``form``, the submission kept byte for byte as a one-row CSV without the token) and a ``responses`` row
(``matched_by = form``), normalised and validated by :func:`consult.ingest.pipeline.check_rows`, the function
every ingested file goes through, with the same Great Expectations suite. So a form answer supersedes an earlier
one from a file or the form (history kept), "save for later" is a partial response (kept, never counted), and
reminders, ``consult outbox``, ``consult files`` and the indicators see it the moment it is committed.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import threading
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pandas as pd
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.ingest.normalise import AnswerWriter, Reason
from consult.ingest.pipeline import RoundWindow, check_rows
from consult.ingest.store import RowsToStore, write_rows
from consult.ingest.validation import load_suite, previous_limits
from consult.questionnaire import Question, Questionnaire, parse_questionnaire
from consult.rounds import previous_round
from consult.settings import EXPECTATIONS_DIR
from consult.tokens import hash_token
from db.models import IngestedFile, Partnership, QuestionnaireVersion, Response, Round, RoundParticipant

FORM_LAYOUT = "form"
MATCHED_BY = "form"
# The row number of the answer in its one-row CSV (the header is row 1, as in any exported file).
ROW = 2
IDENTITY_COLUMNS = ("partnership_id", "submitted_at", "submission_id")


class RoundClosed(ConsultError):
    """The round closed between showing the form and receiving the answer."""


@dataclass(frozen=True)
class Participant:
    """The partnership a token stands for, in its round."""

    participant_id: int
    partnership_id: int
    partnership_code: str
    partnership_name: str
    language: str
    round_id: int
    year: int
    round_status: str
    closes_on: dt.date
    questionnaire_version_id: int
    opened_at: dt.datetime

    @property
    def is_open(self) -> bool:
        return self.round_status == "open"

    @property
    def window(self) -> RoundWindow:
        return RoundWindow(opened=self.opened_at, closes_on=self.closes_on, year=self.year)


def find_participant(session: Session, token: str) -> Participant | None:
    """The participant whose token this is, else None. Tokens are only ever compared as their stored hash, so
    whatever their alphabet, an unknown, altered or other round's token costs the same single indexed lookup."""
    row = session.execute(
        select(
            RoundParticipant.id, Partnership.id, Partnership.code, Partnership.name, Partnership.language,
            Round.id, Round.year, Round.status, Round.closes_on, Round.questionnaire_version_id, Round.opened_at,
        )
        .join(Partnership, Partnership.id == RoundParticipant.partnership_id)
        .join(Round, Round.id == RoundParticipant.round_id)
        .where(RoundParticipant.token_hash == hash_token(token[:512]))
    ).one_or_none()
    return Participant(*row) if row is not None else None


@lru_cache(maxsize=32)
def _questionnaire(version_id: int, sha256: str, definition_json: str) -> Questionnaire:
    import json

    return parse_questionnaire(json.loads(definition_json), source=f"questionnaire version {version_id}")


def questionnaire_of(session: Session, participant: Participant) -> Questionnaire:
    """The round's questionnaire, parsed once per version (a form page is rendered far more often than that)."""
    import json

    version = session.get(QuestionnaireVersion, participant.questionnaire_version_id)
    assert version is not None
    return _questionnaire(version.id, version.sha256, json.dumps(version.definition, sort_keys=True))


_SUITES: dict[str, dict[str, Any]] = {}


def _suite(questionnaire: Questionnaire) -> dict[str, Any]:
    """The questionnaire's suite (as ingest loads it), read once per questionnaire content."""
    key = questionnaire.sha256
    if key not in _SUITES:
        _SUITES[key] = load_suite(questionnaire, EXPECTATIONS_DIR)[0]
    return _SUITES[key]


# --- form fields -> the cells a file row would hold --------------------------------------------------------


def form_fields(questionnaire: Questionnaire) -> list[Question]:
    """The fields a form asks: each question, a matrix as its rows, an other text or option comment on its own
    (:attr:`Questionnaire.answer_fields`; a stand-in with only ``questions`` asks those)."""
    return list(getattr(questionnaire, "answer_fields", questionnaire.questions))


def cells_from_fields(questionnaire: Questionnaire, fields: Mapping[str, list[str]]) -> dict[str, str]:
    """The answer cells as a plain export writes them: one string per question code, multi-select codes joined
    with ``;``. Anything posted that is not a question of this questionnaire is ignored."""
    cells: dict[str, str] = {}
    for question in form_fields(questionnaire):
        values = [value.strip() for value in fields.get(question.code, []) if value.strip()]
        if question.kind == "multi_select":
            cells[question.code] = ";".join(dict.fromkeys(values))
        elif question.kind == "text":
            given = fields.get(question.code, [])
            # Free text is kept as written (line breaks normalised as a browser sends them), escaped when shown.
            text = given[0].replace("\r\n", "\n") if given else ""
            cells[question.code] = text if text.strip() else ""
        else:
            cells[question.code] = values[0] if values else ""
    return cells


def _cells_frame(questionnaire: Questionnaire, partnership_code: str, answers: dict[str, str], submitted_at: str,
                 submission_id: str) -> pd.DataFrame:
    """The canonical one-row table the ingest's normaliser and suite read (see consult.ingest.readers)."""
    row = {"token": "", "partnership_id": partnership_code, "email": "", "submitted_at": submitted_at,
           **{code: answers.get(code, "") for code in questionnaire.codes}}
    frame = pd.DataFrame([row], index=pd.Index([ROW], name="row_number"), dtype=object)
    frame["complete"] = frame["submitted_at"] != ""
    return frame


def _raw_frame(questionnaire: Questionnaire, partnership_code: str, answers: dict[str, str], submitted_at: str,
               submission_id: str) -> pd.DataFrame:
    row = {"partnership_id": partnership_code, "submitted_at": submitted_at, "submission_id": submission_id,
           **{code: answers.get(code, "") for code in questionnaire.codes}}
    return pd.DataFrame([row], index=pd.Index([ROW], name="row_number"), dtype=object)


def _csv_bytes(raw: pd.DataFrame) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(list(raw.columns))
    writer.writerow([str(value) for value in raw.iloc[0].tolist()])
    return buffer.getvalue().encode("utf-8")


# --- checking and storing ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What became of one posted form: errors by question code (nothing stored), else the stored status."""

    errors: dict[str, list[Reason]] = field(default_factory=dict)
    status: str | None = None  # accepted | superseded | partial
    response_id: int | None = None
    file_id: int | None = None


@dataclass
class _Check:
    """One submission waiting for the suite: its one-row frames in, its typed row and findings out."""

    cells: pd.DataFrame
    match: pd.DataFrame
    limits: pd.DataFrame
    questionnaire: Questionnaire
    timezone: str
    window: RoundWindow
    done: threading.Event = field(default_factory=threading.Event)
    typed: pd.DataFrame | None = None
    errors: list[Reason] = field(default_factory=list)
    warnings: list[Reason] = field(default_factory=list)
    failure: BaseException | None = None


class SuiteBatcher:
    """Runs the ingest's :func:`check_rows` on the submissions that arrive together, as one table.

    A Great Expectations run costs about the same for one row as for hundreds (building its metric graph
    dominates), and runs cannot overlap usefully (CPU-bound Python, in-memory stores not meant for threads). So
    the first submission to arrive runs the suite, and every submission that arrives meanwhile waits and is
    checked in the next run, together with the others: a file of concurrent answers, on the ingest's own path.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[_Check] = []
        self._running = False

    def check(self, item: _Check) -> _Check:
        with self._lock:
            self._pending.append(item)
            leader = not self._running
            self._running = True
        if leader:
            while True:
                with self._lock:
                    batch, self._pending = self._pending, []
                    if not batch:
                        self._running = False
                        break
                self._run(batch)
        item.done.wait()
        if item.failure is not None:
            raise item.failure
        return item

    @staticmethod
    def _run(batch: list[_Check]) -> None:
        groups: dict[tuple[str, str, RoundWindow], list[_Check]] = {}
        for item in batch:
            groups.setdefault((item.questionnaire.sha256, item.timezone, item.window), []).append(item)
        for items in groups.values():
            try:
                _check_together(items)
            except BaseException as error:  # noqa: BLE001 - handed to every waiting submission, raised there
                for item in items:
                    item.failure = error
            finally:
                for item in items:
                    item.done.set()


def _check_together(items: list[_Check]) -> None:
    numbers = [ROW + position for position in range(len(items))]

    def stacked(frames: list[pd.DataFrame]) -> pd.DataFrame:
        return pd.concat([frame.set_axis(pd.Index([number], name="row_number")) for frame, number
                          in zip(frames, numbers, strict=True)])

    cells = stacked([item.cells for item in items])
    match = stacked([item.match for item in items])
    limits = pd.concat([item.limits for item in items])
    limits = limits[~limits.index.duplicated()]
    first = items[0]
    normalised, validation, warnings = check_rows(
        cells, match, first.questionnaire, _suite(first.questionnaire), limits=limits, timezone=first.timezone,
        has_submit_date=True, asset_name="form submissions", window=first.window,
    )
    for item, number in zip(items, numbers, strict=True):
        item.typed = normalised.typed.loc[[number]].set_axis(pd.Index([ROW], name="row_number"))
        item.errors = validation.errors.get(number, [])
        item.warnings = warnings.get(number, [])


SUITE_BATCHER = SuiteBatcher()


def submit(
    engine: Engine, participant: Participant, questionnaire: Questionnaire, answers: dict[str, str], *,
    complete: bool, timezone: str = "UTC", now: dt.datetime | None = None,
) -> Outcome:
    """Check the answers as ingest checks a file's row, then store them (``complete=False``: save for later, a
    partial response that is kept and never counted). Errors leave nothing stored."""
    stamp = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC)
    submitted_at = stamp.isoformat(timespec="microseconds") if complete else ""
    submission_id = uuid.uuid4().hex
    cells = _cells_frame(questionnaire, participant.partnership_code, answers, submitted_at, submission_id)
    match = pd.DataFrame(
        {"partnership": pd.Series([participant.partnership_id], dtype="Int64", index=cells.index),
         "matched_by": [MATCHED_BY], "match_error": [""]},
        index=cells.index,
    )
    with Session(engine) as session:
        before = previous_round(session, participant.year)
        limits = previous_limits(session, before.id if before else None, questionnaire,
                                 partnership_ids=[participant.partnership_id])
    checked = SUITE_BATCHER.check(_Check(cells=cells, match=match, limits=limits, questionnaire=questionnaire,
                                         timezone=timezone, window=participant.window))
    assert checked.typed is not None
    if checked.errors:
        by_field: dict[str, list[Reason]] = {}
        for reason in checked.errors:
            by_field.setdefault(str(reason["column"]), []).append(reason)
        return Outcome(errors=by_field)
    raw = _raw_frame(questionnaire, participant.partnership_code, answers, submitted_at, submission_id)
    content = _csv_bytes(raw)
    rows = RowsToStore(
        raw=raw, complete=cells["complete"].astype(bool), partnership=match["partnership"],
        matched_by=match["matched_by"], match_error=match["match_error"],
        submitted_at=checked.typed["submitted_at"], answers=AnswerWriter(checked.typed, questionnaire),
        errors={}, warnings={ROW: checked.warnings} if checked.warnings else {},
    )
    name = f"form-{participant.partnership_code}-{stamp.strftime('%Y%m%dT%H%M%S%fZ')}.csv"
    report = {"source": FORM_LAYOUT, "complete": complete,
              "warnings": [reason["message"] for reason in checked.warnings]}
    with engine.begin() as connection:
        # One submission of a partnership at a time: this write takes the participant's row lock on PostgreSQL
        # and the write lock on SQLite before anything is read, so two concurrent submissions are decided one
        # after the other (the later supersedes the earlier) and neither is lost.
        connection.execute(
            update(RoundParticipant).where(RoundParticipant.id == participant.participant_id)
            .values(token_hash=RoundParticipant.token_hash)
        )
        status = connection.scalar(select(Round.status).where(Round.id == participant.round_id))
        if status != "open":
            raise RoundClosed(f"round {participant.year} is closed")
        file_id = connection.execute(
            insert(IngestedFile).values(
                round_id=participant.round_id, sha256=hashlib.sha256(content).hexdigest(), name=name,
                size_bytes=len(content), row_count=1, layout=FORM_LAYOUT, encoding="utf-8", delimiter=",",
                report=report, content=zlib.compress(content),
            ).returning(IngestedFile.id)
        ).scalar_one()
        counts = write_rows(connection, round_id=participant.round_id, file_id=file_id, rows=rows)
        response_id = connection.scalar(select(Response.id).where(Response.file_id == file_id))
        stored_status = connection.scalar(select(Response.status).where(Response.id == response_id))
    assert counts["quarantined"] == 0
    return Outcome(status=stored_status, response_id=response_id, file_id=file_id)


# --- what was answered before ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Previous:
    """The partnership's latest accepted response and its latest saved draft (newer than that), if any."""

    accepted_answers: dict[str, Any] | None
    accepted_at: dt.datetime | None
    draft_cells: dict[str, str] | None
    draft_saved_at: dt.datetime | None


def previous_answers(session: Session, participant: Participant) -> Previous:
    accepted = session.execute(
        select(Response.id, Response.answers, Response.submitted_at, Response.created_at).where(
            Response.round_id == participant.round_id, Response.partnership_id == participant.partnership_id,
            Response.status == "accepted",
        ).order_by(Response.id.desc()).limit(1)
    ).one_or_none()
    draft_query = (
        select(Response.id, IngestedFile.content, Response.created_at)
        .join(IngestedFile, IngestedFile.id == Response.file_id)
        .where(Response.round_id == participant.round_id, Response.partnership_id == participant.partnership_id,
               Response.status == "partial", IngestedFile.layout == FORM_LAYOUT)
        .order_by(Response.id.desc()).limit(1)
    )
    if accepted is not None:
        draft_query = draft_query.where(Response.id > accepted.id)
    draft = session.execute(draft_query).one_or_none()
    draft_cells = None
    if draft is not None and draft.content is not None:
        reader = csv.DictReader(io.StringIO(zlib.decompress(draft.content).decode("utf-8")))
        draft_cells = next(reader, None)
    return Previous(
        accepted_answers=dict(accepted.answers) if accepted else None,
        accepted_at=_aware(accepted.submitted_at or accepted.created_at) if accepted else None,
        draft_cells=draft_cells,
        draft_saved_at=_aware(draft.created_at) if draft is not None else None,
    )


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


def cells_from_answers(questionnaire: Questionnaire, answers: Mapping[str, Any]) -> dict[str, str]:
    """Typed answers (``responses.answers``) back to the cells a form shows, to revise an accepted response."""
    cells: dict[str, str] = {}
    for question in form_fields(questionnaire):
        value = answers.get(question.code)
        if value is None:
            cells[question.code] = ""
        elif isinstance(value, list):
            cells[question.code] = ";".join(str(item) for item in value)
        elif isinstance(value, bool):
            cells[question.code] = "yes" if value else "no"
        elif isinstance(value, float) and value.is_integer() and question.kind == "integer":
            cells[question.code] = str(int(value))
        else:
            cells[question.code] = str(value)
    return cells


def shown_answer(question: Question, value: Any, words: Mapping[str, str]) -> str:
    """An answer as a person reads it in a summary (option labels, yes/no in the page's language)."""
    if value is None or value == "" or value == []:
        return words["unanswered"]
    if isinstance(value, list):
        return ", ".join(question.option_label(str(code)) for code in value)
    if isinstance(value, bool):
        return words["yes"] if value else words["no"]
    if question.is_select:
        return question.option_label(str(value))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
