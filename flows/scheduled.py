"""The scheduled jobs of deployments/prefect.yaml: open the yearly round, send due reminders, ingest the drop
folder, close and publish; plus a whole round on demand. Each takes the round's lock (`round-YEAR`, a Prefect
global concurrency limit of one slot), so two runs for one round never overlap, whichever deployment or worker
started them. Re-running any of them is safe: the database, not Prefect's cache, records what was done.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from consult.runners import round_lock, task_runner
from flows.consultation_round import consultation_round
from flows.ingest import ingest_responses
from flows.mailing import send_invitations, send_reminders
from flows.publish import compute_and_publish
from tasks.rounds import close_round_task, open_round_task
from tasks.scheduling import (
    current_year_task,
    drop_folder_files_task,
    open_rounds_task,
    rounds_due_task,
    secrets_from_blocks_task,
)

DEFAULT_QUESTIONNAIRE = "examples/escp4i/questionnaire-2020.yaml"

# The heavy stages (ingest: validation of large files; publish: indicators) get their task runner from the
# settings when the run starts (CONSULT_TASK_RUNNER / CONSULT_DASK_ADDRESS), not when this module is imported.


@flow(name="open-yearly-round", log_prints=True)
def open_yearly_round(
    year: int | None = None, questionnaire: str = DEFAULT_QUESTIONNAIRE, closes_on: str | None = None
) -> None:
    """Open the yearly round and invite every partnership of the panel.

    Args:
        year: Year of the round; default: this year in CONSULT_TIMEZONE.
        questionnaire: Questionnaire YAML file on the worker, relative to the project folder.
        closes_on: Closing date (YYYY-MM-DD); default: CONSULT_ROUND_DURATION_DAYS after today.
    """
    secrets_from_blocks_task()
    round_year = current_year_task(year)
    with round_lock(round_year):
        open_round_task(round_year, questionnaire, closes_on)
        send_invitations(round_year)


@flow(name="send-due-reminders", log_prints=True)
def send_due_reminders() -> None:
    """Send the reminders that are due in every open round (only to partnerships that have not answered);
    nothing happens when no round is open."""
    secrets_from_blocks_task()
    for round_year in open_rounds_task():
        with round_lock(round_year):
            send_reminders(round_year)


@flow(name="ingest-drop-folder", log_prints=True)
def ingest_drop_folder(folder: str | None = None) -> Any:
    """Ingest every response file (.csv, .xlsx) in the drop folder into the latest open round.

    Files already ingested are recognised by their SHA-256 and skipped; nothing happens when no round is open
    or the folder is empty.

    Args:
        folder: Drop folder on the worker; default: CONSULT_DROP_DIR (data_dir/drop).
    """
    secrets_from_blocks_task()
    open_years = open_rounds_task()
    files = drop_folder_files_task(folder)
    if not open_years or not files:
        print(f"nothing to ingest: open rounds {open_years}, {len(files)} file(s) in the drop folder")
        return None
    with round_lock(open_years[-1]):
        return ingest_responses.with_options(task_runner=task_runner())(open_years[-1], files)


@flow(name="close-and-publish", log_prints=True)
def close_and_publish(year: int | None = None, out_dir: str | None = None) -> None:
    """Close the round and publish its summary.

    Args:
        year: Round to close now; default: every open round whose closing date (in CONSULT_TIMEZONE) has come,
            so that a daily schedule closes each round on its own date.
        out_dir: Where the summary is published; default: CONSULT_OUTPUT_DIR.
    """
    secrets_from_blocks_task()
    for round_year in rounds_due_task(year):
        with round_lock(round_year):
            close_round_task(round_year)
            compute_and_publish.with_options(task_runner=task_runner())(round_year, out_dir)


@flow(name="run-round", log_prints=True)
def run_round(
    year: int,
    questionnaire: str,
    response_files: list[str],
    closes_on: str | None = None,
    out_dir: str | None = None,
) -> Any:
    """A whole round on files already exported from the survey tool (catch-up or demo): open, invite, ingest,
    remind, close, compute and publish.

    Args:
        year: Year of the round.
        questionnaire: Questionnaire YAML file on the worker, relative to the project folder.
        response_files: Response exports (CSV/XLSX) on the worker.
        closes_on: Closing date (YYYY-MM-DD); default: CONSULT_ROUND_DURATION_DAYS after today.
        out_dir: Where the summary is published; default: CONSULT_OUTPUT_DIR.
    """
    secrets_from_blocks_task()
    with round_lock(year):
        return consultation_round(year, questionnaire, response_files, closes_on, out_dir)
