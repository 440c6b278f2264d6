"""The local Prefect server (`consult server start|status|stop`): one per data folder, started by the first flow
command that needs it and left running; every odd situation is one line and a working outcome, never a hang.

Each test starts real `prefect server start` processes in its own data folder and stops them at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from tests.conftest import EXAMPLES

CONSULT = str(Path(sys.executable).parent / "consult")

# On the worker of tests/test_warm_commands.py: its changed-code test marks a source file of the repository as
# edited, and a warm command process started here at that moment would exit (as it should) under these tests.
pytestmark = [pytest.mark.prefect_server, pytest.mark.slow, pytest.mark.xdist_group("warm-commands")]


def consult(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`consult ARGS` as a user runs it: no PREFECT_API_URL, no CONSULT_PREFECT, the data folder under cwd."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("CONSULT_", "PREFECT_API"))}
    base |= {"CONSULT_DATA_DIR": str(cwd / "data"), "CONSULT_OUTPUT_DIR": str(cwd / "output"),
             # Tests run in parallel: each folder's server prefers its own port rather than all racing for 4200.
             "CONSULT_PREFECT_PORT": str(PORTS.setdefault(cwd, free_port()))}
    if cwd in _own_cache:
        base["XDG_CACHE_HOME"] = str(_own_cache[cwd])
    return subprocess.run([CONSULT, *args], cwd=cwd, env=base | (env or {}), capture_output=True, text=True,
                          timeout=timeout, check=False)


PORTS: dict[Path, int] = {}
# For tests about the server alone: no warm command process (consult/warm.py), whose imports cost 4 CPU-s.
NO_WARM = {"CONSULT_WARM": "0"}
# Folders whose commands use a cache of their own instead of the session's (where the migrated template is).
_own_cache: dict[Path, Path] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def recorded(cwd: Path) -> dict:
    return json.loads((cwd / "data" / "prefect" / "server.json").read_text())


@pytest.fixture
def workdir(tmp_path: Path):
    """A data folder whose local server, if any test step started one, is stopped afterwards."""
    yield tmp_path
    for pid_file in tmp_path.glob("**/data/prefect/server.pid"):
        consult("server", "stop", cwd=pid_file.parent.parent.parent, timeout=60)
        try:  # belt and braces: never leave a server behind on a shared machine
            os.killpg(int(pid_file.read_text()), signal.SIGKILL)
        except (OSError, ValueError):
            pass


def artifact_keys(api_url: str) -> set[str]:
    found = httpx.post(f"{api_url}/artifacts/filter", json={"limit": 50}, timeout=10)
    found.raise_for_status()
    return {item["key"] for item in found.json() if item.get("key")}


def prefect_rows(database: Path, table: str, where: str = "1 = 1") -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as connection:
        return int(connection.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0])


def test_a_flow_command_starts_the_local_server_once_and_leaves_it_running_with_its_report(workdir):
    """The first ingest starts the server and says where its UI is; the report is on it; a second command
    reuses it silently; `status` and `stop` tell the truth. The first start on this machine (an empty cache)
    keeps its freshly migrated database as the template that a new data folder's server starts from."""
    cache = workdir / "cache"
    template = cache / "consult" / f"prefect-{version('prefect')}.db"
    workdir = workdir / "first"
    workdir.mkdir()
    _own_cache[workdir] = cache
    assert consult("db", "upgrade", cwd=workdir).returncode == 0
    assert consult("panel", "import", str(EXAMPLES / "panel.csv"), cwd=workdir).returncode == 0
    opened = consult("round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"),
                     "--closes-on", "2019-06-30", cwd=workdir)
    assert opened.returncode == 0, opened.stderr
    not_yet = consult("server", "status", cwd=workdir)
    assert not_yet.returncode == 3
    assert "not running" in not_yet.stdout

    first = consult("ingest", "2019", str(EXAMPLES / "responses-2019.csv"), cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    started = [line for line in first.stdout.splitlines() if "started the local Prefect server" in line]
    state = recorded(workdir)
    assert started == [f"started the local Prefect server: UI at {state['url']} (stop it with `consult server stop`)"]
    assert (workdir / "data" / "prefect" / "prefect.db").is_file()  # its database lives in the data folder
    assert "dq-2019" in artifact_keys(f"{state['url']}/api")

    running = consult("server", "status", cwd=workdir)
    assert running.returncode == 0
    assert f"running (pid {state['pid']}): UI at {state['url']}" in running.stdout
    again = consult("server", "start", cwd=workdir)
    assert f"already running (pid {state['pid']})" in again.stdout
    second = consult("publish", "2019", cwd=workdir)
    assert second.returncode == 0, second.stderr
    assert "started the local Prefect server" not in second.stdout
    assert "summary-2019" in artifact_keys(f"{state['url']}/api")

    stopped = consult("server", "stop", cwd=workdir)
    assert stopped.stdout.splitlines()[0] == f"stopped the local Prefect server (pid {state['pid']}) at {state['url']}"
    assert stopped.stdout.splitlines()[1].startswith("stopped the warm command process (pid ")  # consult/warm.py
    assert consult("server", "status", cwd=workdir).returncode == 3
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{state['url']}/api/health", timeout=3)

    # The template: migrated, without the runs made after it was taken.
    assert prefect_rows(template, "alembic_version") == 1
    assert prefect_rows(template, "flow_run") == 0 and prefect_rows(workdir / "data/prefect/prefect.db", "flow_run") > 0
    # A new data folder's server starts from it (the marker put in the template is in the new database).
    with contextlib.closing(sqlite3.connect(template)) as connection, connection:
        connection.execute("INSERT INTO configuration (key, value) VALUES ('test-marker', '{}')")
    second = workdir.parent / "second"
    second.mkdir()
    _own_cache[second] = cache
    # (no warm command process: this start is about the server's database only; CONSULT_WARM=0 saves its imports)
    assert consult("server", "start", cwd=second, env=NO_WARM).returncode == 0
    try:
        assert prefect_rows(second / "data/prefect/prefect.db", "configuration", "key = 'test-marker'") == 1
        # Started without registering Prefect's block types (a quarter of its start), it lists every one the template has.
        listed = httpx.post(f"{recorded(second)['url']}/api/block_types/filter", json={}, timeout=10).json()
        assert len(listed) == prefect_rows(template, "block_type") > 0
    finally:
        consult("server", "stop", cwd=second)


def test_a_server_that_died_is_reported_and_replaced_and_a_taken_port_is_avoided(workdir):
    """kill -9 leaves a stale pid file: status says so, start replaces the server, on a free port when the
    recorded one has been taken meanwhile by another program. (The server alone: CONSULT_WARM=0.)"""
    first = consult("server", "start", cwd=workdir, env=NO_WARM)
    assert first.returncode == 0, first.stderr
    state = recorded(workdir)
    os.killpg(state["pid"], signal.SIGKILL)
    time.sleep(0.5)
    died = consult("server", "status", cwd=workdir)
    assert died.returncode == 3
    assert f"pid {state['pid']} has died" in died.stdout

    with socket.socket() as squatter:  # another program takes the port meanwhile
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", state["port"]))
        squatter.listen()
        replaced = consult("server", "start", cwd=workdir, env=NO_WARM)
        assert replaced.returncode == 0, replaced.stderr
        new = recorded(workdir)
        assert replaced.stdout.splitlines()[:2] == [
            f"the local Prefect server (pid {state['pid']}) had died; removed its stale pid file",
            f"port {state['port']} is taken by another program; using port {new['port']}",
        ]
        assert new["port"] != state["port"] and new["pid"] != state["pid"]
        assert httpx.get(f"{new['url']}/api/health", timeout=5).status_code == 200

        refused = consult("server", "start", "--port", str(state["port"]), cwd=workdir, env=NO_WARM)
        assert refused.returncode == 1
        assert refused.stderr.strip() == (
            f"error: the local Prefect server already runs at {new['url']} (pid {new['pid']}): "
            f"`consult server stop` first to move it to port {state['port']}"
        )


def test_a_damaged_template_is_set_aside_and_the_server_migrates_as_usual(tmp_path, monkeypatch):
    from consult import local_prefect

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    template = local_prefect.database_template()
    assert template is not None
    template.parent.mkdir(parents=True)
    template.write_bytes(b"not a database" * 100)
    database = tmp_path / "prefect.db"
    assert local_prefect._seed_from_template(database) is False
    assert not database.exists() and not template.exists()


def test_without_a_home_folder_there_is_no_template_and_nothing_fails(tmp_path, monkeypatch):
    from consult import local_prefect

    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    def no_home(cls):  # what Path.home() does for an account without a home folder
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(local_prefect.Path, "home", classmethod(no_home))
    assert local_prefect.database_template() is None
    assert local_prefect._seed_from_template(tmp_path / "prefect.db") is False
    local_prefect._keep_as_template(tmp_path / "prefect.db")  # nothing to keep it in: returns quietly


def test_asking_for_a_taken_port_is_one_line(workdir):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        refused = consult("server", "start", "--port", str(port), cwd=workdir, timeout=30)
    assert refused.returncode == 1
    assert refused.stderr.strip() == (
        f"error: port {port} is already taken by another program: choose another with "
        "`consult server start --port N`, or leave --port out to take a free one"
    )
    assert not (workdir / "data" / "prefect" / "server.pid").exists()


def test_a_server_too_slow_to_start_is_stopped_and_reported_within_the_bound(workdir):
    """With a start-up bound far below what Prefect needs, start gives up in time, kills what it started and
    leaves no pid file behind."""
    began = time.monotonic()
    result = consult("server", "start", cwd=workdir, env={"CONSULT_PREFECT_START_TIMEOUT": "0.5"}, timeout=60)
    assert time.monotonic() - began < 40
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "did not answer within 0 s" in lines[0] or "exited during start-up" in lines[0]
    assert str(workdir / "data" / "prefect" / "server.log") in lines[0]
    assert not (workdir / "data" / "prefect" / "server.pid").exists()
    assert consult("server", "status", cwd=workdir).returncode == 3


def test_an_unreachable_prefect_api_url_fails_in_one_line_saying_what_to_do(workdir):
    assert consult("db", "upgrade", cwd=workdir).returncode == 0
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    began = time.monotonic()
    result = consult("ingest", "2019", str(EXAMPLES / "responses-2019.csv"), cwd=workdir,
                     env={"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}, timeout=60)
    assert time.monotonic() - began < 30
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: the Prefect server at PREFECT_API_URL=http://127.0.0.1:{port}/api does not answer: start it, or "
        "unset PREFECT_API_URL to use the local server (`consult server start`), or set CONSULT_PREFECT=ephemeral"
    )
    assert not (workdir / "data" / "prefect" / "server.pid").exists()  # no local server started behind its back


def test_two_commands_starting_the_server_at_once_get_the_same_one(workdir):
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CONSULT_", "PREFECT_API"))}
    env |= {"CONSULT_DATA_DIR": str(workdir / "data"), "CONSULT_PREFECT_PORT": str(free_port())}
    both = [subprocess.Popen([CONSULT, "server", "start"], cwd=workdir, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [process.communicate(timeout=300) for process in both]
    assert [process.returncode for process in both] == [0, 0], outputs
    state = recorded(workdir)
    said = sorted(stdout.splitlines()[0] for stdout, _ in outputs)
    assert said == [
        f"local Prefect server already running (pid {state['pid']}): UI at {state['url']}, API at {state['url']}/api",
        f"local Prefect server started (pid {state['pid']}): UI at {state['url']}, API at {state['url']}/api",
    ]
    # and the same warm command process (consult/warm.py), which both waited for
    warm = {stdout.splitlines()[1].split(":")[0] for stdout, _ in outputs}
    assert len(warm) == 1 and warm.pop().startswith("warm command process ready (pid "), outputs


def test_ephemeral_mode_leaves_the_server_to_prefect(tmp_path):
    """CONSULT_PREFECT=ephemeral: nothing is started, checked or exported; Prefect's temporary server runs."""
    from consult.local_prefect import ensure_prefect_api
    from consult.settings import Settings

    environ: dict[str, str] = {"PREFECT_API_URL": "http://127.0.0.1:9/api"}  # even one that would not answer
    assert ensure_prefect_api(Settings(data_dir=tmp_path / "data", prefect="ephemeral"), environ) is None
    assert environ == {"PREFECT_API_URL": "http://127.0.0.1:9/api"}
    assert not (tmp_path / "data").exists()
