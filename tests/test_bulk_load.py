"""Big loads check foreign keys once for all on PostgreSQL, and still refuse a row that breaks one."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy import func, inspect, select

from consult.ingest import pipeline
from db import bulk
from db.models import IngestedFile, Response, Round
from tests.factories import EXAMPLES


def foreign_keys(engine: sa.Engine) -> set[str]:
    return {fk["name"] for fk in inspect(engine).get_foreign_keys("responses")}


@pytest.fixture
def bulk_from_one_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Take the bulk path for any file, so that the reference export exercises it."""
    monkeypatch.setattr(bulk, "BULK_FOREIGN_KEY_ROWS", 1)


def test_bulk_path_stores_the_file_and_keeps_every_foreign_key(engine, settings, round_2019, bulk_from_one_row):
    """The same outcome as the per-row path, and the schema unchanged after the load."""
    keys_before = foreign_keys(engine)
    files = pipeline.read_files(settings, 2019, [str(EXAMPLES / "responses-2019.csv")])
    validated = pipeline.validate_files(settings, 2019, pipeline.match_files(settings, 2019, files))
    summary = pipeline.store_files(settings, 2019, validated)
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (19, 1)
    assert foreign_keys(engine) == keys_before == {
        "fk_responses_file_id_ingested_files", "fk_responses_partnership_id_partnerships"
    }


@pytest.mark.parametrize("db_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True)
def test_a_row_breaking_a_foreign_key_rolls_the_whole_load_back(engine, round_2019, bulk_from_one_row):
    """A response of a partnership that does not exist fails when the key is added back: nothing is stored and
    the key is still there."""
    with pytest.raises(sa.exc.IntegrityError, match="fk_responses_partnership_id_partnerships"), engine.begin() as connection:
        round_id = connection.scalar(select(Round.id).where(Round.year == 2019))
        with bulk.foreign_keys_checked_in_bulk(connection, Response.__table__, rows=2):
            file_id = connection.execute(
                sa.insert(IngestedFile).values(round_id=round_id, sha256="0" * 64, name="x.csv", size_bytes=1,
                                               row_count=2, layout="plain", report={}).returning(IngestedFile.id)
            ).scalar_one()
            bulk.bulk_insert(
                connection, "responses",
                ("round_id", "file_id", "row_number", "partnership_id", "matched_by", "status", "answers", "warnings",
                 "created_at"),
                [(round_id, file_id, 2, 1, "token", "accepted", "{}", "[]", "2019-04-01 00:00:00+00:00"),
                 (round_id, file_id, 3, 999_999, "token", "accepted", "{}", "[]", "2019-04-01 00:00:00+00:00")],
            )
    with engine.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(Response)) == 0
        assert connection.scalar(select(func.count()).select_from(IngestedFile)) == 0
    assert "fk_responses_partnership_id_partnerships" in foreign_keys(engine)
