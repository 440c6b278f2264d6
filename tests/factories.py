"""Test factories: put rows in the database the way the engine's own steps would, without going through them.

Everything here reads the reference data with the standard library only, so that tests can compute expected
figures from the same rows independently of the code under test.

- ``reference_rows(year)`` / ``accepted_reference_rows(year)``: the example CSV rows, and the ones the acceptance
  rule keeps (latest complete submission per partnership of the panel).
- ``add_responses(session, year, rows)``: insert response rows (plain-layout strings or typed ``answers``) for a
  round that is already open, as one ingested file.
- ``add_reference_responses(session, year)``: the example export of ``year`` with the statuses the ingest would
  give (accepted / superseded / partial; unknown partnerships left out, as quarantined).
- ``open_reference_round(session, year)``: open the 2019 or 2020 reference round on an imported panel.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from consult.questionnaire import Questionnaire
from consult.rounds import get_round, open_round, round_questionnaire
from db.models import Contact, IngestedFile, Partnership, Response

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "escp4i"
TEST_TOKEN_SECRET = b"test-token-secret"


def reference_rows(year: int) -> list[dict[str, str]]:
    with (EXAMPLES / f"responses-{year}.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def panel_rows() -> list[dict[str, str]]:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def panel_strands() -> dict[str, int]:
    return {row["partnership_id"]: int(row["strand"]) for row in panel_rows()}


def accepted_reference_rows(year: int) -> dict[str, dict[str, str]]:
    """Latest complete submission per partnership of the panel (the README's acceptance rule)."""
    known = panel_strands()
    accepted: dict[str, dict[str, str]] = {}
    for row in reference_rows(year):
        pid = row["partnership_id"]
        if pid not in known or not row["submitted_at"].strip():
            continue
        if pid not in accepted or row["submitted_at"] > accepted[pid]["submitted_at"]:
            accepted[pid] = row
    return accepted


def split(value: str) -> list[str]:
    return [part.strip() for part in value.split(";") if part.strip()]


def typed_answers(row: Mapping[str, Any], questionnaire: Questionnaire) -> dict[str, Any]:
    """Plain-layout strings to the typed ``answers`` JSON: lists for multi-select, int, bool, str, None."""
    answers: dict[str, Any] = {}
    for question in questionnaire.questions:
        raw = row.get(question.code)
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            answers[question.code] = None
        elif not isinstance(raw, str):
            answers[question.code] = raw
        elif question.kind == "multi_select":
            answers[question.code] = split(raw)
        elif question.kind == "integer":
            answers[question.code] = int(raw)
        elif question.kind == "number":
            answers[question.code] = float(raw)
        elif question.kind == "yes_no":
            answers[question.code] = raw.strip().lower() in ("yes", "y", "true", "1")
        else:
            answers[question.code] = raw
    return answers


def add_responses(session: Session, year: int, rows: Iterable[Mapping[str, Any]], *,
                  name: str = "factory.csv") -> list[Response]:
    """Insert rows as responses of the open round ``year``, all from one ingested file.

    Each row names its partnership by code (``partnership_id``); it has either ``answers`` (typed, stored as is)
    or one plain-layout string per question code. Optional: ``submitted_at`` (ISO string or datetime),
    ``status`` (default ``accepted``).
    """
    round_ = get_round(session, year)
    questionnaire = round_questionnaire(round_)
    rows = list(rows)
    ids = dict(session.execute(select(Partnership.code, Partnership.id)).tuples().all())
    serial = session.scalar(select(func.count()).select_from(IngestedFile)) or 0
    body = json.dumps([dict(r) for r in rows], sort_keys=True, default=str).encode()
    file = IngestedFile(
        round_id=round_.id,
        sha256=hashlib.sha256(body + str(serial).encode()).hexdigest(),
        name=name,
        size_bytes=len(body),
        row_count=len(rows),
        layout="plain",
        report={},
    )
    session.add(file)
    session.flush()
    responses = []
    for number, row in enumerate(rows, start=1):
        submitted = row.get("submitted_at")
        if isinstance(submitted, str):
            submitted = dt.datetime.fromisoformat(submitted).replace(tzinfo=dt.UTC) if submitted.strip() else None
        answers = row["answers"] if "answers" in row else typed_answers(row, questionnaire)
        response = Response(
            round_id=round_.id,
            file_id=file.id,
            row_number=number,
            partnership_id=ids[row["partnership_id"]],
            matched_by="partnership_id",
            submitted_at=submitted,
            status=row.get("status", "accepted"),
            raw={k: v for k, v in row.items() if k not in ("answers", "status")},
            answers=answers,
            warnings=[],
        )
        session.add(response)
        responses.append(response)
    session.flush()
    return responses


def add_reference_responses(session: Session, year: int) -> list[Response]:
    """The example export of ``year`` with the statuses the ingest gives: the latest complete submission per
    known partnership accepted, earlier complete ones superseded, incomplete ones partial, unknown ones left out."""
    known = panel_strands()
    accepted = accepted_reference_rows(year)
    rows = []
    for row in reference_rows(year):
        pid = row["partnership_id"]
        if pid not in known:
            continue
        if not row["submitted_at"].strip():
            status = "partial"
        elif accepted[pid]["submitted_at"] == row["submitted_at"]:
            status = "accepted"
        else:
            status = "superseded"
        rows.append({**row, "status": status})
    return add_responses(session, year, rows, name=f"responses-{year}.csv")


def add_panel(session: Session) -> None:
    """The reference panel inserted directly (for tests that do not exercise the panel import)."""
    seen: dict[str, Partnership] = {}
    for row in panel_rows():
        partnership = seen.get(row["partnership_id"])
        if partnership is None:
            attributes = {name: row[name] for name in ("acronym", "strand", "country") if row[name]}
            partnership = Partnership(code=row["partnership_id"], name=row["name"], attributes=attributes,
                                      language=row["language"] or "en")
            session.add(partnership)
            session.flush()
            seen[row["partnership_id"]] = partnership
        session.add(Contact(partnership_id=partnership.id, first_name=row["contact_first_name"],
                            last_name=row["contact_last_name"], email=row["contact_email"]))
    session.flush()


def open_reference_round(session: Session, year: int, *, token_secret: bytes = TEST_TOKEN_SECRET) -> None:
    """Open the reference round ``year`` (its questionnaire, closing on 30 June) on the imported panel."""
    open_round(session, year=year, questionnaire_path=EXAMPLES / f"questionnaire-{year}.yaml",
               token_secret=token_secret, closes_on=dt.date(year, 6, 30), today=dt.date(year, 2, 1))
