"""Prefect task: compute a round's indicators against the previous round and store them (one task per round)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from consult.indicators import IndicatorReport, compute_report, store_report
from consult.settings import get_settings
from db.engine import get_engine, require_schema, session_scope


@task(name="compute-indicators", cache_policy=NONE)
def compute_indicators(year: int) -> IndicatorReport:
    """All declared indicators of round ``year``, compared with the previous round, upserted into
    ``indicator_values`` in one transaction."""
    engine = get_engine(get_settings().resolved_database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        report = compute_report(session, year)
        store_report(session, report)
    return report
