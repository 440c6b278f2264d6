"""`consult` in a real child process that starts warm: forked from a process that has already imported the
command line, its flows, Prefect, Great Expectations and pandas.

Tests run `consult ingest`, `publish`, `invite`... dozens of times. Each fresh interpreter spends 3-4 s importing
before it does anything; a fork of a warm process starts in milliseconds. The child is still a separate process
with its own working folder, environment, stdout, stderr and exit status (SIGKILL included), running the same
``consult.cli.main`` that the console script runs, so what a test asserts about a command is unchanged.

One warm process (the "zygote") per test session, started by the controlling pytest process
(``start_shared``, from pytest_configure) with its environment minus CONSULT_* (so that nothing of one test's
settings is imported into it); it listens on a Unix socket and, for each test process that connects, forks a
warm process of its own that serves that test process. (Imported once instead of once per xdist worker: ~5 s of
CPU each.) A test process without it (one not started under this conftest) runs commands cold. Prefect
reads its settings at import, so a command whose PREFECT_* environment differs from the zygote's, or a second
command while one is running, is started the usual way (``subprocess.Popen`` of the console script) instead.

Protocol (one JSON object per line): the test writes ``{"argv", "cwd", "env", "stdout", "stderr"}``; the zygote
forks, answers ``{"pid"}``, waits for the child and answers ``{"status"}`` (a negative number: killed by that
signal, as ``subprocess`` reports it).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
CONSULT = str(Path(sys.executable).with_name("consult"))
# What a flow command imports; importing them here is what the children are spared (with what `consult`'s own
# warm process imports, consult.warm.PRELOAD).
PRELOAD = ("consult.cli", "great_expectations")
# Where the session's zygote listens (set by start_shared for the test processes started after it).
SHARED_SOCKET_VARIABLE = "CONSULT_TEST_ZYGOTE_SOCKET"


def _prefect_environment(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key.startswith("PREFECT_")}


def _zygote_environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}


def _captured(out: Path, err: Path) -> tuple[str, str]:
    return out.read_text(encoding="utf-8", errors="replace"), err.read_text(encoding="utf-8", errors="replace")


class WarmProcess:
    """What tests use of ``subprocess.Popen``: pid, poll(), wait(timeout), kill(), returncode, and the
    command's captured output once it ended (``stdout``/``stderr`` as text)."""

    def __init__(self, zygote: _Zygote, pid: int, out: Path, err: Path) -> None:
        self._zygote, self.pid, self._out, self._err = zygote, pid, out, err
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.status(timeout=0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            status = self._zygote.status(timeout=timeout)
            if status is None:
                raise subprocess.TimeoutExpired(CONSULT, timeout or 0)
            self.returncode = status
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            os.kill(self.pid, 9)

    def output(self) -> tuple[str, str]:
        return _captured(self._out, self._err)


class _Zygote:
    """This test process's warm process: forked for it by the session's zygote, on the connection made here."""

    def __init__(self, socket_path: str) -> None:
        self.prefect_env = _prefect_environment(_zygote_environment())
        self.connection = _connect(socket_path)
        self._buffer = b""
        self.busy = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="consult-warm-"))
        self.count = 0
        self.ready = False
        self.closed = False

    def wait_until_ready(self) -> None:
        if not self.ready:
            answer = self._read_line(timeout=180)
            if answer != {"ready": True}:
                raise RuntimeError(f"the warm consult process did not start: {answer}")
            self.ready = True

    def _read_line(self, timeout: float | None) -> dict[str, Any] | None:
        """The zygote's next answer, or None when none came within ``timeout`` seconds (read from the socket,
        not through a buffered file, so that select() sees every answer not yet read)."""
        fd = self.connection.fileno()
        while b"\n" not in self._buffer:
            readable, _, _ = select.select([fd], [], [], timeout)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                self.closed = True
                raise RuntimeError("the warm consult process exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def start(self, argv: list[str], cwd: Path, env: dict[str, str]) -> WarmProcess:
        self.count += 1
        out, err = self.folder / f"{self.count}.out", self.folder / f"{self.count}.err"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)}
        self.connection.sendall(json.dumps(request).encode() + b"\n")
        answer = self._read_line(timeout=60)
        if not answer or "pid" not in answer:
            raise RuntimeError(f"the warm consult process did not fork: {answer}")
        return WarmProcess(self, answer["pid"], out, err)

    def status(self, timeout: float | None) -> int | None:
        answer = self._read_line(timeout)
        if answer is None:
            return None
        self.busy.release()
        return int(answer["status"])

    def stop(self) -> None:
        """Close the connection: its warm process reads the end of the stream and exits. The commands'
        captured output goes with it."""
        self.closed = True
        self.connection.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def _connect(path: str) -> socket.socket:
    """A connection to the session's zygote, which listens from its first moment (it may still be importing)."""
    deadline = time.monotonic() + 60
    while True:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.connect(path)
            return connection
        except OSError:
            connection.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


_zygote: _Zygote | None = None


def prestart() -> None:
    """Connect to the session's zygote now (its imports overlap the test process's start; the first command
    then finds its warm process ready). Without one (a test process not started under tests/conftest.py),
    commands run cold."""
    global _zygote
    socket_path = os.environ.get(SHARED_SOCKET_VARIABLE)
    if socket_path and (_zygote is None or _zygote.closed):
        _zygote = _Zygote(socket_path)
        atexit.register(_zygote.stop)


class _ColdProcess(subprocess.Popen):  # type: ignore[type-arg]
    """The fallback: the console script in a fresh interpreter, output captured to files like a warm one."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str]) -> None:
        folder = Path(tempfile.mkdtemp(prefix="consult-cold-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        self._out, self._err = folder / "out", folder / "err"
        with self._out.open("wb") as out, self._err.open("wb") as err:
            super().__init__([CONSULT, *argv], cwd=cwd, env=env, stdout=out, stderr=err)

    def output(self) -> tuple[str, str]:
        return _captured(self._out, self._err)


def start_consult(argv: list[str], *, cwd: Path, env: dict[str, str]) -> WarmProcess | _ColdProcess:
    """``consult ARGV`` in a child process with exactly ``env`` as its environment, started warm when it can."""
    prestart()
    zygote = _zygote
    if zygote is None or _prefect_environment(env) != zygote.prefect_env or not zygote.busy.acquire(blocking=False):
        return _ColdProcess(argv, cwd, env)
    try:
        zygote.wait_until_ready()
        return zygote.start(argv, cwd, env)
    except BaseException:
        zygote.busy.release()
        raise


def run_consult(argv: list[str], *, cwd: Path, env: dict[str, str],
                timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Like ``subprocess.run([consult, *argv], capture_output=True, text=True)``."""
    process = start_consult(argv, cwd=cwd, env=env)
    try:
        code = process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)
        raise
    stdout, stderr = process.output()
    return subprocess.CompletedProcess([CONSULT, *argv], code, stdout, stderr)


# --- the zygote ----------------------------------------------------------------------------------------------


def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `consult ARGV` in CWD with ENV, output to the given files, and exit with
    the command's status. An exception outside the command reaches _serve_connection: traceback, status 1."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = [CONSULT, *request["argv"]]
    from consult.cli import main

    code = 0
    try:
        main()
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    # As the interpreter would at exit (Prefect sends the run's last logs to the API in an atexit handler),
    # without tearing down every module the zygote imported, which costs a second per child.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _import_everything() -> None:
    import gc
    import importlib

    from consult.warm import PRELOAD as COMMAND_PRELOAD

    for module in (*PRELOAD, *COMMAND_PRELOAD):
        importlib.import_module(module)
    gc.collect()
    gc.freeze()  # what the zygote imported is never collected in a child: its pages stay shared, not copied


def _serve_socket(path: str) -> None:
    """The session's zygote: listen at once, import, then fork a zygote for each test process that connects."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    _import_everything()
    while True:
        connection, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            _serve_connection(connection)
            os._exit(0)
        connection.close()
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:  # the zygotes of test processes that have finished
                pass


def _serve_connection(connection: socket.socket) -> None:
    """A test process's warm process: fork a child per request line; answer its pid, then its exit status."""

    def answer(message: dict[str, Any]) -> None:
        connection.sendall(json.dumps(message).encode() + b"\n")

    answer({"ready": True})
    # A test process that exits without reading an answer (one that never ran a command leaves "ready" unread)
    # resets the connection: the end of its requests, as a close is.
    with connection, connection.makefile("rb") as requests, contextlib.suppress(ConnectionResetError):
        for line in requests:
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer({"pid": pid})
            _, status = os.waitpid(pid, 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            answer({"status": code})


def start_shared() -> tuple[subprocess.Popen[bytes], Path]:
    """Start the session's zygote (in the controlling pytest process); its socket's path is exported to the
    test processes started after it. Returns the process and its folder, for the caller to stop and remove."""
    folder = Path(tempfile.mkdtemp(prefix="consult-zygote-"))
    path = folder / "zygote.sock"
    process = subprocess.Popen([sys.executable, "-m", "tests.warm_consult", str(path)], cwd=REPO_ROOT,
                               env=_zygote_environment(), stdin=subprocess.DEVNULL, start_new_session=True)
    os.environ[SHARED_SOCKET_VARIABLE] = str(path)
    return process, folder


if __name__ == "__main__":
    _serve_socket(sys.argv[1])
