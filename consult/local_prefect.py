"""One local Prefect server per data folder, started in the background and left running.

Commands that run a flow talk to a Prefect server. Prefect's temporary server takes 10-30 s to start on a busy
machine, is started and stopped by every command, and takes the data-quality reports with it when it stops. So
the default is one long-lived `prefect server start` whose database lives in the data folder
(``CONSULT_DATA_DIR/prefect/``), recorded by a pid file and a state file (its URL). ``consult server
start|status|stop`` manage it; a flow command starts it when none runs (``ensure_prefect_api``).
``CONSULT_PREFECT=ephemeral`` keeps Prefect's temporary server for one-off scripts and CI.

Beside the server runs the warm command process (consult/warm.py) that flow commands start in: ``start_warm``
starts it (``consult server start``, and a flow command that started the server), ``stop`` stops it first.

Nothing here imports Prefect: this module runs before a flow command imports its flow, so that the
PREFECT_API_URL it sets is the one Prefect reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx

from consult.errors import ConsultError
from consult.processes import command_line
from consult.settings import Settings

DEFAULT_PORT = 4200
HOST = "127.0.0.1"
# How long a reachable server may take to answer its health check before we call it unreachable.
HEALTH_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class ServerFiles:
    """Where the local server keeps its things, all under the data folder."""

    folder: Path

    @property
    def pid(self) -> Path:
        return self.folder / "server.pid"

    @property
    def state(self) -> Path:
        return self.folder / "server.json"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    @property
    def lock(self) -> Path:
        return self.folder / "server.lock"

    @property
    def home(self) -> Path:
        return self.folder / "home"

    @property
    def database(self) -> Path:
        return self.folder / "prefect.db"


def server_files(settings: Settings) -> ServerFiles:
    return ServerFiles(settings.data_dir / "prefect")


# Tables a freshly started server fills by itself (its migrations' version, the block types it registers): a
# snapshot holding rows anywhere else has seen a run and is not kept as the template.
_TEMPLATE_TABLES = frozenset({"alembic_version", "block_type", "block_schema", "block_schema_reference"})


def database_template() -> Path | None:
    """A migrated, empty Prefect database for the installed Prefect, kept per machine user.

    A server in a new data folder spends about half its first start (10 s here) migrating an empty database;
    started on a copy of this one, it skips that. Made from the first fresh server's database (see
    :func:`_keep_as_template`); the Prefect version in the name retires it when Prefect is upgraded.
    """
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    except RuntimeError:  # no home folder (a service account without one): no template, the server migrates
        return None
    return cache / "consult" / f"prefect-{version('prefect')}.db"


def _seed_from_template(database: Path) -> bool:
    """Start a new data folder's database as a copy of the template, if there is one."""
    template = database_template()
    if template is None or not template.is_file():
        return False
    partial = database.with_name(f"{database.name}.{os.getpid()}.part")
    try:
        with contextlib.closing(sqlite3.connect(f"file:{template}?mode=ro&immutable=1", uri=True)) as checked:
            checked.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        template.unlink(missing_ok=True)  # not a migrated database (a damaged cache): made again by this start
        return False
    try:
        shutil.copyfile(template, partial)
        os.replace(partial, database)  # never half a database under the server's name
    except OSError:
        partial.unlink(missing_ok=True)
        return False  # the cache is an optimisation: without it the server migrates, as Prefect always does
    return True


def _keep_as_template(database: Path) -> None:
    """Snapshot a fresh server's database (migrated, nothing run yet) as the template for later folders."""
    template = database_template()
    if template is None:
        return
    partial = template.with_name(f"{template.name}.{os.getpid()}.part")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as live:
            tables = [row[0] for row in live.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if "alembic_version" not in tables or any(
                live.execute(f'SELECT 1 FROM "{table}" LIMIT 1').fetchone()
                for table in tables if table not in _TEMPLATE_TABLES and not table.startswith("sqlite_")
            ):
                return
            # SQLite's backup API: a consistent copy of a database another process (the server) has open.
            with contextlib.closing(sqlite3.connect(partial)) as copy:
                live.backup(copy)
        os.replace(partial, template)
    except (OSError, sqlite3.Error):
        # Only a later first start is slower without it; the server this command started is not affected.
        partial.unlink(missing_ok=True)


@dataclass(frozen=True)
class ServerStatus:
    """What the pid and state files say, checked against the process table and the server's health."""

    running: bool  # the process is alive and answers /api/health
    pid: int | None = None
    url: str | None = None  # the UI's address, e.g. http://127.0.0.1:4200
    alive: bool = False  # the recorded process exists (it may still be starting)
    stale: bool = False  # a pid file whose process is gone

    @property
    def api_url(self) -> str | None:
        return f"{self.url}/api" if self.url else None


_clients: dict[int, httpx.Client] = {}


def _http() -> httpx.Client:
    """One HTTP client per process for the server's health checks: every new client builds a TLS context (the
    CA bundle loaded, ~30 ms of CPU here) even for a plain-HTTP loopback address, and a start-up polls four
    times a second. Keyed by pid: a forked child (the warm process forks commands) never shares the parent's
    pooled connections."""
    pid = os.getpid()
    if pid not in _clients:
        _clients[pid] = httpx.Client()
    return _clients[pid]


def is_healthy(api_url: str, timeout: float = HEALTH_TIMEOUT_SECONDS) -> bool:
    try:
        return _http().get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def serves_this_folder(api_url: str, files: ServerFiles) -> bool:
    """The server answering at ``api_url`` is the one of this data folder (its PREFECT_HOME), not another
    folder's server that took the same port first (two folders starting theirs at once)."""
    try:
        answer = _http().get(f"{api_url}/admin/settings", timeout=HEALTH_TIMEOUT_SECONDS)
        return answer.status_code == 200 and Path(answer.json().get("home", "")) == files.home
    except (httpx.HTTPError, ValueError):
        return False


def answers(api_url: str, timeout: float) -> bool:
    """Someone else's server answers at all (Prefect Cloud may want a key before it says healthy)."""
    try:
        return _http().get(f"{api_url.rstrip('/')}/health", timeout=timeout).status_code < 500
    except httpx.HTTPError:
        return False


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, but not one we started (checked below)
    if not Path("/proc/self").is_dir():
        return True  # no /proc to tell by
    # A recycled pid belongs to another program: only a `prefect server start` counts; a zombie (exited, not
    # yet reaped by its parent) is not a server.
    words = command_line(pid)
    return words is not None and b"prefect" in b" ".join(words) and b"server" in words


def _read_state(files: ServerFiles) -> tuple[int | None, str | None]:
    pid = None
    url = None
    with contextlib.suppress(OSError, ValueError):
        pid = int(files.pid.read_text().strip())
    with contextlib.suppress(OSError, ValueError):
        url = json.loads(files.state.read_text())["url"]
    return pid, url


def status(settings: Settings) -> ServerStatus:
    files = server_files(settings)
    pid, url = _read_state(files)
    if pid is None:
        return ServerStatus(running=False, url=url)
    if not _process_alive(pid):
        return ServerStatus(running=False, pid=pid, url=url, stale=True)
    healthy = url is not None and is_healthy(f"{url}/api") and serves_this_folder(f"{url}/api", files)
    return ServerStatus(running=healthy, pid=pid, url=url, alive=True)


@contextlib.contextmanager
def _exclusive(files: ServerFiles) -> Iterator[None]:
    """Two commands starting the server at once: the second waits for the first and then finds it running."""
    files.folder.mkdir(parents=True, exist_ok=True)
    with files.lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port whose last connections linger in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _prefect_command() -> list[str]:
    beside = Path(sys.executable).with_name("prefect")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("prefect")
    return [found] if found else [sys.executable, "-m", "prefect"]


def _server_environment(files: ServerFiles, port: int, *, blocks_registered: bool = False) -> dict[str, str]:
    """The server's settings. ``blocks_registered``: its database is a copy of the template, whose first server
    registered Prefect's block types already; registering them again (with Prefect's collections imported to
    find them) is a quarter of a start's CPU. A block type missing there is registered by the client that uses it."""
    api_url = f"http://{HOST}:{port}/api"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_API_DATABASE",
                                                                                 "PREFECT_SERVER_DATABASE"))}
    env.update(
        {
            "PREFECT_HOME": str(files.home),
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{files.database}",
            "PREFECT_API_URL": api_url,
            "PREFECT_UI_API_URL": api_url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_LOGGING_LEVEL": env.get("PREFECT_SERVER_LOGGING_LEVEL", "WARNING"),
        }
    )
    if blocks_registered:
        env |= {"PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false",
                "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
    return env


def _last_log_line(files: ServerFiles) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in files.log.read_text(errors="replace").splitlines() if line.strip()]
        # The last error line says more than the last line of a traceback's context.
        errors = [line for line in lines if "Error" in line or "error" in line]
        return (errors or lines or [""])[-1][:200]
    return ""


def _remove_records(files: ServerFiles) -> None:
    for path in (files.pid, files.state):
        path.unlink(missing_ok=True)


@dataclass(frozen=True)
class StartResult:
    url: str
    pid: int
    started: bool  # False: it was already running
    notes: tuple[str, ...] = ()

    @property
    def api_url(self) -> str:
        return f"{self.url}/api"


def start(settings: Settings, *, port: int | None = None, timeout: float | None = None) -> StartResult:
    """Start the local server in the background unless it runs already; wait (bounded) until it answers.

    ``port``: the one asked for (taken by another program: an error); default: the last one used, else 4200,
    else a free one (said in a note).
    """
    files = server_files(settings)
    timeout = settings.prefect_start_timeout if timeout is None else timeout
    notes: list[str] = []
    with _exclusive(files):
        current = status(settings)
        if current.running:
            assert current.url is not None and current.pid is not None
            if port is not None and not current.url.endswith(f":{port}"):
                raise ConsultError(
                    f"the local Prefect server already runs at {current.url} (pid {current.pid}): "
                    f"`consult server stop` first to move it to port {port}"
                )
            return StartResult(url=current.url, pid=current.pid, started=False)
        if current.alive:
            # Recorded and alive but not answering: still starting (another command launched it), or stuck.
            assert current.pid is not None
            if current.url and _wait_healthy(f"{current.url}/api", current.pid, timeout, files):
                return StartResult(url=current.url, pid=current.pid, started=False)
            raise ConsultError(
                f"the local Prefect server (pid {current.pid}) does not answer at {current.url}/api/health after "
                f"{timeout:.0f} s: run `consult server stop`, then `consult server start` (log: {files.log})"
            )
        if current.stale:
            notes.append(f"the local Prefect server (pid {current.pid}) had died; removed its stale pid file")
            _remove_records(files)
        chosen = _choose_port(port, current.url, notes, settings.prefect_port)
        try:
            return _spawn(files, chosen, timeout, notes)
        except ConsultError:
            if port is not None or _port_is_free(chosen):
                raise
            # Another program (or another folder's server) bound the port between our check and our start.
            retry = _free_port()
            notes.append(f"port {chosen} was taken while the server started; using port {retry}")
            return _spawn(files, retry, timeout, notes)


def _choose_port(asked: int | None, previous_url: str | None, notes: list[str], default: int = DEFAULT_PORT) -> int:
    if asked is not None:
        if not _port_is_free(asked):
            raise ConsultError(
                f"port {asked} is already taken by another program: choose another with "
                f"`consult server start --port N`, or leave --port out to take a free one"
            )
        return asked
    preferred = default
    if previous_url:
        with contextlib.suppress(ValueError):
            preferred = int(previous_url.rsplit(":", 1)[1])
    if _port_is_free(preferred):
        return preferred
    chosen = _free_port()
    notes.append(f"port {preferred} is taken by another program; using port {chosen}")
    return chosen


def _spawn(files: ServerFiles, port: int, timeout: float, notes: list[str]) -> StartResult:
    files.home.mkdir(parents=True, exist_ok=True)
    url = f"http://{HOST}:{port}"
    existed = files.database.exists()
    seeded = not existed and _seed_from_template(files.database)
    fresh = not existed and not seeded
    command = [*_prefect_command(), "server", "start", "--host", HOST, "--port", str(port)]
    with files.log.open("ab") as log:
        # Its own session: the server outlives this command and a Ctrl-C in this terminal.
        process = subprocess.Popen(
            command, env=_server_environment(files, port, blocks_registered=seeded), stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, cwd=files.folder, start_new_session=True, close_fds=True,
        )
    files.pid.write_text(f"{process.pid}\n")
    files.state.write_text(json.dumps({"url": url, "port": port, "pid": process.pid, "log": str(files.log),
                                       "database": str(files.database)}) + "\n")
    if _wait_healthy(f"{url}/api", process.pid, timeout, files, process=process):
        if fresh:
            _keep_as_template(files.database)
        return StartResult(url=url, pid=process.pid, started=True, notes=tuple(notes))
    exited = process.poll() is not None
    if not exited:
        _terminate(process.pid)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)
    _remove_records(files)
    why = f"exited during start-up ({_last_log_line(files)})" if exited else f"did not answer within {timeout:.0f} s"
    raise ConsultError(f"the local Prefect server on port {port} {why}; its log: {files.log}")


def _wait_healthy(api_url: str, pid: int, timeout: float, files: ServerFiles,
                  process: subprocess.Popen[bytes] | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        if process is None and not _process_alive(pid):
            return False
        # A healthy answer from another folder's server (it holds the port, ours is about to exit) is not ours.
        wait = min(HEALTH_TIMEOUT_SECONDS, max(deadline - time.monotonic(), 0.1))
        if is_healthy(api_url, timeout=wait) and serves_this_folder(api_url, files):
            return True
        time.sleep(0.25)
    return False


def _terminate(pid: int, grace: float = 20) -> None:
    """SIGTERM the server's process group (uvicorn and its services), SIGKILL after ``grace`` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        except PermissionError:
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    return
            if not _process_alive(pid):
                return
            time.sleep(0.1)


def stop(settings: Settings) -> str:
    """Stop the local server if it runs; return what happened, in one line."""
    files = server_files(settings)
    with _exclusive(files):
        from consult import warm

        # First the warm command process, so that no command starts in it while the server goes.
        warm_line = warm.stop(files.folder)
        said = _stop_server(settings, files)
    return said + (f"\n{warm_line}" if warm_line else "")


def _stop_server(settings: Settings, files: ServerFiles) -> str:
    current = status(settings)
    if current.pid is None:
        return "no local Prefect server is recorded for this data folder; nothing to stop"
    if current.stale:
        _remove_records(files)
        return f"the local Prefect server (pid {current.pid}) had already stopped; removed its stale pid file"
    _terminate(current.pid)
    _remove_records(files)
    return f"stopped the local Prefect server (pid {current.pid}) at {current.url}"


def start_warm(settings: Settings, api_url: str, *, wait: bool) -> str | None:
    """Start the warm command process of this data folder (consult/warm.py) unless one runs for ``api_url``;
    with ``wait``, until it answers. A line to print, or None (CONSULT_WARM=0: none is started)."""
    from consult import warm

    if os.environ.get("CONSULT_WARM", "") == "0":
        return None
    files = server_files(settings)
    with _exclusive(files):
        current = warm.status(files.folder)
        if current.running and current.api_url == api_url:
            return f"warm command process already running (pid {current.pid})"
        if current.alive and current.api_url == api_url and not current.stale:
            pid = current.pid  # still importing (another command started it): wait for it too
        else:
            if current.alive:  # code changed since it started, or it imported Prefect for another server
                warm.stop(files.folder)
            pid = warm.spawn(files.folder, api_url)
    assert pid is not None
    if not wait:
        return None
    if warm.wait_ready(files.folder, pid):
        return (f"warm command process ready (pid {pid}): flow commands start without importing Prefect "
                "(CONSULT_WARM=0 runs them cold)")
    return (f"the warm command process (pid {pid}) did not start; flow commands run cold (its log: "
            f"{warm.WarmFiles(files.folder).log})")


def warm_status_line(settings: Settings) -> str:
    from consult import warm

    current = warm.status(server_files(settings).folder)
    if current.running:
        return f"warm command process running (pid {current.pid}): flow commands start warm"
    if current.stale:
        return (f"warm command process (pid {current.pid}) exits: code changed since it started; flow commands run "
                "cold (`consult server start` starts a fresh one)")
    if current.alive:
        return f"warm command process (pid {current.pid}) is starting: flow commands run cold until it is ready"
    return "warm command process not running: flow commands run cold (`consult server start` starts it)"


def ui_url(api_url: str) -> str | None:
    """The UI's address for a self-hosted server's API URL (``.../api``); None for others (e.g. Prefect Cloud)."""
    return api_url.rstrip("/").removesuffix("/api") if api_url.rstrip("/").endswith("/api") else None


def ensure_prefect_api(settings: Settings, environ: dict[str, str] | None = None) -> str | None:
    """Make sure the flow about to run reaches a Prefect server; return a line to print, or None.

    - ``CONSULT_PREFECT=ephemeral``: nothing to do; Prefect starts its temporary server (or uses PREFECT_API_URL).
    - ``PREFECT_API_URL`` set: it must answer its health check, else one error line saying what to do.
    - otherwise: the local server, started (and left running) when it is not, and exported as PREFECT_API_URL
      for this process. Call before the flow's module imports Prefect.
    """
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    if settings.prefect == "ephemeral":
        return None
    api_url = environ.get("PREFECT_API_URL")
    if api_url:
        if not answers(api_url, timeout=settings.prefect_health_timeout):
            raise ConsultError(
                f"the Prefect server at PREFECT_API_URL={api_url} does not answer: start it, or unset "
                "PREFECT_API_URL to use the local server (`consult server start`), or set CONSULT_PREFECT=ephemeral"
            )
        return None
    result = start(settings)
    environ["PREFECT_API_URL"] = result.api_url
    if not result.started:
        return None
    # The next flow commands start warm (consult/warm.py); this one goes on cold meanwhile (not waited for:
    # starting the server has just taken longer than the warm process's imports).
    start_warm(settings, result.api_url, wait=False)
    return "; ".join(
        [*result.notes, f"started the local Prefect server: UI at {result.url} (stop it with `consult server stop`)"]
    )
