"""Big loads build keys and indexes once for all on PostgreSQL, and still refuse a row that breaks one."""

from __future__ import annotations

import sqlite3

import pytest
import sqlalchemy as sa
from sqlalchemy import func, inspect, select

from consult.ingest import pipeline
from db import bulk
from db.models import IngestedFile, Response, Round
from tests.factories import EXAMPLES

# SQLite's bulk path is the driver's own executemany: its errors come unwrapped.
INTEGRITY_ERRORS = (sa.exc.IntegrityError, sqlite3.IntegrityError)


def foreign_keys(engine: sa.Engine) -> set[str]:
    return {fk["name"] for fk in inspect(engine).get_foreign_keys("responses")}


def keys_and_indexes(engine: sa.Engine) -> set[str]:
    inspector = inspect(engine)
    return (foreign_keys(engine) | {u["name"] for u in inspector.get_unique_constraints("responses")}
            | {i["name"] for i in inspector.get_indexes("responses")})


@pytest.fixture
def bulk_from_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the bulk path for any file, so that the reference export exercises it."""
    monkeypatch.setattr(bulk, "BULK_LOAD_ROWS", 1)


@pytest.mark.slow
def test_bulk_path_stores_the_file_and_keeps_every_foreign_key(engine, settings, round_2019, bulk_from_one_row):
    """The same outcome as the per-row path, and the schema unchanged after the load."""
    keys_before = keys_and_indexes(engine)
    files = pipeline.read_files(settings, 2019, [str(EXAMPLES / "responses-2019.csv")])
    validated = pipeline.validate_files(settings, 2019, pipeline.match_files(settings, 2019, files))
    summary = pipeline.store_files(settings, 2019, validated)
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (19, 1)
    assert keys_and_indexes(engine) == keys_before
    assert {"fk_responses_file_id_ingested_files", "fk_responses_partnership_id_partnerships",
            "uq_responses_file_id", "ix_responses_round_status_partnership"} <= keys_before


def load_in_bulk(engine: sa.Engine, rows: list[tuple[int, str]]) -> None:
    """One file of 2019 through the bulk path: ``rows`` are (row number, partnership id) pairs."""
    with engine.begin() as connection:
        round_id = connection.scalar(select(Round.id).where(Round.year == 2019))
        with bulk.checked_in_bulk(connection, Response.__table__, rows=len(rows)):
            file_id = connection.execute(
                sa.insert(IngestedFile).values(round_id=round_id, sha256="0" * 64, name="x.csv", size_bytes=1,
                                               row_count=len(rows), layout="plain", report={}).returning(IngestedFile.id)
            ).scalar_one()
            bulk.bulk_insert(
                connection, "responses",
                ("round_id", "file_id", "row_number", "partnership_id", "matched_by", "status", "answers", "warnings",
                 "created_at"),
                [(round_id, file_id, number, partnership, "token", "accepted", "{}", "[]", "2019-04-01 00:00:00+00:00")
                 for number, partnership in rows],
            )


def nothing_stored(engine: sa.Engine) -> bool:
    with engine.connect() as connection:
        return (connection.scalar(select(func.count()).select_from(Response)) == 0
                and connection.scalar(select(func.count()).select_from(IngestedFile)) == 0)


@pytest.mark.slow
def test_a_row_breaking_a_foreign_key_rolls_the_whole_load_back(engine, round_2019, bulk_from_one_row):
    """A response of a partnership that does not exist fails (on PostgreSQL when the key is added back): nothing
    is stored and every key and index is still there."""
    keys_before = keys_and_indexes(engine)
    with pytest.raises(INTEGRITY_ERRORS, match="fk_responses_partnership_id_partnerships|FOREIGN KEY constraint failed"):
        load_in_bulk(engine, [(2, 1), (3, 999_999)])
    assert nothing_stored(engine)
    assert keys_and_indexes(engine) == keys_before


def test_a_row_stored_twice_breaks_the_rebuilt_unique_key_and_rolls_back(engine, round_2019, bulk_from_one_row):
    """A duplicate row fails the unique (file, row) key (on PostgreSQL when it is rebuilt after the load):
    nothing is stored, and the indexes set aside for the load are back."""
    keys_before = keys_and_indexes(engine)
    with pytest.raises(INTEGRITY_ERRORS, match="uq_responses_file_id|UNIQUE constraint failed"):
        load_in_bulk(engine, [(2, 1), (2, 1)])
    assert nothing_stored(engine)
    assert keys_and_indexes(engine) == keys_before


def test_column_wise_bulk_insert_keeps_every_value_exactly(engine):
    """Backslashes, tabs, line breaks, NULLs, numbers and per-chunk constants come back as written, on the
    driver's bulk path of either database (COPY text on PostgreSQL)."""
    scratch = sa.Table("scratch_bulk", sa.MetaData(), sa.Column("n", sa.Integer), sa.Column("label", sa.Text),
                       sa.Column("note", sa.Text), sa.Column("flag", sa.Boolean))
    scratch.create(engine)
    texts = ['{"story": "a \\"quoted\\" word"}', "tab\there", "line\nbreak\r\n", "back\\slash", "\\N", ""]
    chunks = [
        [[1, 2, 3], texts[:3], "constant", [True, False, None]],
        [[4, 5, 6], texts[3:], None, True],
    ]
    with engine.begin() as connection:
        written = bulk.bulk_insert_columns(connection, "scratch_bulk", ("n", "label", "note", "flag"), chunks)
    with engine.connect() as connection:
        stored = connection.execute(sa.select(scratch).order_by(scratch.c.n)).all()
    assert written == 6
    assert [tuple(row) for row in stored] == [
        (1, texts[0], "constant", True), (2, texts[1], "constant", False), (3, texts[2], "constant", None),
        (4, texts[3], None, True), (5, texts[4], None, True), (6, texts[5], None, True),
    ]


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.slow
def test_bulk_path_steps_aside_when_another_session_is_reading_the_panel(
    engine, settings, round_2019, bulk_from_one_row, monkeypatch
):
    """A long read of the panel in another session keeps the bulk path's locks busy: the file is stored the
    usual way instead of waiting (or deadlocking), with the same outcome. Had the store waited for the lock, it
    would wait for this test's reader forever: finishing at all is the proof."""
    monkeypatch.setattr(bulk, "BULK_LOCK_TIMEOUT_MS", 200)
    keys_before = keys_and_indexes(engine)
    reader = engine.connect()
    try:
        reader.begin()
        reader.execute(sa.text("SELECT count(*) FROM partnerships")).scalar_one()  # holds its share lock
        files = pipeline.read_files(settings, 2019, [str(EXAMPLES / "responses-2019.csv")])
        validated = pipeline.validate_files(settings, 2019, pipeline.match_files(settings, 2019, files))
        summary = pipeline.store_files(settings, 2019, validated)
    finally:
        reader.rollback()
        reader.close()
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (19, 1)
    assert keys_and_indexes(engine) == keys_before


def store_paths(settings, paths: list[str]):
    files = pipeline.read_files(settings, 2019, paths)
    return pipeline.store_files(settings, 2019, pipeline.validate_files(settings, 2019,
                                                                         pipeline.match_files(settings, 2019, files)))


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
@pytest.mark.slow
def test_a_bulk_load_takes_one_block_of_ids_and_later_rows_number_on_after_it(
    engine, settings, round_2019, tmp_path, monkeypatch
):
    """The bulk path reserves its ids from the sequence in one call: its rows get consecutive ids, a later file
    stored the usual way gets ids after them (no id taken twice), and every row gets the server's created_at."""
    monkeypatch.setattr(bulk, "BULK_LOAD_ROWS", 1)
    first = store_paths(settings, [str(EXAMPLES / "responses-2019.csv")]).files[0]
    with engine.connect() as connection:
        bulk_rows = connection.execute(select(Response.id, Response.created_at).order_by(Response.id)).all()
    bulk_ids = [row.id for row in bulk_rows]
    assert len(bulk_ids) == first.rows - first.quarantined
    assert bulk_ids == list(range(bulk_ids[0], bulk_ids[0] + len(bulk_ids)))
    assert len({row.created_at for row in bulk_rows}) == 1 and bulk_rows[0].created_at is not None

    monkeypatch.setattr(bulk, "BULK_LOAD_ROWS", 50_000)  # the usual path: ids from the column's default
    later = tmp_path / "later.csv"
    later.write_text(
        "partnership_id,submitted_at,markets,sme_involvement,cooperation_agreements,business_missions_planned,"
        "sme_members,success_story\nESCP4I-01,2019-06-01T10:00:00,US,other,1,yes,5,\n"
    )
    assert store_paths(settings, [str(later)]).files[0].accepted == 1
    with engine.connect() as connection:
        ids = connection.scalars(select(Response.id).order_by(Response.id)).all()
        later_created = connection.scalar(select(Response.created_at).where(Response.id == ids[-1]))
    assert len(ids) == len(set(ids)) == len(bulk_ids) + 1
    assert ids[-1] > bulk_ids[-1]
    assert later_created > bulk_rows[0].created_at
