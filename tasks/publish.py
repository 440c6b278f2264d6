"""Prefect tasks: write and record the round's published files, and show them as artifacts in the Prefect UI.

Sending the summary to stakeholders is in tasks/publish_mail.py: `consult publish` without --send-to imports no
mail code (the outbox, the mailers, SendGrid's library: a third of a second here)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NONE
from prefect.runtime import flow_run

from consult.indicators import TABLE_COLUMNS, IndicatorReport, format_number
from consult.publish import PublishResult, publish_report
from consult.settings import get_settings
from db.engine import get_engine, require_schema, session_scope


@task(name="publish-summary", cache_policy=NONE)
def publish_summary(report: IndicatorReport, out_dir: str | None = None) -> PublishResult:
    """Write summary-YEAR.html/.md, indicators-YEAR.csv and stories-YEAR.csv under OUT/YEAR/ and record the
    publication with the file hashes and this flow run's id."""
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    require_schema(engine)
    target = Path(out_dir) if out_dir else settings.output_dir
    with session_scope(engine) as session:
        return publish_report(session, report, target, flow_run_id=flow_run.get_id())


@task(name="post-summary-artifacts", cache_policy=NONE)
def post_summary_artifacts(report: IndicatorReport, result: PublishResult) -> None:
    """The Markdown summary (key ``summary-YEAR``) and the indicator table (key ``indicators-YEAR``)."""
    create_markdown_artifact(
        key=f"summary-{report.year}",
        markdown=result.markdown_text,
        description=f"Published summary of the {report.year} consultation ({result.html})",
    )
    shown = [column for column in TABLE_COLUMNS if column not in ("key", "group")]
    create_table_artifact(
        key=f"indicators-{report.year}",
        table=[{column: _cell(record[column]) for column in shown} for record in report.records()],
        description=f"Indicators of the {report.year} consultation compared with {report.previous_year or 'nothing'}",
    )


def _cell(value: object) -> str:
    if isinstance(value, str):
        return value
    return format_number(value)
