"""The scheduled jobs run end to end (on the session's Prefect server) against a real database: what an
operator notices after each scheduled run, and that a second run of the same job changes nothing."""

from __future__ import annotations

import csv
import datetime as dt
import mailbox
import shutil
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from consult.errors import ConsultError
from consult.scheduling import drop_folder_files, rounds_due_for_closing, today_in
from consult.settings import Settings
from db.engine import session_scope
from db.models import IngestedFile, Publication, Response, Round

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "escp4i"

# The jobs hold the round's lock (a global concurrency limit on the session's shared Prefect server): on one
# xdist worker, so that parallel tests of the same year do not queue behind each other's runs.
pytestmark = pytest.mark.xdist_group("round-lock")


def contacts_in_panel() -> int:
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def known_rows(year: int) -> int:
    """Rows of the export whose partnership is in the panel (stored as accepted, superseded or partial)."""
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        panel = {row["partnership_id"] for row in csv.DictReader(handle)}
    with open(EXAMPLES / f"responses-{year}.csv", encoding="utf-8") as handle:
        return sum(1 for row in csv.DictReader(handle) if row["partnership_id"] in panel)


def messages(settings: Settings) -> list[mailbox.MaildirMessage]:
    directory = settings.resolved_mailbox_dir
    return list(mailbox.Maildir(directory, create=False)) if directory.exists() else []


def count(engine: Engine, model: type) -> int:
    with session_scope(engine) as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def test_the_drop_folder_lists_response_exports_only(tmp_path: Path) -> None:
    """CSV and XLSX files are picked up in name order; hidden files (uploads in progress) and other files are
    not; a missing folder is named in the error."""
    for name in ["b.csv", "a.XLSX", ".upload.csv", "notes.txt"]:
        (tmp_path / name).write_text("x")
    (tmp_path / "sub.csv").mkdir()
    assert [path.name for path in drop_folder_files(tmp_path)] == ["a.XLSX", "b.csv"]
    with pytest.raises(ConsultError, match=f"drop folder {tmp_path / 'missing'} does not exist"):
        drop_folder_files(tmp_path / "missing")


def test_a_round_is_due_for_closing_from_its_closing_date_in_brussels(
    engine: Engine, round_2019: int
) -> None:
    """Round 2019 closes on 2019-06-30: not due on the 29th, due on the 30th and after (a missed day catches
    up); at 23:30 UTC on 29 June it is already the 30th in Brussels."""
    with session_scope(engine) as session:
        assert rounds_due_for_closing(session, dt.date(2019, 6, 29)) == []
        assert rounds_due_for_closing(session, dt.date(2019, 6, 30)) == [2019]
        assert rounds_due_for_closing(session, dt.date(2019, 7, 3)) == [2019]
    assert today_in("Europe/Brussels", dt.datetime(2019, 6, 29, 23, 30, tzinfo=dt.UTC)) == dt.date(
        2019, 6, 30
    )
    with pytest.raises(ConsultError, match="'Mars/Olympus' is not a known time zone"):
        today_in("Mars/Olympus")


@pytest.mark.slow
def test_opening_the_yearly_round_invites_each_contact_once_even_when_run_twice(
    engine: Engine, settings: Settings, panel: list[str]
) -> None:
    """The February job opens the round and invites every contact; a re-run (e.g. from the UI after a crash)
    sends no second invitation."""
    from flows.scheduled import open_yearly_round

    questionnaire = str(EXAMPLES / "questionnaire-2020.yaml")
    open_yearly_round(year=2031, questionnaire=questionnaire, closes_on="2031-03-15")
    open_yearly_round(year=2031, questionnaire=questionnaire, closes_on="2031-03-15")
    with session_scope(engine) as session:
        round_ = session.scalars(select(Round).where(Round.year == 2031)).one()
        assert (round_.status, round_.closes_on) == ("open", dt.date(2031, 3, 15))
    received = [message["To"] for message in messages(settings)]
    assert len(received) == contacts_in_panel()
    assert len(set(received)) == len(received)


@pytest.mark.slow
def test_the_hourly_ingest_stores_a_dropped_file_once_and_ignores_other_files(
    engine: Engine, settings: Settings, round_2019: int, tmp_path: Path
) -> None:
    """A response export dropped in the folder is ingested into the open round; the next hourly run finds the
    same file and stores nothing more; a half-uploaded hidden file and a note are left alone."""
    from flows.scheduled import ingest_drop_folder

    drop = tmp_path / "drop"
    drop.mkdir()
    shutil.copy(EXAMPLES / "responses-2019.csv", drop / "export-1.csv")
    (drop / ".export-2.csv").write_text("partnership_id,submitted_at\nESCP4I-01,")
    (drop / "README.txt").write_text("drop LimeSurvey exports here")

    ingest_drop_folder(str(drop))
    ingest_drop_folder(str(drop))

    assert count(engine, IngestedFile) == 1
    assert count(engine, Response) == known_rows(2019)


def test_the_hourly_ingest_does_nothing_when_no_round_is_open(
    engine: Engine, settings: Settings, panel: list[str]
) -> None:
    """Between rounds the drop folder (default CONSULT_DROP_DIR) may hold files: nothing is stored."""
    from flows.scheduled import ingest_drop_folder

    settings.resolved_drop_dir.mkdir(parents=True)
    shutil.copy(EXAMPLES / "responses-2019.csv", settings.resolved_drop_dir / "late.csv")
    assert ingest_drop_folder() is None
    assert count(engine, IngestedFile) == 0


@pytest.mark.slow
def test_the_evening_job_closes_and_publishes_only_rounds_whose_closing_date_has_come(
    engine: Engine, settings: Settings, round_2019: int
) -> None:
    """With round 2019 (closed on 2019-06-30, answers ingested) and round 2031 (closing in 2031) open, the
    daily close-and-publish closes and publishes 2019 and leaves 2031 open; the daily reminder job then sends
    nothing: 2019 is closed and no reminder of 2031 is due yet."""
    from flows.ingest import ingest_responses
    from flows.scheduled import close_and_publish, send_due_reminders
    from tasks.rounds import open_round_task

    ingest_responses(2019, [str(EXAMPLES / "responses-2019.csv")])
    open_round_task(2031, str(EXAMPLES / "questionnaire-2020.yaml"), "2031-12-31")

    close_and_publish()

    with session_scope(engine) as session:
        status = dict(session.execute(select(Round.year, Round.status)).tuples().all())
        published = set(
            session.scalars(select(Round.year).join(Publication, Publication.round_id == Round.id)).all()
        )
    assert status[2019] != "open"
    assert status[2031] == "open"
    assert published == {2019}
    assert any(settings.output_dir.rglob("*"))

    send_due_reminders()
    assert messages(settings) == []
