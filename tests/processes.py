"""Stopping what tests start in a process group of its own (servers, workers, the session's zygote)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM ``process``'s group (it leads one: start_new_session=True), SIGKILL if it has not ended after
    ``grace`` seconds; then reap it."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue
    raise RuntimeError(f"process {process.pid} did not end after SIGKILL")
