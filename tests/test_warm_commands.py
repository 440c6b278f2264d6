"""Flow commands served by the warm command process (consult/warm.py, consult/launcher.py): what a user notices
is only that they start sooner. Same output, same rows, same exit status as the cold command; Ctrl-C stops
them; changed code or a dead warm process means a cold command, never a stale or a failed one.

Real processes: `consult server start` in a temporary data folder, the `consult` console script of the venv
with its output in pipes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, REPO_ROOT

CONSULT = str(Path(sys.executable).parent / "consult")
RESPONSES = str(EXAMPLES / "responses-2019.csv")

pytestmark = [pytest.mark.prefect_server, pytest.mark.slow, pytest.mark.xdist_group("warm-commands")]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Folder:
    """A working folder with its data folder, a round 2019 open, and the environment commands run with."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.server = root / "data" / "prefect"
        self.env = {key: value for key, value in os.environ.items() if not key.startswith(("CONSULT_", "PREFECT_API"))}
        self.env |= {"CONSULT_DATA_DIR": str(root / "data"), "CONSULT_OUTPUT_DIR": str(root / "output"),
                     "CONSULT_PREFECT_PORT": str(free_port())}

    def consult(self, *args: str, env: dict[str, str] | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CONSULT, *args], cwd=self.root, env=self.env | (env or {}), capture_output=True,
                              text=True, timeout=timeout, check=False)

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([CONSULT, *args], cwd=self.root, env=self.env | (env or {}), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def log(self) -> str:
        path = self.server / "warm.log"
        return path.read_text() if path.exists() else ""

    def database_copy(self, name: str) -> dict[str, str]:
        """A copy of the round's database (before any ingest): the settings that make a command use it."""
        copy = self.root / f"{name}.db"
        shutil.copyfile(self.root / "template.db", copy)
        return {"CONSULT_DATABASE_URL": f"sqlite:///{copy}"}


def warm_pid(folder: Folder) -> int:
    """`consult server start`: the server and the warm process run (started now, or already)."""
    started = folder.consult("server", "start")
    assert started.returncode == 0, started.stdout + started.stderr
    said = re.search(r"warm command process (?:ready|already running) \(pid (\d+)\)", started.stdout)
    assert said, started.stdout
    return int(said.group(1))


def served_warm(folder: Folder, launcher_pid: int) -> int | None:
    """The pid of the warm process's child that ran the command of ``launcher_pid``, if it was served warm."""
    found = re.search(rf"for pid {launcher_pid} as pid (\d+)", folder.log())
    return int(found.group(1)) if found else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def table_counts(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0] for table in tables}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory):
    """A data folder with round 2019 open (its database kept as template.db) and its local server running."""
    made = Folder(tmp_path_factory.mktemp("warm"))
    for args in (["db", "upgrade"], ["panel", "import", str(EXAMPLES / "panel.csv")],
                 ["round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"),
                  "--closes-on", "2019-06-30"]):
        done = made.consult(*args)
        assert done.returncode == 0, done.stderr
    shutil.copyfile(made.root / "data" / "consult.db", made.root / "template.db")
    yield made
    made.consult("server", "stop", timeout=120)
    for name in ("server.pid", "warm.pid"):
        try:  # never leave a process behind on a shared machine
            os.kill(int((made.server / name).read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def test_an_ingest_served_warm_prints_and_stores_what_the_cold_one_does(folder: Folder) -> None:
    warm = warm_pid(folder)
    assert oct((folder.server).stat().st_mode & 0o777) == "0o700"
    assert oct((folder.server / "warm.sock").stat().st_mode & 0o777) == "0o600"
    warm_env, cold_env = folder.database_copy("warm"), folder.database_copy("cold")

    process = folder.start("ingest", "2019", RESPONSES, env=warm_env)
    stdout, stderr = process.communicate(timeout=300)
    cold = folder.consult("ingest", "2019", RESPONSES, env=cold_env | {"CONSULT_WARM": "0"})

    assert (process.returncode, cold.returncode) == (0, 0), stderr + cold.stderr
    assert stdout == cold.stdout
    assert "19 accepted" in stdout
    assert table_counts(folder.root / "warm.db") == table_counts(folder.root / "cold.db")
    child = served_warm(folder, process.pid)
    assert child is not None and child != process.pid  # a child of the warm process ran it
    assert f"running `consult ingest 2019` for pid {process.pid}" in folder.log()
    assert "CONSULT_DATABASE_URL" not in folder.log() and "sqlite:///" not in folder.log()  # no environment
    assert warm_pid(folder) == warm  # and it keeps serving


def test_a_refused_command_exits_the_same_warm_and_cold_with_its_one_line_error(folder: Folder) -> None:
    warm_pid(folder)
    missing = str(folder.root / "missing.csv")
    process = folder.start("ingest", "2019", missing)
    stdout, stderr = process.communicate(timeout=300)
    cold = folder.consult("ingest", "2019", missing, env={"CONSULT_WARM": "0"})
    assert served_warm(folder, process.pid)
    assert (process.returncode, stderr) == (cold.returncode, cold.stderr) == (1, f"error: {missing}: file not found\n")
    assert stdout == cold.stdout


def test_ctrl_c_or_a_lost_launcher_stops_the_command_and_leaves_nothing_behind(folder: Folder) -> None:
    warm_pid(folder)
    env = folder.database_copy("interrupted")
    for how in (signal.SIGINT, signal.SIGKILL):
        process = folder.start("ingest", "2019", RESPONSES, env=env)
        assert wait_until(lambda: served_warm(folder, process.pid) is not None)  # noqa: B023
        child = served_warm(folder, process.pid)
        assert child is not None
        time.sleep(0.3)
        process.send_signal(how)
        process.communicate(timeout=60)
        assert process.returncode == (130 if how == signal.SIGINT else -signal.SIGKILL)
        assert wait_until(lambda: not alive(child), timeout=20)  # noqa: B023
    done = folder.consult("ingest", "2019", RESPONSES, env=env)  # nothing left held: the next one runs
    assert done.returncode == 0, done.stderr


def test_changed_code_makes_the_next_command_cold_and_the_warm_process_exit(folder: Folder) -> None:
    warm = warm_pid(folder)
    touched = REPO_ROOT / "tasks" / "__init__.py"
    os.utime(touched)  # as an edit or a `git pull` would
    process = folder.start("ingest", "not-a-year", RESPONSES)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "'not-a-year' is not a year" in stderr  # cold, same outcome
    assert served_warm(folder, process.pid) is None
    assert "code changed since the start (tasks/__init__.py)" in folder.log()
    assert wait_until(lambda: not alive(warm))
    assert not (folder.server / "warm.sock").exists()
    fresh = warm_pid(folder)  # `consult server start` starts a fresh one
    assert fresh != warm
    os.utime(touched)
    assert warm_pid(folder) not in (warm, fresh)  # and replaces one that finds its code changed


def test_other_prefect_settings_make_the_command_run_cold(folder: Folder) -> None:
    """Prefect reads its settings when it is imported: the warm process's would not be the command's."""
    warm_pid(folder)
    process = folder.start("ingest", "not-a-year", RESPONSES, env={"PREFECT_LOGGING_LEVEL": "DEBUG"})
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "'not-a-year' is not a year" in stderr
    assert served_warm(folder, process.pid) is None
    assert "settings read at import differ: PREFECT_LOGGING_LEVEL; it runs cold" in folder.log()
    assert "DEBUG" not in folder.log()  # names, never values


def test_server_stop_stops_the_warm_process(folder: Folder) -> None:
    warm = warm_pid(folder)
    status = folder.consult("server", "status")
    assert f"warm command process running (pid {warm})" in status.stdout
    stopped = folder.consult("server", "stop")
    assert stopped.returncode == 0
    assert stopped.stdout.splitlines()[-1] == f"stopped the warm command process (pid {warm})"
    assert not alive(warm) and not (folder.server / "warm.sock").exists()
    assert "warm command process not running" in folder.consult("server", "status").stdout


def test_a_stale_socket_is_removed_and_the_command_runs_cold(tmp_path: Path) -> None:
    folder = Folder(tmp_path)
    folder.server.mkdir(parents=True, mode=0o700)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(folder.server / "warm.sock"))  # bound, never listening again: a warm process that died
    process = folder.start("ingest", "not-a-year", RESPONSES)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 2 and "'not-a-year' is not a year" in stderr
    assert not (folder.server / "warm.sock").exists()
    assert "removed a stale socket" in folder.log()
