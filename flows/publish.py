"""Compute a round's indicators and publish its summary: compute_indicators -> publish_summary -> artifacts."""

from __future__ import annotations

from prefect import flow

from consult.publish import PublishResult
from tasks.indicators import compute_indicators
from tasks.publish import post_summary_artifacts, publish_summary

__all__ = ["PublishResult", "compute_and_publish"]


@flow(name="compute-and-publish", log_prints=True)
def compute_and_publish(year: int, out_dir: str | None = None) -> PublishResult:
    """Indicators of round ``year`` (compared with the previous round) stored, then the summary written under
    ``out_dir/YEAR/`` (default: CONSULT_OUTPUT_DIR) and posted as artifacts."""
    report = compute_indicators(year)
    result = publish_summary(report, out_dir)
    post_summary_artifacts(report, result)
    return result
