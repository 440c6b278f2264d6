"""Invitations, reminders and thank-yous: plan -> send each batch (one task per batch) -> report."""

from __future__ import annotations

import datetime as dt

from prefect import allow_failure, flow, unmapped

from consult.mail.outbox import MailReport
from tasks.mail import (
    due_reminder_task,
    mail_report_task,
    plan_mail_task,
    send_mail_batch_task,
    start_progress_task,
)


def _send(year: int, kind: str, sequence: int | None) -> MailReport:
    batches = plan_mail_task(year, kind, sequence)
    progress = start_progress_task(year, kind, sequence, len(batches))
    sent = send_mail_batch_task.map(batches, progress_id=unmapped(None))
    report = mail_report_task(year, kind, sequence, wait_for=[allow_failure(sent)])
    sent.result()  # a batch that failed for good fails the run, once the report says where things stand
    return report


@flow(name="send-invitations")
def send_invitations(year: int) -> MailReport:
    """Each active contact of each partnership in the round gets exactly one invitation, unless it answered."""
    return _send(year, "invitation", 0)


@flow(name="send-reminders")
def send_reminders(year: int, *, force: bool = False, today: dt.date | None = None) -> MailReport:
    """The reminder due today by the round's schedule (or one now with ``force``), only to partnerships that
    have not answered; nothing when none is due or the round is closed."""
    sequence = due_reminder_task(year, force, today)
    return _send(year, "reminder", sequence)


@flow(name="send-thank-yous")
def send_thank_yous(year: int) -> MailReport:
    """One thank-you to each contact of a partnership whose answers were accepted."""
    return _send(year, "thank_you", 0)
