"""A real Prefect server for tests: `prefect server start` on a free local port, its database in a temporary
folder, stopped at the end. Also starts process workers and runs the Prefect CLI against it.

Tests share one server per test process (it takes ~9-15 s to start): ``shared_server()``,
``deployed_server()`` and ``reference_round_run()`` make each thing once; it is torn down at process exit.
"""

from __future__ import annotations

import csv
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consult.local_prefect import database_template, is_healthy
from tests.processes import stop_process_group

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_BIN = Path(sys.executable).with_name("prefect")
# Background services of a Prefect server whose work no test of the session's server reads (see `lean`).
UNREAD_SERVICES = ("EVENT_PERSISTER", "TRIGGERS", "LATE_RUNS", "FOREMAN", "CANCELLATION_CLEANUP",
                   "PAUSE_EXPIRATIONS", "CLEANUP_RECONCILER", "DB_VACUUM")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_environment() -> dict[str, str]:
    """The parent's environment without anything that would point a child at another server or database:
    the test harness's PREFECT_* values and a test's CONSULT_* values must not leak into the server or a
    worker."""
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "CONSULT_", "PREFECT__"))
    }


@dataclass
class PrefectServer:
    """One ``prefect server start`` process. ``env`` is what every child (CLI, worker) gets to reach it."""

    home: Path
    port: int = field(default_factory=free_port)
    scheduler: bool = False
    # The session's server (tests/conftest.py) serves hundreds of flow runs and no worker, deployment or
    # automation: the background services nothing there reads (the event feed's store, automations, late-run
    # marking, worker health, cancellation and pause clean-up, expired-lease clean-up, event vacuuming) are
    # off, sparing it their CPU on a 2-core machine. Task runs (built from events by the task run recorder) and concurrency leases (the repossessor)
    # stay as in production.
    lean: bool = False
    # The server's own database: a SQLite file in ``home`` unless a URL is given (the session's server keeps
    # its runs in PostgreSQL: several test processes and their `consult` children write to it at once).
    database_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"

    @property
    def log_path(self) -> Path:
        return self.home / "server.log"

    @property
    def env(self) -> dict[str, str]:
        env = _clean_environment()
        env.update(
            {
                "PREFECT_HOME": str(self.home / "prefect-home"),
                "PREFECT_API_URL": self.api_url,
                "PREFECT_UI_API_URL": self.api_url,
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url
                or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                "PREFECT_LOGGING_LEVEL": "INFO",
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                # Workers and `serve` poll every second instead of every 10 s, so that tests wait less.
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PREFECT_CLI_PROMPT": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.lean:
            env.update({f"PREFECT_SERVER_SERVICES_{name}_ENABLED": "false" for name in UNREAD_SERVICES})
        return env

    def start(self, timeout: float = 120, wait: bool = True) -> PrefectServer:
        """Start the server; with ``wait`` (the default) return once it answers, else at once (then
        ``wait_until_healthy(api_url)`` before using it). Its database starts as a copy of the migrated
        template (:func:`migrated_database_template`), so that it does not run Prefect's migrations."""
        self.home.mkdir(parents=True, exist_ok=True)
        database = self.home / "prefect.db"
        if self.database_url is None and not database.exists():
            shutil.copyfile(migrated_database_template(), database)
        command = [str(PREFECT_BIN), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        # Without the scheduler, deployments keep their schedules but no run is created behind the test's
        # back.
        if not self.scheduler:
            command.append("--no-scheduler")
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
        )
        if not wait:
            return self
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"prefect server exited with {self.process.returncode}:\n{self.tail_log()}"
                )
            if is_healthy(self.api_url, timeout=2):
                return self
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(
            f"prefect server did not answer {self.api_url}/health within {timeout} s:\n{self.tail_log()}"
        )

    def tail_log(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cli(
        self, *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ARGS`` against this server; raise with its output when it fails."""
        result = subprocess.run(
            [str(PREFECT_BIN), *args],
            check=False,
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result

    def start_worker(
        self, pool: str, *, name: str, env: dict[str, str] | None = None, extra_args: Sequence[str] = ()
    ) -> subprocess.Popen[bytes]:
        """A process worker in the background, as on a worker machine (``prefect worker start --pool P``)."""
        log = (self.home / f"worker-{name}.log").open("wb")
        worker = subprocess.Popen(
            [
                str(PREFECT_BIN),
                "worker",
                "start",
                "--pool",
                pool,
                "--type",
                "process",
                "--name",
                name,
                *extra_args,
            ],
            env={**self.env, **(env or {})},
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.children.append(worker)
        return worker

    def worker_log(self, name: str) -> str:
        path = self.home / f"worker-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for child in [*self.children, self.process]:
            if child is None or child.poll() is not None:
                continue
            # Each child leads its own process group: stop it with the flow-run processes it started.
            stop_process_group(child, grace=20)
        self.children.clear()


def migrated_database_template() -> Path:
    """An empty Prefect database migrated to the installed Prefect's version, made once (``prefect server
    database upgrade``, ~5 s) and kept under .pytest_cache for later test runs: a server started on a copy skips
    its migrations, ~3 s of each start here."""
    from importlib.metadata import version

    # consult's own template (tests/conftest.py points XDG_CACHE_HOME at .pytest_cache): one file for both.
    template = database_template() or REPO_ROOT / ".pytest_cache" / "consult" / f"prefect-{version('prefect')}.db"
    if template.exists():
        return template
    template.parent.mkdir(parents=True, exist_ok=True)
    # Made under a name of its own and renamed into place: two test runs at once never see half a template.
    building = template.with_name(f"{template.stem}-{os.getpid()}.db")
    env = _clean_environment() | {
        "PREFECT_HOME": str(template.parent / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{building}",
    }
    result = subprocess.run([str(PREFECT_BIN), "server", "database", "upgrade", "-y"], env=env, cwd=template.parent,
                            capture_output=True, text=True, timeout=300, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"prefect server database upgrade failed ({result.returncode}):\n{result.stdout}"
                           f"\n{result.stderr}")
    os.replace(building, template)
    return template


def wait_until_healthy(api_url: str, timeout: float = 180, log: str | None = None) -> None:
    """Return once the server at ``api_url`` answers its health check; fail saying so after ``timeout``,
    with the end of its ``log``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_healthy(api_url, timeout=2):
            return
        time.sleep(0.2)
    tail = Path(log).read_text(errors="replace")[-3000:] if log and Path(log).exists() else ""
    raise RuntimeError(f"the session's Prefect server at {api_url} did not answer within {timeout} s:\n{tail}")


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


# --- One server, one set of deployments and one worker for the whole test process ---------------------------
# Several test modules (integration, browser) read the same round run; starting the server takes ~9-15 s, the
# round run ~30 s, so both are made once per process and torn down at exit.

WORK_POOL = "consult"
PREFECT_YAML = REPO_ROOT / "deployments" / "prefect.yaml"
EXAMPLES = REPO_ROOT / "examples" / "escp4i"
_shared: dict[str, object] = {}


def shared_server() -> PrefectServer:
    """The process-wide Prefect server, started on first use and stopped when the test process exits."""
    if "server" not in _shared:
        import atexit
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="consult-prefect-"))
        server = PrefectServer(home=home).start()
        atexit.register(shutil.rmtree, home, True)
        atexit.register(server.stop)
        _shared["server"] = server
    return _shared["server"]  # type: ignore[return-value]


def deployed_server() -> PrefectServer:
    """The shared server with a process work pool, every deployment of deployments/prefect.yaml applied with
    `prefect deploy --all`, and one process worker polling the pool (as a worker machine would)."""
    server = shared_server()
    if "deployed" not in _shared:
        server.cli("work-pool", "create", WORK_POOL, "--type", "process")
        server.cli(
            "deploy",
            "--all",
            "--prefect-file",
            str(PREFECT_YAML.relative_to(REPO_ROOT)),
            env={"CONSULT_HOME": str(REPO_ROOT)},
        )
        server.start_worker(WORK_POOL, name="worker-1")
        _shared["deployed"] = True
    return server


def api_settings(server: PrefectServer):  # type: ignore[no-untyped-def]
    """Point this process's Prefect client at ``server`` (tests otherwise talk to the session's test
    harness)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: server.api_url})


def consult_environment(root: Path) -> dict[str, str]:
    """A database with the reference panel, and data/output folders, all under ``root``: the CONSULT_*
    variables a flow run gets through the deployment's job variables (never through task parameters)."""
    from consult.panel import import_panel
    from db.engine import get_engine, session_scope, upgrade

    url = f"sqlite:///{root / 'consult.db'}"
    upgrade(url)
    with session_scope(get_engine(url)) as session:
        import_panel(session, EXAMPLES / "panel.csv")
    get_engine(url).dispose()
    return {
        "CONSULT_DATABASE_URL": url,
        "CONSULT_DATA_DIR": str(root / "data"),
        "CONSULT_OUTPUT_DIR": str(root / "output"),
        "CONSULT_MAIL_BACKEND": "mailbox",
    }


def trigger(server: PrefectServer, deployment: str, parameters: dict[str, object], env: dict[str, str]):  # type: ignore[no-untyped-def]
    """Create a flow run of ``deployment`` through the API and return at once."""
    from prefect.deployments import run_deployment

    with api_settings(server):
        return run_deployment(deployment, parameters=parameters, job_variables={"env": env}, timeout=0)


def wait_for(server: PrefectServer, flow_run_id, timeout: float = 420):  # type: ignore[no-untyped-def]
    """Poll the API until the flow run reaches a final state; fail with the worker's log if it does not."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with api_settings(server), get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            flow_run = client.read_flow_run(flow_run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                return flow_run
            time.sleep(1)
    raise AssertionError(
        f"flow run {flow_run_id} not finished after {timeout} s:\n{server.worker_log('worker-1')[-4000:]}"
    )


@dataclass
class RoundRun:
    flow_run: object
    env: dict[str, str]
    root: Path


def reference_round_run() -> RoundRun:
    """The 2019 reference round, run once per test process through the `run-round` deployment by the
    worker."""
    if "round_run" not in _shared:
        import tempfile

        server = deployed_server()
        root = Path(tempfile.mkdtemp(prefix="consult-round-", dir=server.home))
        env = consult_environment(root)
        parameters = {
            "year": 2019,
            "questionnaire": str(EXAMPLES / "questionnaire-2019.yaml"),
            "response_files": [str(EXAMPLES / "responses-2019.csv")],
            "closes_on": "2019-06-30",
        }
        created = trigger(server, "run-round/run-round", parameters, env)
        _shared["round_run"] = RoundRun(flow_run=wait_for(server, created.id), env=env, root=root)
    return _shared["round_run"]  # type: ignore[return-value]


def read_markdown_artifact(server: PrefectServer, key: str) -> str | None:
    """The latest version of the artifact ``key`` (what the UI shows under Artifacts), or None."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    with api_settings(server), get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
            sort=ArtifactSort.CREATED_DESC,
            limit=1,
        )
    return str(found[0].data) if found else None


def reference_figures(year: int) -> dict[str, object]:
    """What an analyst expects from the reference files, computed here with the standard library: the latest
    complete submission per partnership of the panel counts; unknown partnerships are quarantined."""
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        panel_rows = list(csv.DictReader(handle))
    panel = {row["partnership_id"] for row in panel_rows}
    with open(EXAMPLES / f"responses-{year}.csv", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    latest: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda row: row["submitted_at"]):
        if row["partnership_id"] in panel and row["submitted_at"]:
            latest[row["partnership_id"]] = row
    markets = Counter(code for row in latest.values() for code in row["markets"].split(";") if code)
    top_market, top_count = markets.most_common(1)[0]
    return {
        "consulted": len(panel),
        "contacts": len(panel_rows),
        "rows": len(rows),
        "accepted": len(latest),
        "unknown": sorted({row["partnership_id"] for row in rows} - panel),
        "top_market": top_market,
        "top_count": top_count,
    }
