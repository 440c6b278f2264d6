"""The scheduled jobs of deployments/prefect.yaml: open the yearly round, send due reminders, ingest the drop
folder, close and publish; plus a whole round on demand. Each takes the round's lock (`round-YEAR`, a Prefect
global concurrency limit of one slot), so two runs for one round never overlap, whichever deployment or worker
started them. Re-running any of them is safe: the database, not Prefect's cache, records what was done.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from consult.runners import round_lock
from tasks.rounds import close_round_task, open_round_task
from tasks.scheduling import current_year_task, drop_folder_files_task, open_rounds_task, rounds_due_task

DEFAULT_QUESTIONNAIRE = "examples/escp4i/questionnaire-2020.yaml"

# The stage flows are imported where they are used so that `prefect deploy` can load this module (to read the
# parameters) on a machine where an optional stage's dependencies are not installed.


@flow(name="open-yearly-round", log_prints=True)
def open_yearly_round(
    year: int | None = None, questionnaire: str = DEFAULT_QUESTIONNAIRE, closes_on: str | None = None
) -> None:
    """Open the round (this year in CONSULT_TIMEZONE unless `year` is given) with the questionnaire file (a path
    on the worker, relative to the project folder) and invite every partnership. `closes_on` is an ISO date;
    default: CONSULT_ROUND_DURATION_DAYS after today."""
    from flows.mailing import send_invitations

    round_year = current_year_task(year)
    with round_lock(round_year):
        open_round_task(round_year, questionnaire, closes_on)
        send_invitations(round_year)


@flow(name="send-due-reminders", log_prints=True)
def send_due_reminders() -> None:
    """Send the reminders that are due in every open round (only to partnerships that have not answered);
    nothing happens when no round is open."""
    from flows.mailing import send_reminders

    for round_year in open_rounds_task():
        with round_lock(round_year):
            send_reminders(round_year)


@flow(name="ingest-drop-folder", log_prints=True)
def ingest_drop_folder(folder: str | None = None) -> Any:
    """Ingest every response file (.csv, .xlsx) in the drop folder (default CONSULT_DROP_DIR) into the latest open
    round. Files already ingested are recognised by their SHA-256 and skipped; nothing happens when no round is
    open or the folder is empty."""
    from flows.ingest import ingest_responses

    open_years = open_rounds_task()
    files = drop_folder_files_task(folder)
    if not open_years or not files:
        print(f"nothing to ingest: open rounds {open_years}, {len(files)} file(s) in the drop folder")
        return None
    with round_lock(open_years[-1]):
        return ingest_responses(open_years[-1], files)


@flow(name="close-and-publish", log_prints=True)
def close_and_publish(year: int | None = None, out_dir: str | None = None) -> None:
    """Close the round and publish its summary. Without `year`: every open round whose closing date (in
    CONSULT_TIMEZONE) has come, so that a daily schedule closes each round on its own date. `out_dir` defaults
    to CONSULT_OUTPUT_DIR."""
    from flows.publish import compute_and_publish

    for round_year in rounds_due_task(year):
        with round_lock(round_year):
            close_round_task(round_year)
            compute_and_publish(round_year, out_dir)


@flow(name="run-round", log_prints=True)
def run_round(
    year: int,
    questionnaire: str,
    response_files: list[str],
    closes_on: str | None = None,
    out_dir: str | None = None,
) -> Any:
    """A whole round on files already exported from the survey tool (catch-up or demo), under the round's
    lock: open, invite, ingest, remind, close, compute and publish."""
    from flows.consultation_round import consultation_round

    with round_lock(year):
        return consultation_round(year, questionnaire, response_files, closes_on, out_dir)
