"""Specification of the outbox's planning, the reminder schedule, and what the Prefect UI shows while sending."""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections import Counter

import pytest
from sqlalchemy import select

from consult.mail import outbox
from db.engine import session_scope
from db.models import OutboxMessage, Partnership
from flows.mailing import send_invitations
from tests.conftest import EXAMPLES

CLOSES = dt.date(2019, 6, 30)


@pytest.mark.parametrize(
    ("today", "force", "expected"),
    [
        (dt.date(2019, 6, 15), False, None),  # 15 days left: the 14-day reminder is not due yet
        (dt.date(2019, 6, 16), False, 14),  # 14 days left
        (dt.date(2019, 6, 20), False, 14),  # 10 days left: still the 14-day one (already planned: nothing new)
        (dt.date(2019, 6, 27), False, 3),
        (dt.date(2019, 6, 30), False, 3),  # the closing day
        (dt.date(2019, 7, 1), False, None),  # after closing, the schedule is over
        (dt.date(2019, 6, 10), True, 20),  # forced: its own sequence, 20 days before closing
        (dt.date(2019, 6, 16), True, 14),  # forced on a scheduled day: the same reminder, not a second one
        (dt.date(2019, 7, 2), True, -1),  # forced after the closing date while the round is open: the last call
        (dt.date(2019, 7, 9), True, -1),  # forced again a week later: the same last call, not a second reminder
    ],
)
def test_the_reminder_due_on_a_day_is_numbered_by_its_days_before_closing(today, force, expected):
    """A reminder's sequence is its number of days before closing, so a day's reminder is planned once."""
    assert outbox.due_reminder("open", CLOSES, [14, 3], today, force=force) == expected


@pytest.mark.parametrize("force", [False, True])
def test_a_closed_round_has_no_reminder_due(force):
    assert outbox.due_reminder("closed", CLOSES, [14, 3], dt.date(2019, 6, 27), force=force) is None


def test_planning_makes_batches_of_one_language_and_at_most_the_batch_size(engine, settings, round_2019):
    """Every active contact gets one pending row; each batch holds at most 4 rows, all of one language; planning
    again adds nothing."""
    planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=4)
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        panel = list(csv.DictReader(handle))
    with session_scope(engine) as session:
        rows = session.execute(
            select(OutboxMessage.batch_key, OutboxMessage.recipient, OutboxMessage.state, Partnership.language)
            .join(Partnership, Partnership.id == OutboxMessage.partnership_id)
        ).all()
    assert Counter(row.recipient for row in rows) == Counter(row["contact_email"] for row in panel)
    assert {row.state for row in rows} == {"pending"}
    by_batch: dict[str, list] = {}
    for row in rows:
        by_batch.setdefault(row.batch_key, []).append(row)
    assert set(by_batch) == set(planned.batch_keys)
    assert all(len(batch) <= 4 and len({row.language for row in batch}) == 1 for batch in by_batch.values())
    languages = Counter(row["language"] for row in panel)
    assert len(by_batch) == sum(-(-count // 4) for count in languages.values())
    again = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=4)
    assert again.created == 0 and sorted(again.batch_keys) == sorted(planned.batch_keys)


@pytest.mark.slow
def test_the_prefect_ui_shows_progress_and_delivery_per_partnership(engine, settings, round_2019):
    """After a run, the progress artifact stands at 100 % and the delivery table lists every contact of every
    partnership with its state."""
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    run_id = send_invitations(2019, return_state=True).state_details.flow_run_id

    async def latest(key: str):  # type: ignore[no-untyped-def]
        # This run's artifact: the session's Prefect server is shared by tests running in parallel.
        async with get_client() as client:
            found = await client.read_artifacts(artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id])))
        return max(found, key=lambda artifact: artifact.created)

    table = asyncio.run(latest("mail-delivery-2019-invitation"))
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        panel = list(csv.DictReader(handle))
    assert sorted((row["partnership"], row["recipient"]) for row in rows) == sorted(
        (row["partnership_id"], row["contact_email"]) for row in panel
    )
    assert {row["state"] for row in rows} == {"sent"}
    progress = asyncio.run(latest("mail-progress-2019-invitation"))
    assert float(progress.data) == 100.0


def add_stakeholder_rows(engine, batch_key: str, count: int) -> None:  # type: ignore[no-untyped-def]
    """Pending summary rows without partnership or contact, as ``consult.publish_send.plan_summary`` plans them."""
    from db.models import Round

    with session_scope(engine) as session:
        round_id = session.scalar(select(Round.id).where(Round.year == 2019))
        session.add_all(OutboxMessage(round_id=round_id, partnership_id=None, contact_id=None, kind="summary",
                                      sequence=1, state="pending", recipient=f"reader{n}@example.org",
                                      recipient_name=f"Reader {n}", batch_key=batch_key, attempts=0)
                        for n in range(count))


@pytest.mark.parametrize("stakeholders", [False, True], ids=["contacts", "stakeholders"])
@pytest.mark.slow
def test_runs_claiming_one_batch_at_the_same_time_never_share_a_row(engine, settings, round_2019, stakeholders):
    """Four runs claim the same batch at once: every pending row is claimed by exactly one of them, moves to
    `sending` with one attempt, and the other audience's claim on that batch takes nothing."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if stakeholders:
        key = "2019:summary:1:test-0"
        add_stakeholder_rows(engine, key, 40)
    else:
        key = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=1000).batch_keys[0]
    with session_scope(engine) as session:
        pending = set(session.scalars(select(OutboxMessage.id).where(OutboxMessage.batch_key == key)))
    assert pending
    assert outbox.claim_rows(engine, key, stakeholders=not stakeholders) == []
    start = threading.Barrier(4)

    def run(_: int) -> list[int]:
        start.wait(timeout=60)
        return outbox.claim_rows(engine, key, stakeholders=stakeholders, kind="summary" if stakeholders else None)

    with ThreadPoolExecutor(max_workers=4) as pool:
        claimed = list(pool.map(run, range(4)))  # re-raises a run's exception here
    assert sorted(oid for ids in claimed for oid in ids) == sorted(pending)
    with session_scope(engine) as session:
        states = Counter(session.execute(select(OutboxMessage.state, OutboxMessage.attempts)
                                         .where(OutboxMessage.batch_key == key)).tuples().all())
    assert states == Counter({("sending", 1): len(pending)})
