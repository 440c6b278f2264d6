"""What an analyst reviews of a round's ingest without reading any file: the files ingested, the responses by
source, the quarantined rows (list, reject; accepting one re-validates it: consult.ingest.pipeline).

Apart from :mod:`consult.ingest.store` so that `consult quarantine list` and `consult files list` answer without
importing pandas (half a second on this project's machine): only SQLAlchemy and the models here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from db.models import IngestedFile, Partnership, QuarantinedRow, Response, Round

if TYPE_CHECKING:
    from consult.ingest.normalise import Reason


@dataclass(frozen=True)
class StoredFile:
    id: int
    name: str
    sha256: str
    size_bytes: int
    row_count: int
    ingested_at: dt.datetime
    kept: bool  # its bytes are stored (files ingested before schema 0002 are not)
    layout: str = ""  # plain | limesurvey | eusurvey | form (one submission of the response form)
    token_storage: str | None = None  # encrypted | None: as received


def list_files(session: Session, year: int) -> list[StoredFile]:
    query = (
        select(IngestedFile.id, IngestedFile.name, IngestedFile.sha256, IngestedFile.size_bytes,
               IngestedFile.row_count, IngestedFile.ingested_at, IngestedFile.content.is_not(None),
               IngestedFile.layout, IngestedFile.token_storage)
        .join(Round, Round.id == IngestedFile.round_id)
        .where(Round.year == year)
        .order_by(IngestedFile.id)
    )
    return [StoredFile(*row) for row in session.execute(query).all()]


@dataclass(frozen=True)
class SourceCounts:
    """A round's responses from one source: a file, or the response form (all its submissions together)."""

    source: str  # the file's name, or "response form"
    layout: str
    submissions: int
    accepted: int
    superseded: int
    partial: int


FORM_SOURCE = "response form"


def responses_by_source(session: Session, year: int) -> list[SourceCounts]:
    """Where the round's responses came from, file by file and the response form as one source, in the order
    they first arrived: the data-quality report shows form answers beside the files."""
    rows = session.execute(
        select(IngestedFile.id, IngestedFile.name, IngestedFile.layout, Response.status, func.count())
        .join(Round, Round.id == IngestedFile.round_id)
        .join(Response, (Response.file_id == IngestedFile.id) & (Response.round_id == IngestedFile.round_id))
        .where(Round.year == year)
        .group_by(IngestedFile.id, IngestedFile.name, IngestedFile.layout, Response.status)
        .order_by(IngestedFile.id)
    ).all()
    sources: dict[str, dict[str, Any]] = {}
    for file_id, name, layout, status, count in rows:
        key = FORM_SOURCE if layout == "form" else f"{file_id}:{name}"
        entry = sources.setdefault(key, {"source": FORM_SOURCE if layout == "form" else name, "layout": layout,
                                         "submissions": 0, "accepted": 0, "superseded": 0, "partial": 0})
        entry["submissions"] += count
        if status in ("accepted", "superseded", "partial"):
            entry[status] += count
    return [SourceCounts(**entry) for entry in sources.values()]


# --- quarantine review -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuarantineEntry:
    id: int
    file: str
    row_number: int
    partnership: str | None
    status: str
    reasons: list[Reason]
    raw: dict[str, Any]
    review_note: str | None


def list_quarantine(
    session: Session, year: int, *, status: str | None = "open", limit: int | None = None
) -> list[QuarantineEntry]:
    """Quarantined rows of a round, oldest first; at most ``limit`` (the report shows the first rows only)."""
    query = (
        select(QuarantinedRow, IngestedFile.name, Partnership.code)
        .join(Round, Round.id == QuarantinedRow.round_id)
        .join(IngestedFile, IngestedFile.id == QuarantinedRow.file_id)
        .outerjoin(Partnership, Partnership.id == QuarantinedRow.partnership_id)
        .where(Round.year == year)
        .order_by(QuarantinedRow.id)
    )
    if status:
        query = query.where(QuarantinedRow.status == status)
    if limit is not None:
        query = query.limit(limit)
    return [
        QuarantineEntry(
            id=row.id, file=file_name, row_number=row.row_number, partnership=code, status=row.status,
            reasons=list(row.reasons), raw=dict(row.raw), review_note=row.review_note,
        )
        for row, file_name, code in session.execute(query).all()
    ]


def get_quarantined(session: Session, year: int, row_id: int) -> QuarantinedRow:
    row = session.scalar(
        select(QuarantinedRow).join(Round, Round.id == QuarantinedRow.round_id).where(
            Round.year == year, QuarantinedRow.id == row_id
        )
    )
    if row is None:
        raise ConsultError(f"round {year} has no quarantined row {row_id}: see `consult quarantine list {year}`")
    return row


def reject_quarantined(session: Session, year: int, row_id: int, *, note: str | None = None) -> QuarantinedRow:
    """Keep the row out for good (it stays in the table, marked rejected, with the analyst's note)."""
    row = get_quarantined(session, year, row_id)
    if row.status == "accepted":
        raise ConsultError(f"quarantined row {row_id} was already accepted as response {row.response_id}")
    row.status = "rejected"
    row.reviewed_at = dt.datetime.now(dt.UTC)
    row.review_note = note
    return row
