"""Compute a round's indicators and publish its summary: compute_indicators -> publish_summary -> artifacts.

The same followed by sending the summary to a stakeholder list is ``publish_and_send_summary``
(flows/publish_send.py), also importable from here; it is imported only when asked for, so that `consult
publish` without --send-to loads no mail code."""

from __future__ import annotations

from typing import Any

from prefect import flow

from consult.publish import PublishResult
from tasks.indicators import compute_indicators
from tasks.publish import post_summary_artifacts, publish_summary

__all__ = ["PublishResult", "compute_and_publish"]  # and publish_and_send_summary, through __getattr__


@flow(name="compute-and-publish", log_prints=True)
def compute_and_publish(year: int, out_dir: str | None = None) -> PublishResult:
    """Indicators of round ``year`` (compared with the previous round) stored, then the summary written under
    ``out_dir/YEAR/`` (default: CONSULT_OUTPUT_DIR) and posted as artifacts."""
    report = compute_indicators(year)
    result = publish_summary(report, out_dir)
    post_summary_artifacts(report, result)
    return result


def __getattr__(name: str) -> Any:
    if name == "publish_and_send_summary":
        from flows.publish_send import publish_and_send_summary

        return publish_and_send_summary
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
