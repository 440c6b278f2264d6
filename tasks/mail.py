"""Prefect tasks for mailing: thin wrappers around consult.mail. One task per batch, never one per recipient.

Tasks read the settings themselves (secrets never travel as task parameters).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from uuid import UUID

from prefect import task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NONE
from prefect.tasks import exponential_backoff
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from consult.mail import outbox
from consult.mail.mailer import get_mailer
from consult.mail.message import TransientMailError
from consult.mail.outbox import BatchOutcome, MailReport
from consult.mail.sending import send_batch
from consult.settings import get_settings
from db.engine import open_database


def _engine() -> Engine:
    return open_database(get_settings().resolved_database_url)


def _retry_transient(task, task_run, state) -> bool:  # type: ignore[no-untyped-def]
    """Retry what may go away by itself (rate limit, outage, time-out, a database connection lost); a
    ConsultError (bad key, bad request) or a bug fails at once."""
    try:
        state.result()
    except (TransientMailError, OperationalError):
        return True
    except Exception:  # noqa: BLE001 - anything else will fail the same way again
        return False
    return False


# Every batch of mail (invitations, reminders, summaries) retries alike: only what may go away by itself.
MAIL_BATCH_RETRIES = {
    "retries": 6,
    "retry_delay_seconds": exponential_backoff(backoff_factor=1),
    "retry_jitter_factor": 0.5,
    "retry_condition_fn": _retry_transient,
}


@task(name="due-reminder", cache_policy=NONE)
def due_reminder_task(year: int, force: bool, today: dt.date | None) -> int | None:
    return outbox.reminder_sequence(_engine(), year, force=force, today=today or dt.date.today())


@task(name="plan-mail", cache_policy=NONE)
def plan_mail_task(year: int, kind: str, sequence: int | None) -> list[str]:
    """Expire dead runs' claims, add the rows not planned yet, and return the batches to send."""
    if sequence is None:
        return []
    engine = _engine()
    outbox.expire_sending(engine, year=year)
    outbox.reconcile(engine, year=year)
    planned = outbox.plan(engine, year=year, kind=kind, sequence=sequence, batch_size=get_settings().mail_batch_size)
    return planned.batch_keys


@task(name="start-mail-progress", cache_policy=NONE)
def start_progress_task(year: int, kind: str, sequence: int | None, batches: int) -> UUID:
    return create_progress_artifact(
        progress=0.0 if batches else 100.0,
        key=f"mail-progress-{year}-{kind.replace('_', '-')}",
        description=f"{kind} {year} (sequence {sequence}): {batches} batch(es) to send",
    )


@task(
    name="send-mail-batch",
    cache_policy=NONE,
    **MAIL_BATCH_RETRIES,
)
def send_mail_batch_task(batch_key: str, progress_id: UUID | None = None) -> BatchOutcome:
    settings = get_settings()
    engine = _engine()
    outcome = send_batch(engine, settings, get_mailer(settings), batch_key)
    if progress_id is not None and _progress_due(progress_id):
        year, kind, sequence = _parse_key(batch_key)
        update_progress_artifact(progress_id, outbox.settled_fraction(engine, year=year, kind=kind, sequence=sequence))
    return outcome


_PROGRESS_EVERY = 1.0  # seconds: an update costs an API call and a count; once a second keeps the UI live
_progress_lock = threading.Lock()
_progress_last: dict[UUID, float] = {}


def _progress_due(progress_id: UUID) -> bool:
    now = time.monotonic()
    with _progress_lock:
        if now - _progress_last.get(progress_id, 0.0) < _PROGRESS_EVERY:
            return False
        _progress_last[progress_id] = now
        return True


def _parse_key(batch_key: str) -> tuple[int, str, int]:
    year, kind, sequence, _rest = batch_key.split(":", 3)
    return int(year), kind, int(sequence)


@task(name="mail-report", cache_policy=NONE)
def mail_report_task(year: int, kind: str, sequence: int | None, progress_id: UUID | None = None) -> MailReport:
    """Counts by state, the final progress, and a table artifact of delivery status per partnership
    (problems first)."""
    engine = _engine()
    report = outbox.report(engine, year=year, kind=kind, sequence=sequence)
    if progress_id is not None and sequence is not None:
        update_progress_artifact(progress_id, outbox.settled_fraction(engine, year=year, kind=kind, sequence=sequence))
    if sequence is not None:
        rows = outbox.delivery_table(engine, year=year, kind=kind, sequence=sequence)
        create_table_artifact(
            table=rows,
            key=f"mail-delivery-{year}-{kind.replace('_', '-')}",
            description=f"{kind} {year} (sequence {sequence}): {report}"
            + (" - first 5,000 rows, problems first" if report.planned > len(rows) else ""),
        )
    return report
