"""Argument types and console set-up shared by the `consult` command modules."""

from __future__ import annotations

import logging
import os
from typing import Annotated

import typer


def parse_year(value: str) -> int:
    """A round's year; a bad value is named in the error ("'next-year' is not a year")."""
    if not value.strip().isdigit() or not 1900 <= int(value) <= 2999:
        raise typer.BadParameter(f"{value!r} is not a year between 1900 and 2999")
    return int(value)


YearArg = Annotated[int, typer.Argument(help="The round's year, e.g. 2019.", parser=parse_year, metavar="YEAR")]


class _FlowConsoleFilter(logging.Filter):
    """What a command that runs a flow lets Prefect print on the console: warnings only.

    Progress (INFO) and failures (ERROR, with their tracebacks) stay in Prefect's own logs and UI, where the
    API handler still sends them; on the console the command prints its own result, or the failure as one
    ``error:`` line naming the file, row or value.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        # Prefect's progress note while its background services (logger "EventsWorker"...) finish sending a
        # run's events at exit, "Still processing items: 3 items remaining...": a warning, but nothing is wrong
        # and nothing is lost.
        if record.getMessage().startswith("Still processing items"):
            return False
        if not record.name.startswith(("prefect", "uvicorn", "fastapi")):
            return True
        return record.levelno == logging.WARNING


# The settings context of a command's flow runs, kept for the life of the command: a context manager that is
# collected would run its `finally` and restore the settings it changed.
_foreground_settings: list[object] = []


def foreground_prefect() -> None:
    """Prefect as a command run in the foreground wants it (call after importing a flow, which sets up
    Prefect's logging):

    - on the console, warnings only: :class:`_FlowConsoleFilter` on Prefect's console handlers
      (CONSULT_DEBUG=1 keeps Prefect's full console output);
    - no heartbeats. They let a server mark as crashed a run whose process died with no one watching (a
      deployed run on a worker, where they stay on); a command's runs are watched by the person who started
      it, and each flow run (subflows too) would wait up to a second at its end for the heartbeat thread.
    """
    # An engine that runs offline sends no usage data (and prints no failure to send it).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if not _foreground_settings:
        no_heartbeats = temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})
        no_heartbeats.__enter__()
        _foreground_settings.append(no_heartbeats)
    if os.environ.get("CONSULT_DEBUG"):
        return
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger()] + [
        logger for logger in logging.Logger.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                isinstance(existing, _FlowConsoleFilter) for existing in handler.filters
            ):
                handler.addFilter(_FlowConsoleFilter())


def prefect_ready() -> None:
    """Before a command imports its flow: make sure a Prefect server answers (the local one is started and
    left running when none does), saying so in one line. See consult/local_prefect.py."""
    from consult.local_prefect import ensure_prefect_api
    from consult.settings import get_settings

    note = ensure_prefect_api(get_settings())
    if note:
        typer.echo(note)
