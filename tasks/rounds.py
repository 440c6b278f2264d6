"""Prefect tasks for the round's lifecycle: thin wrappers around consult.rounds and consult.panel."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from prefect import task

from consult.panel import PanelImportReport, import_panel
from consult.rounds import RoundInfo, close_round, open_round
from consult.settings import get_settings
from db.engine import open_database, session_scope, upgrade


@task(name="upgrade-database")
def upgrade_database_task() -> None:
    upgrade(get_settings().resolved_database_url)


@task(name="import-panel")
def import_panel_task(panel_path: str) -> PanelImportReport:
    with session_scope(open_database(get_settings().resolved_database_url)) as session:
        return import_panel(session, Path(panel_path))


@task(name="open-round")
def open_round_task(year: int, questionnaire_path: str, closes_on: str | None = None) -> RoundInfo:
    settings = get_settings()
    with session_scope(open_database(settings.resolved_database_url)) as session:
        return open_round(
            session,
            year=year,
            questionnaire_path=Path(questionnaire_path),
            token_secret=settings.resolved_token_secret(),
            closes_on=dt.date.fromisoformat(closes_on) if closes_on else None,
            reminder_days=settings.reminder_days_before_close,
            duration_days=settings.round_duration_days,
        )


@task(name="close-round")
def close_round_task(year: int) -> str:
    with session_scope(open_database(get_settings().resolved_database_url)) as session:
        return close_round(session, year).status
