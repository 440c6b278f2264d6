"""The warm command process: flow commands that start in milliseconds instead of seconds.

A flow command run in a fresh interpreter spends about 2 s importing Prefect, Great Expectations and pandas
before any work (issue 15). `consult server start` therefore also starts this process in the background (like
Gradle's daemon or dmypy): it imports the command line, the flows, Prefect, Great Expectations and pandas once,
then listens on ``CONSULT_DATA_DIR/prefect/warm.sock`` (folder 0700, socket 0600, connections from other users
refused). The `consult` program (consult/launcher.py) hands it a flow command with its stdin, stdout and stderr;
it forks, and the child becomes that command: working folder, environment, descriptors, ``consult.cli.main``,
the same exit as the cold command; the exit status goes back to the launcher. `consult server stop` stops it.

It refuses (and the command runs cold, with the same outcome) when it cannot stand in for a fresh interpreter:
the command's effective PREFECT_* settings (or locale, Python or numeric-library variables, read at import)
differ from its own, the data folder or interpreter differ, Prefect settings files in the working folder, or
code changed since it started (a ``.py`` of consult/, flows/, tasks/, db/, the installed packages or Prefect's
profiles): then it also exits, so that it never runs stale code. No thread runs in it when it forks.

Nothing at module level imports more than the standard library: consult/local_prefect.py uses :func:`spawn`,
:func:`stop` and :func:`status` before any flow is imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from consult import launcher
from consult.processes import command_line

# Read by libraries when they are imported (or by the interpreter when it starts), never again: a command whose
# values differ from the warm process's runs cold.
IMPORT_TIME_PREFIXES = ("PREFECT_", "PYTHON", "LC_", "GX_", "OPENBLAS_", "OMP_", "MKL_", "NUMEXPR_")
IMPORT_TIME_NAMES = frozenset({"LANG", "LANGUAGE", "HOME", "TZ"})
# What the warm process imports (what a flow command would import itself). The last five are what Prefect
# imports only when a flow first runs (its engines, FastAPI's encoder for the parameters, graphviz, anyio's
# asyncio backend): without them every command paid about 0.3 s of CPU importing them again after the fork.
PRELOAD = ("flows.ingest", "flows.publish", "flows.mailing", "flows.publish_send", "flows.demo", "pandas",
           "sqlalchemy.dialects.postgresql", "psycopg", "prefect.flow_engine", "prefect.task_engine",
           "fastapi.encoders", "prefect.utilities.visualization", "anyio._backends._asyncio")
# Where this engine's own code lives: a .py file changed here after the start makes the process exit.
CODE_PACKAGES = ("consult", "flows", "tasks", "db")
READY_TIMEOUT_SECONDS = 120.0
# A child whose launcher went away gets SIGTERM, then SIGKILL after this long.
KILL_GRACE_SECONDS = 5.0
_ENTRY = "import sys; del sys.path[0]; from consult.warm import main; main()"


@dataclass(frozen=True)
class WarmFiles:
    folder: Path  # the local server's folder, CONSULT_DATA_DIR/prefect

    @property
    def socket(self) -> Path:
        return self.folder / launcher.SOCKET_NAME

    @property
    def pid(self) -> Path:
        return self.folder / launcher.PID_NAME

    @property
    def log(self) -> Path:
        return self.folder / launcher.LOG_NAME


@dataclass(frozen=True)
class WarmStatus:
    pid: int | None
    running: bool  # answers on its socket
    alive: bool = False  # the recorded process exists (it may still be importing)
    api_url: str | None = None  # the Prefect API it imports Prefect with
    stale: bool = False  # code changed since it started: it is exiting


def import_time_environment(environ: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in environ.items()
            if key.startswith(IMPORT_TIME_PREFIXES) or key in IMPORT_TIME_NAMES}


def _recorded(files: WarmFiles) -> tuple[int | None, str | None]:
    """The pid file: the warm process's pid, then the Prefect API it was started for."""
    with contextlib.suppress(OSError, ValueError):
        lines = files.pid.read_text().splitlines()
        return int(lines[0]), (lines[1] if len(lines) > 1 else None)
    return None, None


def _is_warm_process(pid: int) -> bool:
    words = command_line(pid)
    return words is not None and any(b"consult.warm" in word for word in words)


def status(folder: Path) -> WarmStatus:
    pid, api_url = _recorded(WarmFiles(folder))
    answer = launcher.ping(str(folder))
    if answer and answer.get("ready"):
        return WarmStatus(pid=int(answer["pid"]), running=True, alive=True, api_url=answer.get("api_url"))
    if answer and answer.get("stale"):
        return WarmStatus(pid=int(answer["pid"]), running=False, alive=True, api_url=answer.get("api_url"),
                          stale=True)
    alive = pid is not None and _is_warm_process(pid)
    return WarmStatus(pid=pid, running=False, alive=alive, api_url=api_url if alive else None)


def spawn(folder: Path, api_url: str) -> int:
    """Start the warm process for the local server of ``folder`` (answering at ``api_url``) in the background;
    its environment is this process's without CONSULT_* (secrets stay out of it), with PREFECT_API_URL."""
    files = WarmFiles(folder)
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    env["PREFECT_API_URL"] = api_url
    with files.log.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, str(folder)], env=env, cwd=folder, stdin=subprocess.DEVNULL,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
        )
    files.pid.write_text(f"{process.pid}\n{api_url}\n")
    return process.pid


def wait_ready(folder: Path, pid: int, timeout: float = READY_TIMEOUT_SECONDS) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = launcher.ping(str(folder))
        if answer and answer.get("pid") == pid:
            return True
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # started here and exited (its log says why)
                return False
        except ChildProcessError:
            if not _is_warm_process(pid):
                return False
        time.sleep(0.1)
    return False


def stop(folder: Path, grace: float = 15.0) -> str | None:
    """Stop the warm process of ``folder`` if one runs; one line saying so, or None when there was none."""
    files = WarmFiles(folder)
    pid, _ = _recorded(files)
    said = None
    if pid is not None and _is_warm_process(pid):
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline and _is_warm_process(pid):
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
            if not _is_warm_process(pid):
                break
        said = f"stopped the warm command process (pid {pid})"
    files.pid.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        if files.socket.is_socket() and launcher.ping(str(folder), timeout=0.5) is None:
            files.socket.unlink()
    return said


# --- the warm process itself -------------------------------------------------------------------------------


def _log(line: str) -> None:
    sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} warm {os.getpid()}: {line}\n")
    sys.stderr.flush()


def main() -> None:
    started = time.time()  # before any import: a file changed while importing counts as changed
    own_environment = dict(os.environ)
    folder = Path(sys.argv[1])
    os.umask(0o077)
    try:
        server = _WarmServer(folder, started, own_environment)
    except Exception as error:  # noqa: BLE001 - one line in the log; commands run cold meanwhile
        _log(f"could not start: {type(error).__name__}: {error}")
        os._exit(1)
    server.serve()
    os._exit(0)


@dataclass
class _Running:
    pid: int
    connection: socket.socket | None
    pidfd: int
    kill_at: float | None = None


class _WarmServer:
    def __init__(self, folder: Path, started: float, own_environment: dict[str, str]) -> None:
        import importlib

        self.files = WarmFiles(folder)
        self.started = started
        self.own = import_time_environment(own_environment)
        import consult.cli

        # As the cold command registers it, before any flow is imported: Prefect's exit handlers run first.
        consult.cli.end_without_teardown_at_exit()
        from consult.ingest.gx_import import import_great_expectations

        import_great_expectations()
        for module in PRELOAD:
            importlib.import_module(module)
        import gc
        import threading

        self.code_folders = [Path(sys.modules[name].__file__).parent for name in CODE_PACKAGES]  # type: ignore[arg-type]
        self.site_folders = {Path(sys.modules["prefect"].__file__).parent.parent,  # type: ignore[arg-type]
                             Path(sys.modules["great_expectations"].__file__).parent.parent}  # type: ignore[arg-type]
        from prefect.settings import get_current_settings

        self.profiles = Path(get_current_settings().profiles_path)
        if threading.active_count() != 1:
            raise RuntimeError(f"threads running after the imports: {threading.enumerate()}")
        gc.collect()
        gc.freeze()  # what was imported here is never collected in a child: its pages stay shared
        self.selector = selectors.DefaultSelector()
        self.running: dict[int, _Running] = {}
        self.stopping: str | None = None
        self.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write)
        self.wake_write = wake_write
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.listener = self._listen()
        self.selector.register(self.listener, selectors.EVENT_READ, ("listen", None))
        self.selector.register(self.wake_read, selectors.EVENT_READ, ("wake", None))
        _log(f"ready in {time.time() - started:.1f} s: serving flow commands on {self.files.socket}")

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = self.stopping or signal.Signals(signum).name

    def _listen(self) -> socket.socket:
        """Listen on warm.sock (mode 0600 by the umask), replacing any earlier socket atomically."""
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Relative names: the process runs in the folder, and its absolute path may exceed sun_path's 108 bytes.
        temporary = f".{launcher.SOCKET_NAME}.{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        listener.bind(temporary)
        listener.listen(16)
        os.chmod(temporary, 0o600)
        os.rename(temporary, launcher.SOCKET_NAME)
        self.socket_inode = os.stat(launcher.SOCKET_NAME).st_ino
        return listener

    def serve(self) -> None:
        while True:
            if self.stopping and self.listener is not None:
                self._close_listener()
                for running in self.running.values():
                    if self.stopping.startswith("SIG"):  # `consult server stop`: the commands stop too
                        self._terminate(running)
            if self.stopping and not self.running:
                break
            for key, _ in self.selector.select(timeout=1.0):
                kind, pid = key.data
                if kind == "listen" and self.listener is not None:
                    self._accept()
                elif kind == "wake":
                    with contextlib.suppress(BlockingIOError):
                        os.read(self.wake_read, 512)
                elif kind == "exit":
                    self._reap(self.running[pid])
                elif kind == "launcher":
                    self._check_launcher(self.running[pid])
            now = time.monotonic()
            for running in list(self.running.values()):
                if running.kill_at is not None and now >= running.kill_at:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(running.pid, signal.SIGKILL)
                    running.kill_at = None
        _log(f"stopped ({self.stopping})")

    def _close_listener(self) -> None:
        assert self.listener is not None
        self.selector.unregister(self.listener)
        self.listener.close()
        self.listener = None  # type: ignore[assignment]
        with contextlib.suppress(OSError):
            if os.stat(launcher.SOCKET_NAME).st_ino == self.socket_inode:
                os.unlink(launcher.SOCKET_NAME)
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(Path(launcher.PID_NAME).read_text().split()[0]) == os.getpid():
                os.unlink(launcher.PID_NAME)

    def _terminate(self, running: _Running) -> None:
        if running.kill_at is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signal.SIGTERM)
            running.kill_at = time.monotonic() + KILL_GRACE_SECONDS

    def _accept(self) -> None:
        connection, _ = self.listener.accept()
        fds: list[int] = []
        try:
            connection.settimeout(5)
            import struct

            peer_pid, peer_uid, _ = struct.unpack(
                "3i", connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
            if peer_uid != os.getuid():
                _log(f"refused a connection from uid {peer_uid} (pid {peer_pid})")
                connection.close()
                return
            request, fds = self._read_request(connection)
            if request.get("kind") == "ping":
                changed = self._changed_code()
                self._answer(connection, {"ready": not changed, "stale": bool(changed), "pid": os.getpid(),
                                          "started": self.started, "api_url": self.own.get("PREFECT_API_URL")})
                connection.close()
                if changed:
                    _log(f"code changed since the start ({changed}): exiting")
                    self.stopping = "code changed since the start"
                return
            refusal = self._refusal(request, fds)
            command = " ".join(request["argv"][1:3])
            if refusal:
                _log(f"refused `consult {command}` from pid {peer_pid}: {refusal}; it runs cold")
                self._answer(connection, {"refused": refusal})
                connection.close()
                if refusal.startswith("code changed"):
                    self.stopping = "code changed since the start"
                return
            pid = self._fork(request, fds, connection)
            _log(f"running `consult {command}` for pid {peer_pid} as pid {pid}")
            self._answer(connection, {"pid": pid})
            running = _Running(pid=pid, connection=connection, pidfd=os.pidfd_open(pid))
            self.running[pid] = running
            self.selector.register(running.pidfd, selectors.EVENT_READ, ("exit", pid))
            self.selector.register(connection, selectors.EVENT_READ, ("launcher", pid))
        except Exception as error:  # noqa: BLE001 - a bad or broken request: the launcher runs it cold
            _log(f"dropped a request: {type(error).__name__}: {error}")
            connection.close()
        finally:
            for fd in fds:
                with contextlib.suppress(OSError):
                    os.close(fd)

    @staticmethod
    def _answer(connection: socket.socket, answer: dict) -> None:
        connection.sendall(json.dumps(answer).encode() + b"\n")

    @staticmethod
    def _read_request(connection: socket.socket) -> tuple[dict, list[int]]:
        header, fds, _, _ = socket.recv_fds(connection, launcher.HEADER_BYTES, 3)
        while len(header) < launcher.HEADER_BYTES:
            chunk = connection.recv(launcher.HEADER_BYTES - len(header))
            if not chunk:
                raise ConnectionError("the request ended in its header")
            header += chunk
        size = int(header)
        payload = bytearray()
        while len(payload) < size:
            chunk = connection.recv(min(size - len(payload), 1 << 20))
            if not chunk:
                raise ConnectionError("the request ended early")
            payload += chunk
        return json.loads(payload), list(fds)

    def _refusal(self, request: dict, fds: list[int]) -> str | None:
        """Why this process cannot stand in for a fresh interpreter running the command; None when it can."""
        changed = self._changed_code()
        if changed:
            return f"code changed since the start ({changed}); the warm process exits"
        if request.get("kind") != "run" or not isinstance(request.get("env"), dict) or len(fds) != 3:
            return "not a command with its three standard descriptors"
        if request.get("interpreter") != launcher.interpreter():
            return "another interpreter or other interpreter options"
        env: dict[str, str] = request["env"]
        cwd = Path(request["cwd"])
        from consult.settings import Settings, environment_values

        try:
            values = environment_values(Settings.model_fields, environ=env, env_file=cwd / ".env")
        except Exception:  # noqa: BLE001 - the cold command says what is wrong with the setting
            return "its settings do not read"
        if values.get("prefect", "local") != "local":
            return "CONSULT_PREFECT is not local"
        data_dir = cwd / Path(str(values.get("data_dir", "data"))).expanduser()
        if Path(os.path.realpath(data_dir)) != Path(os.path.realpath(self.files.folder.parent)):
            return "another data folder"
        wanted = import_time_environment(env)
        if "PREFECT_API_URL" not in wanted:
            # As ensure_prefect_api would: the local server's, which must be running (else the cold command
            # starts one, perhaps on another port, and a new warm process for it).
            if not self._local_server_alive():
                return "the local Prefect server is not running"
            with contextlib.suppress(OSError, ValueError, KeyError):
                wanted["PREFECT_API_URL"] = json.loads((self.files.folder / "server.json").read_text())["url"] + "/api"
        differing = sorted(key for key in wanted.keys() | self.own.keys() if wanted.get(key) != self.own.get(key))
        if differing:
            return f"settings read at import differ: {', '.join(differing)}"  # names only, never values
        if (cwd / "prefect.toml").exists() or _mentions(cwd / ".env", "PREFECT_") or _mentions(
                cwd / "pyproject.toml", "tool.prefect"):
            return "Prefect settings files in the working folder"
        return None

    def _local_server_alive(self) -> bool:
        try:
            pid = int((self.files.folder / "server.pid").read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        return True

    def _changed_code(self) -> str | None:
        for folder in self.code_folders:
            for root, dirs, names in os.walk(folder):
                dirs[:] = [name for name in dirs if name != "__pycache__"]
                for name in names:
                    if name.endswith(".py"):
                        path = os.path.join(root, name)
                        with contextlib.suppress(OSError):
                            if os.stat(path).st_mtime > self.started:
                                return os.path.relpath(path, folder.parent)
        for folder in self.site_folders:
            with contextlib.suppress(OSError):
                if folder.stat().st_mtime > self.started:
                    return f"installed packages in {folder}"
        with contextlib.suppress(OSError):
            if self.profiles.stat().st_mtime > self.started:
                return f"Prefect profiles {self.profiles}"
        return None

    def _fork(self, request: dict, fds: list[int], connection: socket.socket) -> int:
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:
            try:
                self._become_command(request, fds, connection)
            except BaseException:  # noqa: BLE001 - before the command ran: say why, on its stderr
                import traceback

                traceback.print_exc()
            os._exit(1)
        return pid

    def _become_command(self, request: dict, fds: list[int], connection: socket.socket) -> None:
        """In the child: become ``consult ARGV`` in CWD with ENV on the launcher's descriptors; never returns."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self.selector.close()
        for own in (connection, self.listener):
            own.close()
        for running in self.running.values():
            if running.connection is not None:
                running.connection.close()
            os.close(running.pidfd)
        os.close(self.wake_read)
        os.close(self.wake_write)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        for fd in fds:
            if fd > 2:
                os.close(fd)
        # As a fresh interpreter sets its standard streams up for these descriptors.
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        from consult import cli, settings
        from db import engine

        settings.get_settings.cache_clear()
        engine.get_engine.cache_clear()
        engine._ENGINES.clear()
        try:
            cli.main()
        except SystemExit:
            pass
        except BaseException:  # noqa: BLE001 - as the interpreter reports an uncaught exception
            sys.excepthook(*sys.exc_info())
        # The interpreter's exit: Prefect's handlers, then consult.cli._end_without_teardown (os._exit).
        import atexit

        atexit._run_exitfuncs()
        os._exit(cli._EXIT_CODE["code"])

    def _reap(self, running: _Running) -> None:
        _, status = os.waitpid(running.pid, 0)
        self.selector.unregister(running.pidfd)
        os.close(running.pidfd)
        del self.running[running.pid]
        _log(f"pid {running.pid} ended: {os.waitstatus_to_exitcode(status)}")
        if running.connection is not None:
            self.selector.unregister(running.connection)
            with contextlib.suppress(OSError):
                self._answer(running.connection, {"status": status})
            running.connection.close()

    def _check_launcher(self, running: _Running) -> None:
        """The launcher's connection is readable: it went away (it sends nothing after its request)."""
        assert running.connection is not None
        try:
            data = running.connection.recv(4096, socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            return  # nothing is expected: ignored
        self.selector.unregister(running.connection)
        running.connection.close()
        running.connection = None
        _log(f"the launcher of pid {running.pid} went away: stopping it")
        self._terminate(running)


def _mentions(path: Path, text: str) -> bool:
    try:
        return text in path.read_text(errors="replace")
    except OSError:
        return False


if __name__ == "__main__":
    main()
