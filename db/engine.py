"""One engine per database URL, short sessions, and the schema upgrade through Alembic."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from consult.errors import ConsultError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    engine = _new_engine(url)
    _ENGINES.append(engine)
    return engine


# Every engine this process made, for :func:`dispose_engines`.
_ENGINES: list[Engine] = []


def dispose_engines() -> None:
    """Close the pooled connections of every engine: SQLite then folds its write-ahead log back into the
    database file, so that the file alone holds every committed change (a copy of it is a whole backup)."""
    for engine in _ENGINES:
        engine.dispose()


def _new_engine(url: str) -> Engine:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConsultError(f"database URL is not valid: {_redact(url)}") from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    # WAL lets the summary be read while a file is being ingested; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable URL>"


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back everything on any error."""
    session = sessionmaker(engine, expire_on_commit=False)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Config:
    # Alembic is imported only to migrate: every other command starts about a second sooner without it.
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision``; safe to run any number of times."""
    try:
        from alembic import command

        command.upgrade(alembic_config(url), revision)
    except OperationalError as error:
        raise ConsultError(f"cannot reach the database {_redact(url)}: {str(error.orig).strip().splitlines()[0]}") from None


def open_database(url: str) -> Engine:
    """The engine for ``url``, once its schema is known to exist (a clear error otherwise)."""
    engine = get_engine(url)
    if url not in _SCHEMA_CHECKED:
        require_schema(engine)
        _SCHEMA_CHECKED.add(url)
    return engine


_SCHEMA_CHECKED: set[str] = set()


def require_schema(engine: Engine) -> None:
    if not inspect(engine).has_table("rounds"):
        raise ConsultError(
            f"the database {_redact(str(engine.url))} has no schema yet: run `consult db upgrade` first"
        )
