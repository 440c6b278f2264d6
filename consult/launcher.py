"""The `consult` program: hands a flow command to the warm command process when one runs, else runs it here.

A flow command (ingest, invite, remind, thank, publish, demo) spends about 2 s of its 3-4 s importing Prefect,
Great Expectations and pandas and waiting for Prefect's exit. `consult server start` also starts a warm process
(consult/warm.py) that has imported them and listens on a Unix socket in the local server's folder
(``CONSULT_DATA_DIR/prefect/warm.sock``). This launcher connects to it and hands over the command: its
arguments, working folder, whole environment and its stdin, stdout and stderr themselves (SCM_RIGHTS); the warm
process forks a child that runs ``consult.cli.main`` exactly as this process would, and sends back its exit
status, which this process exits with (128+N when the child was killed by signal N, as a shell says).
SIGINT, SIGTERM and SIGHUP received here are passed on to the child.

Everything else runs here, cold, as before: database-only commands, CONSULT_WARM=0, CONSULT_PREFECT=ephemeral,
no warm process, a refusal (different PREFECT_* settings, code changed since it started: it never runs stale
code) or a hand-over that fails before the child started. A socket left by a warm process that died is removed.

Imports only os, sys, socket, json, signal and array (and time, imported at start-up anyway): this module runs before every command, database-only
ones included (issue 15).
"""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import sys
import time  # already imported by the interpreter's start-up: free

# The commands that run a Prefect flow: those worth handing to the warm process.
FLOW_COMMANDS = frozenset({"ingest", "invite", "remind", "thank", "publish", "demo"})
SOCKET_NAME = "warm.sock"
PID_NAME = "warm.pid"
LOG_NAME = "warm.log"
# The header before the request: its length in ASCII digits, sent with the three descriptors.
HEADER_BYTES = 12
# How long the warm process may take to accept the command (it checks its code and settings first).
HAND_OVER_TIMEOUT_SECONDS = 10.0
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main() -> int | None:
    code = run_warm(sys.argv) if wants_warm(sys.argv, os.environ) else None
    if code is not None:
        return code
    from consult.cli import main as run_cold

    return run_cold()


def wants_warm(argv: list[str], environ: os._Environ[str] | dict[str, str]) -> bool:
    return len(argv) > 1 and argv[1] in FLOW_COMMANDS and environ.get("CONSULT_WARM", "") != "0"


def consult_setting(name: str, environ: os._Environ[str] | dict[str, str], cwd: str) -> str | None:
    """``CONSULT_<NAME>`` as consult/settings.py reads it: the environment (any case) first, else ``.env`` in the
    working folder (simple ``KEY=VALUE`` lines; the warm process checks the result with the real reader)."""
    wanted = f"consult_{name}"
    found = None
    for key, value in environ.items():
        if key.lower() == wanted:
            found = value
    if found is not None:
        return found
    try:
        with open(os.path.join(cwd, ".env"), encoding="utf-8") as dotenv:
            lines = dotenv.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for line in lines:
        key, equals, value = line.strip().removeprefix("export ").partition("=")
        if equals and key.strip().lower() == wanted:
            found = value.strip().strip("'\"")
    return found


def server_folder(environ: os._Environ[str] | dict[str, str], cwd: str) -> str:
    """The local server's folder of the data folder this command would use (``CONSULT_DATA_DIR/prefect``)."""
    data_dir = consult_setting("data_dir", environ, cwd) or "data"
    return os.path.realpath(os.path.join(cwd, os.path.expanduser(data_dir), "prefect"))


def _private_folder(folder: str) -> bool:
    """Ours and closed to others: never hand the environment (secrets) to a socket someone else could own."""
    try:
        info = os.stat(folder)
    except OSError:
        return False
    return info.st_uid == os.getuid() and info.st_mode & 0o077 == 0


def log_line(folder: str, line: str) -> None:
    """One line in the warm log (never the environment)."""
    try:
        with open(os.path.join(folder, LOG_NAME), "a", encoding="utf-8") as log:
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} launcher {os.getpid()}: {line}\n")
    except OSError:
        pass


def connect(folder: str, timeout: float = HAND_OVER_TIMEOUT_SECONDS) -> socket.socket | None:
    """A connection to the warm process of ``folder``, or None (none runs; a stale socket is removed)."""
    path = os.path.join(folder, SOCKET_NAME)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(timeout)
    directory = None
    try:
        if len(path.encode()) > 100:  # beyond sun_path's 108 bytes: reach it through the folder's descriptor
            directory = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            client.connect(f"/proc/self/fd/{directory}/{SOCKET_NAME}")
        else:
            client.connect(path)
    except ConnectionRefusedError:
        client.close()
        try:
            if os.lstat(path).st_mode & 0o170000 == 0o140000:  # a socket nobody listens on: its process died
                os.unlink(path)
                log_line(folder, "removed a stale socket (no warm process listens on it); ran the command cold")
        except OSError:
            pass
        return None
    except OSError:
        client.close()
        return None
    finally:
        if directory is not None:
            os.close(directory)
    credentials = array.array("i", client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    if credentials[1] != os.getuid():  # (pid, uid, gid) of the listening process
        client.close()
        return None
    return client


def send_request(client: socket.socket, request: dict, fds: list[int]) -> None:
    payload = json.dumps(request).encode()
    socket.send_fds(client, [str(len(payload)).zfill(HEADER_BYTES).encode()], fds)
    client.sendall(payload)


class Answers:
    """The warm process's answers: one JSON object per line."""

    def __init__(self, client: socket.socket) -> None:
        self.client, self.buffer = client, b""

    def next(self) -> dict | None:
        """The next answer; None when the connection ended first."""
        while b"\n" not in self.buffer:
            chunk = self.client.recv(4096)
            if not chunk:
                return None
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)


def ping(folder: str, timeout: float = 2.0) -> dict | None:
    """What the warm process of ``folder`` says about itself (pid, start), or None when none answers."""
    client = connect(folder, timeout)
    if client is None:
        return None
    try:
        send_request(client, {"kind": "ping"}, [])
        return Answers(client).next()
    except (OSError, ValueError):
        return None
    finally:
        client.close()


def run_warm(argv: list[str]) -> int | None:
    """Run the command in the warm process: its exit status, or None to run it cold."""
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # the working folder was removed: the cold command says what that means
    folder = server_folder(os.environ, cwd)
    if consult_setting("prefect", os.environ, cwd) == "ephemeral" or not _private_folder(folder):
        return None
    try:
        for fd in (0, 1, 2):
            os.fstat(fd)  # a closed one would be taken by the connection's socket, then handed over as itself
    except OSError:
        return None
    child = {"pid": None}
    pending: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child["pid"] is None:
            pending.append(signum)
            return
        try:
            os.kill(child["pid"], signum)
        except OSError:
            pass

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        client = connect(folder)
        if client is None:
            return None
        with client:
            request = {"kind": "run", "argv": argv, "cwd": cwd, "env": dict(os.environ),
                       "interpreter": interpreter()}
            try:
                send_request(client, request, [0, 1, 2])
                answers = Answers(client)
                answer = answers.next()
            except (OSError, ValueError):
                return None  # before the child started: the command runs cold
            if not answer or "pid" not in answer:
                return None  # refused (the reason is in the warm log): cold
            child["pid"] = int(answer["pid"])
            for signum in pending:
                forward(signum, None)
            client.settimeout(None)
            try:
                answer = answers.next()
            except (OSError, ValueError):
                answer = None
            if not answer or "status" not in answer:
                _wait_gone(child["pid"])  # not before the command has finished writing to our output
                sys.stderr.write(f"error: the warm consult process stopped while running the command (pid "
                                 f"{child['pid']}): its outcome is unknown; see {os.path.join(folder, LOG_NAME)}\n")
                return 1
            code = os.waitstatus_to_exitcode(int(answer["status"]))
            return 128 - code if code < 0 else code
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if child["pid"] is None and pending:
            signal.raise_signal(pending[0])  # interrupted before anything started: as the cold command would be


def _wait_gone(pid: int) -> None:
    """Until ``pid`` (not our child: the warm process's) has ended."""
    while True:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
                if stat.read().rsplit(")", 1)[-1].split()[0] == "Z":
                    return
        except OSError:
            return
        time.sleep(0.1)


def interpreter() -> dict:
    """What must match for the warm process's interpreter to stand in for this one."""
    return {"executable": sys.executable, "flags": list(sys.flags), "warnoptions": sys.warnoptions,
            "xoptions": {key: str(value) for key, value in sys._xoptions.items()}}
