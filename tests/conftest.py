"""Shared fixtures: a fresh migrated database per test on SQLite and on PostgreSQL, settings pointing at
temporary folders, the reference panel and round, and one Prefect test harness for the whole session."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry, quiet logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

from sqlalchemy import Engine, create_engine, text

from consult import settings as settings_module
from consult.settings import Settings
from db.engine import get_engine, session_scope, upgrade

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples" / "escp4i"
TEST_OUTPUT = REPO_ROOT / "test-output"
POSTGRES_ADMIN_URL = os.environ.get("CONSULT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TEST_TOKEN_SECRET = "test-secret-" + "0" * 52
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def alnum_token(digest: bytes) -> str:
    """A round's token spelled as rounds opened since migration 0006 spell it: the HMAC digest as a number, its
    32 lowest base-62 digits, least significant first (written out here, apart from consult.tokens)."""
    number = int.from_bytes(digest, "big")
    return "".join(BASE62[(number // 62**place) % 62] for place in range(32))


def _postgres_unavailable_reason() -> str | None:
    try:
        probe = create_engine(POSTGRES_ADMIN_URL, connect_args={"connect_timeout": 3})
        with probe.connect() as connection:
            connection.execute(text("select 1"))
        probe.dispose()
    except Exception as error:  # noqa: BLE001 - any failure to connect means: skip, and say why
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {str(error).splitlines()[0]}"
    return None


_PG_REASON: str | None | bool = False  # False: not probed yet


def postgres_skip_reason() -> str | None:
    global _PG_REASON
    if _PG_REASON is False:
        _PG_REASON = _postgres_unavailable_reason()
    return _PG_REASON  # type: ignore[return-value]


@pytest.fixture(scope="session", autouse=True)
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server for the whole session (it takes ~9 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated database: a SQLite file, or a new PostgreSQL database dropped afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'consult.db'}"
        upgrade(url)
        yield url
        get_engine(url).dispose()
        return
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"consult_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        upgrade(url)
        yield url
    finally:
        get_engine(url).dispose()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def engine(db_url: str) -> Engine:
    return get_engine(db_url)


@pytest.fixture
def settings(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings for one test, also exported as CONSULT_* so that code calling get_settings() sees them."""
    values = {
        "CONSULT_DATABASE_URL": db_url,
        "CONSULT_DATA_DIR": str(tmp_path / "data"),
        "CONSULT_OUTPUT_DIR": str(tmp_path / "output"),
        "CONSULT_MAIL_BACKEND": "mailbox",
        "CONSULT_TOKEN_SECRET": TEST_TOKEN_SECRET,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    settings_module.get_settings.cache_clear()
    yield settings_module.get_settings()
    settings_module.get_settings.cache_clear()


@pytest.fixture
def panel(engine: Engine, settings: Settings) -> list[str]:
    """The reference panel (examples/escp4i/panel.csv) imported; returns the partnership codes."""
    from consult.panel import import_panel

    with session_scope(engine) as session:
        import_panel(session, EXAMPLES / "panel.csv")
    import csv

    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        return sorted({row["partnership_id"] for row in csv.DictReader(handle)})


@pytest.fixture
def round_2019(engine: Engine, settings: Settings, panel: list[str]) -> int:
    """Round 2019 opened with the reference questionnaire, closing on 2019-06-30."""
    from consult.rounds import open_round

    with session_scope(engine) as session:
        open_round(
            session,
            year=2019,
            questionnaire_path=EXAMPLES / "questionnaire-2019.yaml",
            token_secret=settings.resolved_token_secret(),
            closes_on=dt.date(2019, 6, 30),
            today=dt.date(2019, 5, 1),
        )
    return 2019


@pytest.fixture(scope="session")
def test_output_dir() -> Path:
    """Where tests save what a person may want to look at (screenshots, rendered summaries)."""
    TEST_OUTPUT.mkdir(exist_ok=True)
    return TEST_OUTPUT
