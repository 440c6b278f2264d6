"""Prefect tasks of the ingest: one per stage for the whole batch of files, thin wrappers around
consult.ingest.pipeline. They take DataFrames, so they never hash their inputs (cache_policy=NONE)."""

from __future__ import annotations

from pathlib import Path
from typing import Generic, TypeVar

from prefect import task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE

from consult.ingest import dq_report, pipeline
from consult.ingest.readers import ResponseFile
from consult.ingest.store import IngestSummary, list_quarantine, responses_by_source
from consult.settings import get_settings
from db.engine import get_engine, session_scope

T = TypeVar("T")


class Batch(Generic[T]):
    """The files of one ingest, handed from task to task opaque to Prefect.

    Prefect walks every list, dict and dataclass in a task's parameters (``visit_collection``, to find futures
    and build the run graph): a batch whose validation holds the reasons of 100,000 quarantined rows took longer
    to walk than to validate. Inside this box it is one object, whatever the number of rows."""

    __slots__ = ("files",)

    def __init__(self, files: T) -> None:
        self.files = files


@task(name="read-response-files", cache_policy=NONE)
def read_files_task(year: int, paths: list[str]) -> Batch[list[ResponseFile]]:
    return Batch(pipeline.read_files(get_settings(), year, paths))


@task(name="match-partnerships", cache_policy=NONE)
def match_files_task(year: int, files: Batch[list[ResponseFile]]) -> Batch[list[pipeline.MatchedFile]]:
    return Batch(pipeline.match_files(get_settings(), year, files.files))


@task(name="validate-responses", cache_policy=NONE)
def validate_files_task(
    year: int, matched: Batch[list[pipeline.MatchedFile]]
) -> Batch[list[pipeline.ValidatedFile]]:
    return Batch(pipeline.validate_files(get_settings(), year, matched.files))


@task(name="store-responses", cache_policy=NONE)
def store_files_task(year: int, validated: Batch[list[pipeline.ValidatedFile]]) -> IngestSummary:
    return pipeline.store_files(get_settings(), year, validated.files)


@task(name="write-data-docs", cache_policy=NONE)
def write_data_docs_task(year: int, validated: Batch[list[pipeline.ValidatedFile]]) -> str | None:
    return pipeline.write_data_docs(get_settings(), year, validated.files)


@task(name="publish-data-quality-report", cache_policy=NONE)
def publish_dq_report_task(
    year: int, summary: IngestSummary, validated: Batch[list[pipeline.ValidatedFile]], docs: str | None
) -> str:
    """The Markdown artifact ``dq-YEAR``, the table of open quarantined rows and the link to the Data Docs
    (``docs``: their index page, None when the round has none yet)."""
    settings = get_settings()
    markdown = dq_report.markdown_report(summary, validated.files, docs)
    with session_scope(get_engine(settings.resolved_database_url)) as session:
        entries = [vars(entry) for entry in
                   list_quarantine(session, year, limit=dq_report.MAX_QUARANTINE_ROWS_SHOWN)]
        sources = responses_by_source(session, year)
    markdown += dq_report.sources_markdown(year, sources)
    dq_report.write_report(settings.output_dir, year, markdown)
    create_markdown_artifact(key=f"dq-{year}", markdown=markdown, description=f"Data quality of round {year}")
    create_table_artifact(
        key=f"dq-{year}-quarantine",
        table=dq_report.quarantine_table(summary, entries)
        or [{"id": "", "file": "", "row": "", "partnership": "", "expectation": "", "value": "",
             "reason": "no open quarantined row"}],
        description=f"Open quarantined rows of round {year}: review with `consult quarantine list {year}`",
    )
    if docs:
        create_link_artifact(
            key=f"dq-{year}-data-docs", link=Path(docs).as_uri(), link_text=f"Data Docs {year}",
            description="Great Expectations Data Docs of the ingested files",
        )
    return markdown
