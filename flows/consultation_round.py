"""A whole consultation round in one flow: open -> invite -> ingest (read, match, validate, store) -> remind
-> close -> compute indicators -> publish. Each stage is a flow or task of its own and can run alone."""

from __future__ import annotations

from prefect import flow

from flows.ingest import ingest_responses
from flows.mailing import send_invitations, send_reminders
from flows.publish import PublishResult, compute_and_publish
from tasks.rounds import close_round_task, open_round_task


@flow(name="consultation-round", log_prints=True)
def consultation_round(
    year: int,
    questionnaire: str,
    response_files: list[str],
    closes_on: str | None = None,
    out_dir: str | None = None,
) -> PublishResult:
    """Run one round end to end on files already exported from the survey tool."""
    open_round_task(year, questionnaire, closes_on)
    send_invitations(year)
    ingest_responses(year, response_files)
    send_reminders(year, force=True)  # only partnerships that have not answered get one
    close_round_task(year)
    return compute_and_publish(year, out_dir)
