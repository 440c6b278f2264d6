"""Invitations, reminders and thank-yous: plan -> send each batch (one task per batch) -> report."""

from __future__ import annotations

import datetime as dt

from prefect import allow_failure, flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from consult.mail.outbox import MailReport
from tasks.mail import (
    due_reminder_task,
    mail_report_task,
    plan_mail_task,
    send_mail_batch_task,
    start_progress_task,
)

# Batches in flight at once: enough to overlap the provider's latency with database work, few enough to stay
# inside the database connection pool and the provider's rate limit.
MAIL_CONCURRENCY = 8


def _runner() -> ThreadPoolTaskRunner:
    return ThreadPoolTaskRunner(max_workers=MAIL_CONCURRENCY)


def _send(year: int, kind: str, sequence: int | None) -> MailReport:
    batches = plan_mail_task(year, kind, sequence)
    progress = start_progress_task(year, kind, sequence, len(batches))
    sent = send_mail_batch_task.map(batches, progress_id=unmapped(progress))
    report = mail_report_task(year, kind, sequence, progress, wait_for=[allow_failure(sent)])
    sent.result()  # a batch that failed for good fails the run, once the report says where things stand
    return report


@flow(name="send-invitations", task_runner=_runner())
def send_invitations(year: int) -> MailReport:
    """Each active contact of each partnership in the round gets exactly one invitation, unless it answered."""
    return _send(year, "invitation", 0)


@flow(name="send-reminders", task_runner=_runner())
def send_reminders(year: int, *, force: bool = False, today: dt.date | None = None) -> MailReport:
    """The reminder due today by the round's schedule (or one now with ``force``), only to partnerships that
    have not answered; nothing when none is due or the round is closed."""
    sequence = due_reminder_task(year, force, today)
    return _send(year, "reminder", sequence)


@flow(name="send-thank-yous", task_runner=_runner())
def send_thank_yous(year: int) -> MailReport:
    """One thank-you to each contact of a partnership whose answers were accepted."""
    return _send(year, "thank_you", 0)
