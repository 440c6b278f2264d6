"""Commands that only read or write the database do not import Prefect (about a second of start-up each time)
nor start a Prefect server: what operations staff run a dozen times a round answers in about a second."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES

# Runs each command of argv[1] (a JSON list of argument lists) in one fresh interpreter, as `consult` would,
# and prints which Prefect modules were imported after each.
PROBE = """
import json, sys
HEAVY = ("pandas", "great_expectations", "jinja2", "pydantic_settings", "sendgrid")
from consult.cli import app
seen = []
for args in json.loads(sys.argv[1]):
    try:
        code = app(args, standalone_mode=False)
    except SystemExit as stop:
        code = stop.code
    seen.append({"args": args, "code": code or 0,
                 "prefect": sorted(name for name in sys.modules if name == "prefect" or name.startswith("prefect.")),
                 "heavy": sorted(name for name in HEAVY if name in sys.modules)})
print(json.dumps(seen))
"""

DATABASE_ONLY = [
    ["db", "upgrade"],
    ["panel", "import", str(EXAMPLES / "panel.csv")],
    ["round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"), "--closes-on",
     "2019-06-30"],
    ["round", "participants", "2019", "--format", "limesurvey"],
    ["outbox", "2019"],
    ["reconcile", "2019"],
    ["quarantine", "list", "2019"],
    ["files", "list", "2019"],
    ["indicators", "2019"],
    ["round", "close", "2019"],
    ["server", "status"],
]


@pytest.mark.slow
def test_database_only_commands_do_not_import_prefect(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CONSULT_", "PREFECT_API"))}
    env |= {"CONSULT_DATA_DIR": str(tmp_path / "data"), "CONSULT_OUTPUT_DIR": str(tmp_path / "output")}
    result = subprocess.run([sys.executable, "-c", PROBE, json.dumps(DATABASE_ONLY)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert [entry["args"] for entry in seen] == DATABASE_ONLY
    # Each command did its work (status says "not running" with 3), and none imported Prefect.
    assert [entry["code"] for entry in seen] == [0] * (len(DATABASE_ONLY) - 1) + [3]
    assert [(entry["args"][:2], entry["prefect"]) for entry in seen] == [(args[:2], []) for args in DATABASE_ONLY]
    assert not (tmp_path / "data" / "prefect" / "server.pid").exists()  # and none started a server
    # Nor any other library that costs a tenth of a second or more to import and that their work does not need
    # (issue 15: under a second each); the indicators are computed with pandas.
    # (Modules stay imported in the one interpreter: each command is charged with those it added.)
    before: set[str] = set()
    added = []
    for entry in seen:
        added.append((entry["args"][:2], sorted(set(entry["heavy"]) - before)))
        before |= set(entry["heavy"])
    assert added == [(args[:2], ["pandas"] if args[0] == "indicators" else []) for args in DATABASE_ONLY]


def test_the_cli_module_itself_does_not_import_prefect() -> None:
    """`consult --help` and argument errors stay fast: importing the command line imports no flow."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", "import consult.cli"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line]
    assert "consult.cli_server" in imported  # the probe sees the command modules being imported
    assert not [name for name in imported if name.split(".")[0] in ("prefect", "flows", "tasks")]


def test_publish_without_stakeholders_imports_no_mail_code() -> None:
    """`consult publish` runs compute_and_publish; sending to stakeholders (outbox, mailers, SendGrid's library)
    is imported only with --send-to."""
    probe = ("import sys; from flows.publish import compute_and_publish; "
             "print(sorted(m for m in ('consult.mail.outbox', 'consult.publish_send', 'sendgrid') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    from flows.publish import publish_and_send_summary  # still importable from here, as before

    assert publish_and_send_summary.name == "publish-and-send-summary"


def test_the_consult_program_ends_without_teardown_yet_keeps_exit_codes_and_a_whole_database_file(tmp_path: Path):
    """`consult` skips the interpreter's teardown (consult.cli._end_without_teardown): exit codes stay what they
    were, and the database file alone holds every committed change (SQLite's log folded back into it), so that
    copying it is a whole backup."""
    consult = str(Path(sys.executable).with_name("consult"))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("CONSULT_", "PREFECT_API"))}
    env |= {"CONSULT_DATA_DIR": str(tmp_path / "data"), "CONSULT_OUTPUT_DIR": str(tmp_path / "output")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([consult, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
                              check=False)

    assert run("db", "upgrade").returncode == 0
    imported = run("panel", "import", str(EXAMPLES / "panel.csv"))
    assert imported.returncode == 0, imported.stderr
    assert not list((tmp_path / "data").glob("consult.db-wal"))
    backup = tmp_path / "backup.db"
    backup.write_bytes((tmp_path / "data" / "consult.db").read_bytes())
    import sqlite3

    with sqlite3.connect(backup) as connection:
        assert connection.execute("SELECT count(*) FROM partnerships").fetchone()[0] == 23
    refused = run("round", "close", "1999")
    assert (refused.returncode, refused.stderr.count("\n")) == (1, 1)
    assert run("no-such-command").returncode == 2


def test_the_consult_program_imports_only_the_standard_library_before_choosing_warm_or_cold() -> None:
    """The console script (consult/launcher.py) runs before every command: it decides whether the warm command
    process (consult/warm.py) runs a flow command, importing no more than os, sys, socket, json, signal, array."""
    probe = ("import sys; before = set(sys.modules); import consult.launcher; "
             "print(' '.join(sorted({name.split('.')[0] for name in set(sys.modules) - before})))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    allowed = {"consult", "json", "_json", "socket", "_socket", "select", "selectors", "math", "collections",
               "signal", "array"}  # the standard library's own dependencies of those named
    assert set(result.stdout.split()) <= allowed
