"""Prefect tasks for the scheduled jobs: thin wrappers around consult.scheduling.

They read the database, which changes between runs: never cached (cache_policy=NONE)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from consult.runners import load_secret_blocks
from consult.scheduling import drop_folder_files, open_round_years, rounds_due_for_closing, today_in
from consult.settings import get_settings
from db.engine import get_engine, require_schema, session_scope


@task(name="secrets-from-blocks", cache_policy=NONE)
def secrets_from_blocks_task() -> list[str]:
    """Names (never values) of the CONSULT_* variables this run took from Prefect Secret blocks."""
    return load_secret_blocks()


@task(name="open-rounds", cache_policy=NONE)
def open_rounds_task() -> list[int]:
    engine = get_engine(get_settings().resolved_database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        return open_round_years(session)


@task(name="rounds-due-for-closing", cache_policy=NONE)
def rounds_due_task(year: int | None = None) -> list[int]:
    """The round asked for, or every open round whose closing date (in CONSULT_TIMEZONE) has come."""
    if year is not None:
        return [year]
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        return rounds_due_for_closing(session, today_in(settings.timezone))


@task(name="current-round-year", cache_policy=NONE)
def current_year_task(year: int | None = None) -> int:
    """The year asked for, else this year in the consultation's time zone."""
    return year if year is not None else today_in(get_settings().timezone).year


@task(name="drop-folder-files", cache_policy=NONE)
def drop_folder_files_task(folder: str | None = None) -> list[str]:
    path = Path(folder) if folder else get_settings().resolved_drop_dir
    return [str(found) for found in drop_folder_files(path)]
