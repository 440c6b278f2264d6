"""Shared fixtures: a fresh migrated database per test on SQLite and on PostgreSQL (copied from a template
migrated once per test process), settings pointing at temporary folders, the reference panel and round, and one
real Prefect server for the whole session.

The suite runs in parallel (pytest-xdist, `-n` in pyproject.toml's addopts; `-n 0` runs it in one process).
The Prefect server is started once by the controlling process (pytest_configure) and reaches the workers and
every `consult` subprocess as PREFECT_API_URL; a flow-free process never starts one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before Prefect is imported anywhere: no telemetry, quiet logs.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

import psycopg
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError

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


def pytest_configure(config: pytest.Config) -> None:
    """In the controlling process only (not in an xdist worker): start the session's Prefect server and hand
    its URL to everything started after it (workers, `consult` subprocesses) through the environment."""
    # At exit pytest looks for exceptions raised in finalizers (unraisable) after five full garbage collections
    # (Trio's count); in a worker holding Prefect, Great Expectations and pandas each takes ~0.4 s of CPU. One
    # finds what a test left behind as well.
    with contextlib.suppress(ImportError):
        from _pytest.unraisableexception import gc_collect_iterations_key

        config.stash[gc_collect_iterations_key] = 1
    if hasattr(config, "workerinput") or os.environ.get("CONSULT_TEST_PREFECT_SERVER"):
        return  # a worker: the controller's server is in PREFECT_API_URL already (or .ci/setup's collection)
    # The machine-wide cache of `consult` (the migrated Prefect database a new data folder's server starts from,
    # consult/local_prefect.py) is the tests' own: the same file as tests/prefect_server.py's template, so that
    # the servers `consult` starts in tests' data folders skip Prefect's migrations too, and the user's cache
    # is left alone.
    os.environ["XDG_CACHE_HOME"] = str(REPO_ROOT / ".pytest_cache")
    import shutil
    import tempfile

    from tests.prefect_server import PrefectServer

    home = Path(tempfile.mkdtemp(prefix="consult-test-prefect-"))
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
    # Its runs in PostgreSQL when it answers: the test processes and their `consult` children write to it at
    # once, and on SQLite's single writer a busy moment made Prefect's client back off and retry for minutes.
    database_url = None
    if postgres_skip_reason() is None:
        name = f"consult_test_prefect_{uuid.uuid4().hex[:12]}"
        _admin_execute(f'CREATE DATABASE "{name}"')
        config.add_cleanup(lambda: _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        database_url = POSTGRES_ADMIN_URL.replace("+psycopg", "+asyncpg").rsplit("/", 1)[0] + f"/{name}"
    # Started without waiting: the seconds it takes to migrate its database overlap collection; the first
    # test of each process waits for it (prefect_server_url).
    server = PrefectServer(home=home, lean=True, database_url=database_url).start(wait=False)
    config.add_cleanup(server.stop)
    os.environ["PREFECT_API_URL"] = server.api_url
    # The server does not check CSRF tokens (Prefect's default), yet each client asks it for one; and it is the
    # very Prefect the tests run (this environment's), yet each client asks for its version: six requests of every
    # flow run, some 1,800 in a session, spared.
    os.environ["PREFECT_CLIENT_CSRF_SUPPORT_ENABLED"] = "false"
    os.environ["PREFECT_CLIENT_SERVER_VERSION_CHECK_ENABLED"] = "false"
    # Every Prefect client (several per flow run, one per task submission, one per log and event worker) builds
    # a TLS context from certifi's 150 CA certificates, 16 ms of CPU each, 14 CPU-s in a session, although the
    # session's server speaks plain HTTP and no certificate is ever checked: one CA certificate is read instead.
    os.environ["PREFECT_API_SSL_CERT_FILE"] = str(_one_ca_certificate(home))
    # The warm process that `consult` commands of tests fork from (tests/warm_consult.py): one for the session,
    # importing while the workers start, not one per worker.
    from tests import warm_consult
    from tests.processes import stop_process_group

    zygote, zygote_folder = warm_consult.start_shared()
    config.add_cleanup(lambda: shutil.rmtree(zygote_folder, ignore_errors=True))
    config.add_cleanup(lambda: stop_process_group(zygote))
    os.environ["CONSULT_TEST_PREFECT_SERVER"] = server.api_url
    os.environ["CONSULT_TEST_PREFECT_LOG"] = str(server.log_path)


def _one_ca_certificate(folder: Path) -> Path:
    """A CA file holding the first certificate of certifi's bundle (a real one, so that TLS set-up accepts it)."""
    import re

    import certifi

    bundle = Path(certifi.where()).read_text(encoding="ascii")
    first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n", bundle, re.DOTALL)
    assert first is not None, f"no certificate in {certifi.where()}"
    path = folder / "one-ca.pem"
    path.write_text(first.group(0), encoding="ascii")
    return path


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """A test that runs `consult` without PREFECT_API_URL starts a local Prefect server in its data folder and
    should stop it; any left behind (a failed test) is stopped here, in the controlling process once every
    worker has finished (the workers' temporary folders are under the controller's)."""
    import sys

    # The deployed server of tests/prefect_server.py (one per process that used it): an xdist worker exits
    # without running atexit handlers, so it is stopped here.
    harness = sys.modules.get("prefect_server")
    if harness is not None and "server" in harness._shared:
        harness._shared["server"].stop()
    if hasattr(session.config, "workerinput"):
        return
    from consult.local_prefect import stop
    from consult.settings import Settings

    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None or factory._basetemp is None:
        return
    for pid_file in factory.getbasetemp().glob("**/prefect/server.pid"):
        stop(Settings(data_dir=pid_file.parent.parent))


@pytest.fixture(scope="session", autouse=True)
def prefect_server_url() -> Iterator[str]:
    """The session's Prefect server (started in pytest_configure): flows run in tests report to it.

    Flow runs in tests send no heartbeats: each run's heartbeat thread sleeps in 1 s steps and the run waits
    for it to stop, which costs about half a second per flow run (no test is about heartbeats; a deployed
    run still sends them)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    from tests import warm_consult
    from tests.prefect_server import wait_until_healthy

    warm_consult.prestart()  # imports in the background while the server finishes starting
    wait_until_healthy(os.environ["PREFECT_API_URL"], log=os.environ.get("CONSULT_TEST_PREFECT_LOG"))
    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield os.environ["PREFECT_API_URL"]


def _sqlite_template(directory: Path) -> Path:
    template = directory / "template.db"
    upgrade(f"sqlite:///{template}")
    get_engine(f"sqlite:///{template}").dispose()
    return template


def _admin_execute(statement: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def _postgres_template() -> str:
    """A PostgreSQL database migrated once, copied by CREATE DATABASE ... TEMPLATE for each test."""
    name = f"consult_template_{uuid.uuid4().hex[:12]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    upgrade(url)
    get_engine(url).dispose()  # a template must have no open connection while it is copied
    return name


# What a test database's schema is: columns, indexes, constraints and migration version, and the planner's size
# estimate of each table. A recycled database must show the template's: a test that migrated down, or dropped an
# index and died, is not recycled, nor one that ANALYZE or autovacuum left with a row estimate (DELETE keeps it,
# and the bulk path reads it to choose how to load: a later test would take the other path).
_SCHEMA_FINGERPRINT = """
SELECT string_agg(item, E'\\n' ORDER BY item) FROM (
  SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) AS item
    FROM information_schema.columns WHERE table_schema = 'public'
  UNION ALL SELECT format('index %s', indexdef) FROM pg_indexes WHERE schemaname = 'public'
  UNION ALL SELECT format('constraint %s %s', c.conname, pg_get_constraintdef(c.oid)) FROM pg_constraint c
    JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = 'public'
  UNION ALL SELECT format('version %s', version_num) FROM alembic_version
  UNION ALL SELECT format('planner estimate %s %s %s', relname, relpages, reltuples) FROM pg_class
    WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'
) AS items
"""
# A database holding more than this is dropped rather than emptied row by row (the 50 MB ingest tests).
_RECYCLE_MAX_BYTES = 16 * 1024 * 1024


class PostgresDatabases:
    """PostgreSQL databases for tests, each empty and of the template's schema when a test takes it, made and
    recycled by a thread of their own, behind and ahead of the tests.

    CREATE DATABASE ... TEMPLATE copies the whole catalog (~0.2 s here, more on a busy machine) and DROP waits for
    its files: made and dropped in each test's own set-up and tear-down, they took about 40% of the wall time of
    the tests that are not marked slow. A database a test is done with is instead emptied (its other sessions
    ended, every table's rows deleted, its sequences reset: ~30 ms) and renamed, so that no engine or cache keyed
    by its address outlives the test; one whose schema differs from the template's, or that holds much data, is
    dropped and a new one made."""

    AHEAD = 2  # databases ready before they are asked for: a run of short tests asks faster than one is made

    def __init__(self, template: str) -> None:
        self.template = template
        self.template_estimates: dict[str, tuple[int, float]] = {}  # the planner's (pages, rows) of each table
        self._ready: queue.Queue[tuple[str, str]] = queue.Queue()  # (name, or "" and why not)
        self._jobs: queue.Queue[tuple[str, str]] = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="postgres-databases", daemon=True)
        self._thread.start()
        for _ in range(self.AHEAD):
            self._jobs.put(("create", ""))

    def take(self) -> str:
        """An empty database for this test (waiting for it if it is still being made)."""
        made, error = self._ready.get(timeout=300)
        if error:
            raise RuntimeError(f"could not make a test database from {self.template}: {error}")
        return made

    def give_back(self, name: str) -> None:
        self._jobs.put(("recycle", name))

    def close(self) -> None:
        """Drop every database left, then stop."""
        self._jobs.put(("stop", ""))
        self._thread.join(timeout=300)
        while not self._ready.empty():
            made, _ = self._ready.get_nowait()
            if made:
                _admin_execute(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)')

    def _work(self) -> None:
        admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        try:
            with self._connect(self.template) as template:  # what each recycled database must show again
                fingerprint = self._fingerprint_of(template)
                self.template_estimates = self._planner_estimates(template)
            with admin.connect() as connection:
                while True:
                    job, name = self._jobs.get()
                    if job == "stop":
                        return
                    if job == "recycle":
                        emptied = self._emptied(name, fingerprint)
                        renamed = emptied and self._renamed(connection, name)
                        if renamed:
                            self._ready.put((renamed, ""))
                            continue
                        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    name = f"consult_test_{uuid.uuid4().hex[:12]}"
                    try:
                        connection.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{self.template}"'))
                    except SQLAlchemyError as error:  # handed to the test that waits for it, which fails with it
                        self._ready.put(("", str(error).splitlines()[0]))
                    else:
                        self._ready.put((name, ""))
        except BaseException as error:
            self._ready.put(("", f"{type(error).__name__}: {error}"))
            raise
        finally:
            admin.dispose()

    @staticmethod
    def _connect(name: str) -> psycopg.Connection:
        dsn = POSTGRES_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://", 1).rsplit("/", 1)[0]
        return psycopg.connect(f"{dsn}/{name}", autocommit=True)

    @staticmethod
    def _fingerprint_of(connection: psycopg.Connection) -> str:
        return str(connection.execute(_SCHEMA_FINGERPRINT).fetchone()[0])  # type: ignore[index]

    def _emptied(self, name: str, fingerprint: str) -> bool:
        """Empty ``name`` if it is small and then shows the template's schema; False: drop it instead."""
        try:
            with self._connect(name) as connection:
                # Sessions a test left behind (a killed `consult`, a server): ended, as DROP ... WITH (FORCE) would.
                connection.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                   "WHERE datname = current_database() AND pid <> pg_backend_pid()")
                size = connection.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
                template_size = connection.execute("SELECT pg_database_size(%s)", (self.template,)).fetchone()[0]  # type: ignore[index]
                if size - template_size > _RECYCLE_MAX_BYTES:
                    return False
                tables = [row[0] for row in connection.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'")]
                sequences = [row[0] for row in connection.execute(
                    "SELECT sequencename FROM pg_sequences WHERE schemaname = 'public'")]
                with connection.transaction():
                    connection.execute("SET LOCAL session_replication_role = replica")  # no FK order to follow
                    for table in tables:
                        connection.execute(f'DELETE FROM "{table}"')
                    for sequence in sequences:
                        connection.execute("SELECT setval(%s, 1, false)", (f'"{sequence}"',))
                    # A table that ANALYZE counted (the round's participants, after most tests) keeps its row
                    # estimate through DELETE; TRUNCATE sets it back to "never counted", as in the template.
                    # Without this two tests in three dropped their database, and each DROP DATABASE forces a
                    # checkpoint of the whole PostgreSQL server (~200 a session, measured in pg_stat_bgwriter).
                    counted = [table for table, estimate in self._planner_estimates(connection).items()
                               if table in tables and estimate != self.template_estimates.get(table)]
                    if counted:
                        connection.execute("TRUNCATE " + ", ".join(f'"{table}"' for table in counted) + " CASCADE")
                if self._fingerprint_of(connection) != fingerprint:
                    return False
        except psycopg.Error:
            return False
        return True

    @staticmethod
    def _planner_estimates(connection: psycopg.Connection) -> dict[str, tuple[int, float]]:
        return {str(table): (int(pages), float(tuples)) for table, pages, tuples in connection.execute(
            "SELECT relname, relpages, reltuples FROM pg_class "
            "WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'")}

    @staticmethod
    def _renamed(connection: Connection, name: str) -> str | None:
        """A new name for ``name``, once the sessions ended above are gone (None: they are not, after 5 s)."""
        renamed = f"consult_test_{uuid.uuid4().hex[:12]}"
        for _ in range(50):
            try:
                connection.execute(text(f'ALTER DATABASE "{name}" RENAME TO "{renamed}"'))
            except SQLAlchemyError:
                time.sleep(0.1)
            else:
                return renamed
        return None


@pytest.fixture(scope="session")
def database_templates(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, object]]:
    """Templates migrated on first use in this test process: {'sqlite': Path, 'postgresql': database name},
    and the PostgresDatabases made from the latter ('postgresql databases')."""
    templates: dict[str, object] = {}
    yield templates
    databases = templates.get("postgresql databases")
    if isinstance(databases, PostgresDatabases):
        databases.close()
    if "postgresql" in templates:
        _admin_execute(f'DROP DATABASE IF EXISTS "{templates["postgresql"]}" WITH (FORCE)')


DATABASE_KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def fresh_database(kind: str, templates: dict[str, object], tmp_path_factory: pytest.TempPathFactory,
                   folder: Path) -> Iterator[str]:
    """A freshly migrated database: a SQLite file in ``folder``, or a new PostgreSQL database dropped
    afterwards; both copied from a template migrated once per test process (migrating takes ~1 s, copying a
    few ms)."""
    if kind == "sqlite":
        import shutil

        if "sqlite" not in templates:
            templates["sqlite"] = _sqlite_template(tmp_path_factory.mktemp("template"))
        shutil.copyfile(templates["sqlite"], folder / "consult.db")  # type: ignore[arg-type]
        url = f"sqlite:///{folder / 'consult.db'}"
        yield url
        get_engine(url).dispose()
        return
    reason = postgres_skip_reason()
    if reason:
        pytest.skip(reason)
    if "postgresql" not in templates:
        templates["postgresql"] = _postgres_template()
        templates["postgresql databases"] = PostgresDatabases(templates["postgresql"])  # type: ignore[arg-type]
    databases: PostgresDatabases = templates["postgresql databases"]  # type: ignore[assignment]
    name = databases.take()
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        get_engine(url).dispose()
        databases.give_back(name)


@pytest.fixture(params=DATABASE_KINDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, database_templates: dict[str, object],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A freshly migrated database per test, on SQLite and on PostgreSQL."""
    with fresh_database(request.param, database_templates, tmp_path_factory, tmp_path) as url:
        yield url


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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first (in their files' order): the parallel workers start the long ones early and finish
    with the short ones, instead of one worker running a long test alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
