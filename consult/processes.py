"""What Linux's /proc says about a process that `consult` started (the local Prefect server, the warm command
process): whether it still runs, and as what program. Standard library only: read before any flow is imported."""

from __future__ import annotations

import time
from pathlib import Path

# How long a command line may stay empty while its program starts (see command_line).
EXEC_SETTLE_SECONDS = 2.0


def command_line(pid: int, settle: float = EXEC_SETTLE_SECONDS) -> list[bytes] | None:
    """The arguments of process ``pid``; None when there is no such process or it has exited (a zombie).

    Right after ``subprocess.Popen`` returns, the child's command line reads empty: the kernel lets the parent go
    on before it has set up the new program's arguments (measured here: empty in 100 of 100 reads straight after
    Popen). Read then, a process just started by another command looked like no process of ours, and a second
    one was started beside it. An empty command line is read again until ``settle`` seconds have passed; kernel
    threads, whose command line stays empty, are not taken for ours after that."""
    deadline = time.monotonic() + settle
    while True:
        try:
            raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (OSError, IndexError):
            return None
        if state == "Z":
            return None
        if raw or time.monotonic() >= deadline:
            return raw.rstrip(b"\0").split(b"\0") if raw else []
        time.sleep(0.005)
