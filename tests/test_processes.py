"""A process that `consult` has just started is seen as running by the next command, from its first moment.

Right after ``subprocess.Popen`` returns, Linux shows the child's command line empty for a while. Two `consult
server start` at once: the second read it then, took the first's warm command process for none, and started
another one, which was never stopped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from consult import local_prefect, warm
from consult.processes import command_line

TRIES = 20  # the empty moment was seen in 100 of 100 tries on this machine: one would do, 20 leave no doubt


def _start(*words: str) -> subprocess.Popen[bytes]:
    """As consult starts its background processes: own session, no inherited descriptors, output to nowhere."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *words], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True)


@pytest.fixture
def started():
    processes: list[subprocess.Popen[bytes]] = []

    def start(*words: str) -> subprocess.Popen[bytes]:
        processes.append(_start(*words))
        return processes[-1]

    yield start
    for process in processes:
        process.kill()
        process.wait(timeout=10)


def test_a_warm_process_just_started_counts_as_alive_for_the_next_command(started, tmp_path: Path) -> None:
    folder = tmp_path / "prefect"
    folder.mkdir()
    api_url = "http://127.0.0.1:9/api"
    for _ in range(TRIES):
        process = started("consult.warm", str(folder))
        (folder / "warm.pid").write_text(f"{process.pid}\n{api_url}\n")  # as warm.spawn records it
        found = warm.status(folder)
        assert (found.pid, found.alive, found.running, found.api_url) == (process.pid, True, False, api_url)


def test_a_server_just_started_counts_as_alive_and_other_programs_do_not(started) -> None:
    for _ in range(TRIES):
        assert local_prefect._process_alive(started("prefect", "server", "start").pid)
        assert not local_prefect._process_alive(started("something-else").pid)


def test_an_exited_process_has_no_command_line(started) -> None:
    process = started("consult.warm")
    process.kill()
    process.wait(timeout=10)
    assert command_line(process.pid) is None
    zombie = subprocess.Popen([sys.executable, "-c", "pass", "consult.warm"])
    while Path(f"/proc/{zombie.pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
        time.sleep(0.01)  # until it has exited, not yet reaped: a zombie
    try:
        assert command_line(zombie.pid) is None
        assert not warm._is_warm_process(zombie.pid)
    finally:
        zombie.wait(timeout=10)
