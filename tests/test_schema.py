"""The schema is owned by Alembic: migrations build exactly the models, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from db.engine import get_engine, upgrade
from db.models import Base


def test_migrations_build_the_models_exactly(db_url):
    """Autogenerate finds nothing to add: no model change is missing a migration."""
    with get_engine(db_url).connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []


def test_upgrading_twice_is_harmless(db_url):
    upgrade(db_url)
    upgrade(db_url)
