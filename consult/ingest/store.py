"""Store one validated response file in one transaction, and review quarantined rows.

What a file leaves in the database:

- one ``ingested_files`` row (sha256, name, size, row count, layout, encoding, delimiter, and a small report);
  ingesting the same bytes again for the same round is a no-op;
- the file itself, zlib-compressed, in ``ingested_files.content``: every row's cells exactly as exported, which
  :func:`raw_cells` gives back by row number (a per-row copy would take five times the space and half the store
  time of a million-row file);
- one ``responses`` row per row that matched a partnership and failed no error-severity expectation, with
  ``answers`` = the typed values. ``answers`` is the shape the indicators read::

      {question_code: value}   # a list of option codes for multi_select  (["US", "JP"])
                               # an int for integer, a float for number, a bool for yes_no,
                               # a str for single_select and text (text exactly as written),
                               # None when unanswered

  ``status`` is ``accepted`` (the latest complete submission of a partnership, the only one counted),
  ``superseded`` (an earlier submission, kept for history) or ``partial`` (no submit date: kept, never counted);
  ``warnings`` lists the warning-severity findings ({expectation, rule, column, severity, value, message});
- one ``quarantined_rows`` row per row that failed an error-severity expectation or matched no partnership,
  with the raw cells and the reasons (expectation, offending value, message), for an analyst to accept or reject.

Rows are written with the driver's bulk path (:mod:`db.bulk`), never one ORM object per row.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import tempfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from consult.ingest.keep import ENCRYPTED, hash_token_cells, is_token_column, seal, token_digest, unseal
from consult.ingest.normalise import AnswerWriter, Reason
from consult.ingest.readers import read_table
from consult.ingest.review import (  # noqa: F401 - re-exported: where the ingest's callers have found them
    FORM_SOURCE,
    QuarantineEntry,
    SourceCounts,
    StoredFile,
    get_quarantined,
    list_files,
    list_quarantine,
    reject_quarantined,
    responses_by_source,
)
from db.bulk import (
    BulkLoad,
    bulk_insert,
    bulk_insert_columns,
    checked_in_bulk,
    timestamp_format,
    timestamp_texts,
)
from db.models import IngestedFile, Response, Round

# created_at is left to the column's default (the time of the transaction): a million parsed copies of one
# timestamp cost PostgreSQL 0.4 s.
RESPONSE_COLUMNS = (
    "round_id", "file_id", "row_number", "partnership_id", "matched_by", "submitted_at", "status", "answers",
    "warnings", "response_key",
)
QUARANTINE_COLUMNS = ("round_id", "file_id", "row_number", "partnership_id", "raw", "reasons", "status", "created_at")
CHUNK_ROWS = 50_000


@dataclass
class FileSummary:
    """What happened to one file; the CLI prints these counts."""

    name: str
    sha256: str
    rows: int = 0
    accepted: int = 0
    superseded: int = 0
    partial: int = 0
    quarantined: int = 0
    warnings: int = 0
    skipped_as_duplicate_file: bool = False
    replaced_earlier: int = 0
    layout: str = ""
    encoding: str | None = None
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestSummary:
    year: int
    files: list[FileSummary] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(summary, name)) for summary in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"year": self.year, "files": [asdict(summary) for summary in self.files]}


@dataclass
class RowsToStore:
    """One file's rows after matching and validation, aligned on the row number (the index)."""

    raw: pd.DataFrame
    complete: pd.Series
    partnership: pd.Series
    matched_by: pd.Series
    match_error: pd.Series
    submitted_at: pd.Series
    answers: AnswerWriter
    errors: dict[int, list[Reason]]
    warnings: dict[int, list[Reason]]
    # An anonymous round: each row's response id (the tool's), which takes the place of the partnership.
    response_key: pd.Series | None = None


def _utc(value: Any) -> pd.Timestamp:
    if value is None or pd.isna(value):
        return pd.NaT
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def decide_statuses(
    connection: Connection, round_id: int, rows: RowsToStore, stored: pd.Series
) -> tuple[pd.Series, list[int]]:
    """Status of each stored row, and the ids of earlier accepted responses that these rows supersede.

    The latest complete submission of a partnership wins (by submit date, then by file order); on equal dates
    the later file wins, so a cumulative re-export takes over without changing any answer.
    """
    status = pd.Series("partial", index=rows.raw.index, dtype=object)
    complete = stored & rows.complete
    anonymous = rows.response_key is not None
    # Who a row is from: its partnership, or in an anonymous round the tool's response id.
    keys = rows.response_key[complete].astype(str) if anonymous else rows.partnership[complete].astype("int64")
    candidates = pd.DataFrame(
        {"key": keys, "ts": rows.submitted_at[complete], "row": rows.raw.index[complete]},
        index=rows.raw.index[complete],
    ).sort_values(["key", "ts", "row"], na_position="first")
    latest = ~candidates["key"].duplicated(keep="last")
    status[candidates.index[~latest]] = "superseded"
    winners = candidates[latest]
    status[winners.index] = "accepted"
    earlier: list[int] = []
    if len(winners):
        key_column = Response.response_key if anonymous else Response.partnership_id
        query = select(Response.id, key_column, Response.submitted_at).where(
            Response.round_id == round_id, Response.status == "accepted", key_column.is_not(None)
        )
        if len(winners) <= 1000:
            # A form submission or a small file: its respondents' responses only, not the whole round's.
            keys = [str(k) for k in winners["key"].tolist()] if anonymous else [int(k) for k in winners["key"].tolist()]
            query = query.where(key_column.in_(keys))
        existing = connection.execute(query).all()
        by_key = {key: (response_id, _utc(ts)) for response_id, key, ts in existing}
        if by_key:
            winner_ts = dict(zip(winners["key"].tolist(), winners["ts"].tolist(), strict=True))
            winner_row = dict(zip(winners["key"].tolist(), winners.index.tolist(), strict=True))
            for key, (response_id, old_ts) in by_key.items():
                if key not in winner_ts:
                    continue
                new_ts = winner_ts[key]
                if pd.isna(new_ts) or pd.isna(old_ts) or new_ts >= old_ts:
                    earlier.append(response_id)
                else:
                    status[winner_row[key]] = "superseded"
    return status, earlier


def _json_lines(frame: pd.DataFrame) -> list[str]:
    """One JSON object per row ({column: cell}); orjson over the columns is 2.6x faster than ``to_json``."""
    if frame.empty:
        return []
    if len(frame.columns) == 0:
        return ["{}"] * len(frame)
    keys = [str(name) for name in frame.columns]
    records = (dict(zip(keys, row, strict=True)) for row in zip(*(frame[name].tolist() for name in frame.columns)))
    return [_dumps(record) for record in records]


def _dumps(record: dict[str, Any]) -> str:
    try:
        return orjson.dumps(record).decode()
    except TypeError:  # orjson.JSONEncodeError: a lone surrogate or a non-str cell, which json still writes
        return json.dumps(record, ensure_ascii=False, default=str)


def write_rows(
    connection: Connection, *, round_id: int, file_id: int, rows: RowsToStore, bulk: BulkLoad | None = None
) -> dict[str, int]:
    """Write the responses and quarantined rows of one file; returns counts by outcome. ``bulk``: the load
    :func:`db.bulk.checked_in_bulk` settled on, when the caller holds one."""
    now_text = dt.datetime.now(dt.UTC).strftime(timestamp_format(connection))
    quarantined = (rows.match_error != "") | rows.raw.index.isin(list(rows.errors))
    quarantined = pd.Series(quarantined, index=rows.raw.index)
    stored = ~quarantined
    status, earlier = decide_statuses(connection, round_id, rows, stored)
    if earlier:
        connection.execute(
            update(Response).where(Response.id.in_(earlier)).values(status="superseded"),
        )
    # Partial rows are not validated, so their warnings are the normaliser's only; all others carry both.
    warning_rows = set(rows.warnings)

    # Positional arrays, computed once: label lookups per chunk would cost more than the insert itself.
    positions = np.flatnonzero(stored.to_numpy())
    row_numbers = rows.raw.index.to_numpy()
    anonymous = rows.response_key is not None
    partnership = rows.partnership.to_numpy(dtype="float64", na_value=np.nan)
    response_keys = rows.response_key.to_numpy(dtype=object) if anonymous else None
    columns = [rows.matched_by.to_numpy(dtype=object), status.to_numpy(dtype=object)]
    first_id = bulk.reserve_ids(len(positions)) if bulk else None

    def response_chunks() -> Iterator[list[Any]]:
        """The stored rows a chunk at a time, column-wise, in RESPONSE_COLUMNS order."""
        for start in range(0, len(positions), CHUNK_ROWS):
            chosen = positions[start : start + CHUNK_ROWS]
            numbers = row_numbers[chosen]
            matched_by, statuses = (column[chosen].tolist() for column in columns)
            # Per chunk, like everything here: on PostgreSQL it overlaps with the server's work on the last one.
            submitted = timestamp_texts(connection, rows.submitted_at.iloc[chosen]).tolist()
            warnings_json = [json.dumps(rows.warnings[r], ensure_ascii=False) if r in warning_rows else "[]"
                             for r in numbers.tolist()] if warning_rows else "[]"
            chunk = [round_id, file_id, numbers, None if anonymous else partnership[chosen].astype("int64"),
                     matched_by, submitted, statuses, rows.answers.rows(chosen), warnings_json,
                     None if response_keys is None else response_keys[chosen].tolist()]
            yield chunk if first_id is None else [np.arange(first_id + start, first_id + start + len(chosen)), *chunk]

    bulk_insert_columns(connection, "responses", RESPONSE_COLUMNS if first_id is None else ("id", *RESPONSE_COLUMNS),
                        response_chunks())

    quarantined_index = rows.raw.index[quarantined.to_numpy()]
    if len(quarantined_index):
        # Token cells as their hash: a quarantined row is no working login (consult.ingest.keep).
        raw_json = _json_lines(hash_token_cells(rows.raw.loc[quarantined_index]))
        quarantine_rows = []
        for row_number, raw_text in zip(quarantined_index.tolist(), raw_json, strict=True):
            reasons = list(rows.errors.get(row_number, []))
            if rows.match_error[row_number]:
                reasons.insert(0, _match_reason(rows, row_number))
            partnership = rows.partnership[row_number]
            quarantine_rows.append(
                (round_id, file_id, row_number, None if pd.isna(partnership) else int(partnership), raw_text,
                 json.dumps(reasons, ensure_ascii=False), "open", now_text)
            )
        bulk_insert(connection, "quarantined_rows", QUARANTINE_COLUMNS, quarantine_rows)

    counts = status[stored].value_counts().to_dict()
    return {
        "rows": len(rows.raw),
        "accepted": int(counts.get("accepted", 0)),
        "superseded": int(counts.get("superseded", 0)),
        "partial": int(counts.get("partial", 0)),
        "quarantined": int(quarantined.sum()),
        "warnings": int(sum(1 for row in warning_rows if row in stored.index and stored[row])),
        "replaced_earlier": len(earlier),
    }


def _match_reason(rows: RowsToStore, row_number: int) -> Reason:
    return {
        "expectation": "match_partnership",
        "rule": "match",
        "column": "partnership",
        "severity": "error",
        "value": _identity_value(rows.raw.loc[row_number]),
        "message": str(rows.match_error[row_number]),
    }


def _identity_value(raw_row: pd.Series) -> str:
    for column in raw_row.index:
        key = "".join(ch for ch in str(column).lower() if ch.isalnum())
        if key in ("partnershipid", "partnership", "email", "emailaddress") and str(raw_row[column]).strip():
            return str(raw_row[column]).strip()
    for column in raw_row.index:
        if str(column).strip().lower() == "token" and str(raw_row[column]).strip():
            token = str(raw_row[column]).strip()
            return f"token …{token[-4:]}" if len(token) > 4 else "token"
    return ""


def store_file(
    engine: Engine,
    *,
    year: int,
    sha256: str,
    name: str,
    size_bytes: int,
    layout: str,
    encoding: str | None,
    delimiter: str | None,
    report: dict[str, Any],
    rows: RowsToStore,
    content: bytes | None = None,
    secret: bytes | None = None,
) -> FileSummary:
    """Store one file in one transaction: all of it, or nothing. ``content``: the file's zlib-compressed bytes,
    kept encrypted under the token ``secret``'s key when it is given (consult.ingest.keep)."""
    token_storage = None
    if content is not None and secret is not None:
        content, token_storage = seal(content, secret=secret, sha256=sha256), ENCRYPTED
    summary = FileSummary(name=name, sha256=sha256, layout=layout, encoding=encoding, delimiter=delimiter)
    with engine.begin() as connection:
        round_id = connection.scalar(select(Round.id).where(Round.year == year))
        if round_id is None:
            raise ConsultError(f"{name}: round {year} does not exist")
        existing = connection.scalar(
            select(IngestedFile.id).where(IngestedFile.round_id == round_id, IngestedFile.sha256 == sha256)
        )
        if existing is not None:
            summary.skipped_as_duplicate_file = True
            return summary
        with checked_in_bulk(connection, Response.__table__, rows=len(rows.raw)) as bulk:
            file_id = connection.execute(
                insert(IngestedFile).values(
                    round_id=round_id, sha256=sha256, name=name[:500], size_bytes=size_bytes,
                    row_count=len(rows.raw), layout=layout, encoding=encoding, delimiter=delimiter, report=report,
                    content=content, token_storage=token_storage,
                ).returning(IngestedFile.id)
            ).scalar_one()
            counts = write_rows(connection, round_id=round_id, file_id=file_id, rows=rows, bulk=bulk)
    for key, value in counts.items():
        setattr(summary, key, value)
    return summary


def is_already_ingested(engine: Engine, year: int, sha256: str) -> bool:
    with engine.connect() as connection:
        return (
            connection.scalar(
                select(IngestedFile.id)
                .join(Round, Round.id == IngestedFile.round_id)
                .where(Round.year == year, IngestedFile.sha256 == sha256)
            )
            is not None
        )


def _kept_bytes(name: str, sha256: str, content: bytes, token_storage: str | None, secret: bytes | None) -> bytes:
    """The file as received, from its kept form (decrypted when it was kept encrypted)."""
    if token_storage == ENCRYPTED:
        if secret is None:
            from consult.settings import get_settings

            secret = get_settings().resolved_token_secret()
        content = unseal(content, secret=secret, sha256=sha256, name=name)
    return zlib.decompress(content)


def stored_file_cells(session: Session, file_id: int, *, secret: bytes | None = None) -> pd.DataFrame:
    """The cells of a stored file exactly as exported, indexed by row number (as the responses refer to them)."""
    found = session.execute(
        select(IngestedFile.name, IngestedFile.content, IngestedFile.sha256, IngestedFile.token_storage)
        .where(IngestedFile.id == file_id)
    ).one_or_none()
    if found is None:
        raise ConsultError(f"no ingested file {file_id}")
    name, content, sha256, token_storage = found
    if content is None:
        raise ConsultError(f"{name}: stored before files were kept; its rows keep their own raw cells")
    with tempfile.TemporaryDirectory(prefix="consult-file-") as folder:
        # The reader goes by the file name's extension, so the copy keeps the name it was received under.
        copy = Path(folder) / Path(name).name
        copy.write_bytes(_kept_bytes(name, sha256, content, token_storage, secret))
        return read_table(copy).cells


def _file_of_round(session: Session, year: int, file_id: int) -> IngestedFile:
    found = session.scalar(
        select(IngestedFile).join(Round, Round.id == IngestedFile.round_id)
        .where(Round.year == year, IngestedFile.id == file_id)
    )
    if found is None:
        raise ConsultError(f"round {year} has no ingested file {file_id}: see `consult files list {year}`")
    return found


def export_file(session: Session, year: int, file_id: int, folder: Path) -> Path:
    """Write a stored file back, byte for byte, as ``folder/NAME``; checked against its recorded SHA-256."""
    record = _file_of_round(session, year, file_id)
    if record.content is None:
        raise ConsultError(f"{record.name}: stored before files were kept; its rows keep their own raw cells")
    content = _kept_bytes(record.name, record.sha256, record.content, record.token_storage, None)
    if hashlib.sha256(content).hexdigest() != record.sha256:
        raise ConsultError(f"{record.name}: the stored bytes do not match the recorded SHA-256; do not trust them")
    target = folder / Path(record.name).name
    if target.exists():
        raise ConsultError(f"{target}: already exists; choose another folder with --to")
    folder.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return target


def file_row_cells(session: Session, year: int, file_id: int, row_number: int) -> dict[str, str]:
    """One row of a stored file, as exported ({column: text}), by its row number."""
    record = _file_of_round(session, year, file_id)
    cells = stored_file_cells(session, record.id)
    if row_number not in cells.index:
        first, last = (int(cells.index.min()), int(cells.index.max())) if len(cells) else (0, 0)
        raise ConsultError(f"{record.name} has no row {row_number} (rows {first}..{last})")
    # A token cell is shown as its hash: printing it would hand out a working login (consult.ingest.keep).
    return {str(key): token_digest(value) if is_token_column(key) else str(value)
            for key, value in cells.loc[row_number].items()}


def raw_cells(session: Session, response: Response) -> dict[str, str]:
    """A response's cells as exported ({column: text}): its row of the stored file.

    Reads the whole stored file for one row: for many rows of one file, read :func:`stored_file_cells` once."""
    if response.raw is not None:  # stored under schema 0001, with a per-row copy
        return {str(key): "" if value is None else str(value) for key, value in response.raw.items()}
    row = stored_file_cells(session, response.file_id).loc[response.row_number]
    return {str(key): str(value) for key, value in row.items()}
