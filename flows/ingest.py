"""Ingest response files for a round: read -> match -> validate -> store (beside it: Data Docs) -> data-quality
report.

One task per stage for all files (never one per file or row), so task runs do not grow with the data.
Reading every file comes first: an unreadable file stops the flow before anything is stored.

Stages are submitted to the flow's task runner, so the heavy ones run wherever it sends them (a Dask cluster
with ``ingest_responses.with_options(task_runner=consult.runners.task_runner())``) without a code change; each
stage waits for the one before, through the futures passed along.
"""

from __future__ import annotations

from prefect import flow

from consult.ingest.store import IngestSummary
from tasks.ingest import (
    match_files_task,
    publish_dq_report_task,
    read_files_task,
    store_files_task,
    validate_files_task,
    write_data_docs_task,
)


@flow(name="ingest-responses", log_prints=True)
def ingest_responses(year: int, paths: list[str]) -> IngestSummary:
    """Ingest survey exports into round ``year`` and post the data-quality report."""
    files = read_files_task.submit(year, paths)
    matched = match_files_task.submit(year, files)
    validated = validate_files_task.submit(year, matched)
    # The Data Docs are rendered while the rows are stored: on PostgreSQL the store is mostly the server's work.
    docs = write_data_docs_task.submit(year, validated)
    summary = store_files_task.submit(year, validated)
    report = publish_dq_report_task.submit(year, summary, validated, docs)
    # In stage order: the first stage that failed re-raises its own error (a ConsultError naming the file);
    # the stages after it never ran (a later future would only say "pending").
    files.result(), matched.result(), validated.result()
    stored = summary.result()
    docs.result(), report.result()
    return stored
