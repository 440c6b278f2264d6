"""Ingest response files for a round: read -> match -> validate -> store -> data-quality report.

One task per stage for all files (never one per file or row), so task runs do not grow with the data.
Reading every file comes first: an unreadable file stops the flow before anything is stored.
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
)


@flow(name="ingest-responses", log_prints=True)
def ingest_responses(year: int, paths: list[str]) -> IngestSummary:
    """Ingest survey exports into round ``year`` and post the data-quality report."""
    files = read_files_task(year, paths)
    matched = match_files_task(year, files)
    validated = validate_files_task(year, matched)
    summary = store_files_task(year, validated)
    publish_dq_report_task(year, summary, validated)
    return summary
