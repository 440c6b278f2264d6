"""What the scheduled jobs act on: which rounds are open, which are due for closing, which files wait in the
drop folder. Plain functions; the Prefect tasks in tasks/scheduling.py wrap them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import select
from sqlalchemy.orm import Session

from consult.errors import ConsultError
from db.models import Round

# What survey tools export; anything else in the drop folder (a README, a half-copied upload) is left alone.
# EUSurvey results come as .xml.
RESPONSE_FILE_SUFFIXES = (".csv", ".xlsx", ".xml")


def today_in(timezone: str, now: dt.datetime | None = None) -> dt.date:
    """Today in the consultation's time zone: a round closing on 30 June closes on Brussels' 30 June."""
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConsultError(
            f"CONSULT_TIMEZONE {timezone!r} is not a known time zone (e.g. Europe/Brussels)"
        ) from None
    return (now or dt.datetime.now(dt.UTC)).astimezone(zone).date()


def open_round_years(session: Session) -> list[int]:
    return list(session.scalars(select(Round.year).where(Round.status == "open").order_by(Round.year)))


def rounds_due_for_closing(session: Session, today: dt.date) -> list[int]:
    """Open rounds whose closing date has come (a round missed on its date is closed on the next run)."""
    return list(
        session.scalars(
            select(Round.year).where(Round.status == "open", Round.closes_on <= today).order_by(Round.year)
        )
    )


def drop_folder_files(folder: Path) -> list[Path]:
    """Response files waiting in the drop folder, oldest name first. Hidden files (uploads in progress are
    usually written as dot-files, then renamed) and other extensions are ignored."""
    if not folder.is_dir():
        raise ConsultError(f"drop folder {folder} does not exist: create it or set CONSULT_DROP_DIR")
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in RESPONSE_FILE_SUFFIXES
    )
