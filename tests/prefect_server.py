"""A real Prefect server for tests: `prefect server start` on a free local port, its database in a temporary
folder, stopped at the end. Also starts process workers and runs the Prefect CLI against it.

Tests share one server (it takes ~9-15 s to start): see the module/session fixtures that use ``PrefectServer``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
PREFECT_BIN = Path(sys.executable).with_name("prefect")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _clean_environment() -> dict[str, str]:
    """The parent's environment without anything that would point a child at another server or database:
    the test harness's PREFECT_* values and a test's CONSULT_* values must not leak into the server or a worker."""
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
                "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
                "PREFECT_LOGGING_LEVEL": "INFO",
                "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
                # Workers poll every second instead of every 10 s, so that tests wait less.
                "PREFECT_WORKER_QUERY_SECONDS": "1",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
                "PREFECT_CLI_PROMPT": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self, timeout: float = 120) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        command = [str(PREFECT_BIN), "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        # Without the scheduler, deployments keep their schedules but no run is created behind the test's back.
        if not self.scheduler:
            command.append("--no-scheduler")
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 - fixed command line
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prefect server exited with {self.process.returncode}:\n{self.tail_log()}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"prefect server did not answer {self.api_url}/health within {timeout} s:\n{self.tail_log()}")

    def tail_log(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cli(self, *args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``prefect ARGS`` against this server; raise with its output when it fails."""
        result = subprocess.run(  # noqa: S603 - fixed command line
            [str(PREFECT_BIN), *args], env={**self.env, **(env or {})}, cwd=cwd, capture_output=True, text=True,
            timeout=timeout,
        )
        if result.returncode != 0:
            raise RuntimeError(f"prefect {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def start_worker(self, pool: str, *, name: str, env: dict[str, str] | None = None,
                     extra_args: Sequence[str] = ()) -> subprocess.Popen[bytes]:
        """A process worker in the background, as on a worker machine: ``prefect worker start --pool POOL``."""
        log = (self.home / f"worker-{name}.log").open("wb")
        worker = subprocess.Popen(  # noqa: S603 - fixed command line
            [str(PREFECT_BIN), "worker", "start", "--pool", pool, "--type", "process", "--name", name, *extra_args],
            env={**self.env, **(env or {})}, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
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
            os.killpg(child.pid, signal.SIGTERM)
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
                child.wait(timeout=10)
        self.children.clear()


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None
