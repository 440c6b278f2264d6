"""The `consult` command line: every command has --help; every failure is one line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import warm_consult
from tests.conftest import EXAMPLES

COMMANDS = [
    ["db", "upgrade"], ["panel", "import"], ["round", "open"], ["round", "participants"], ["round", "close"],
    ["invite"], ["ingest"], ["remind"], ["publish"], ["demo"], ["quarantine", "list"],
]


def consult(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    base |= {"CONSULT_DATA_DIR": str(cwd / "data"), "CONSULT_OUTPUT_DIR": str(cwd / "output")}
    return warm_consult.run_consult(list(args), cwd=cwd, env=base | (env or {}), timeout=120)


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help(command, tmp_path):
    result = consult(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_a_command_before_the_schema_exists_says_to_upgrade(tmp_path):
    line = one_line_error(consult("round", "close", "2019", cwd=tmp_path))
    assert "has no schema yet: run `consult db upgrade` first" in line


@pytest.mark.slow
def test_operations_staff_can_open_a_round_and_export_tokens(tmp_path):
    """The documented sequence works from the shell: upgrade, import, open, participants."""
    assert consult("db", "upgrade", cwd=tmp_path).returncode == 0
    imported = consult("panel", "import", str(EXAMPLES / "panel.csv"), cwd=tmp_path)
    assert "23 partnerships added" in imported.stdout, imported.stderr
    opened = consult("round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"),
                     "--closes-on", "2019-06-30", cwd=tmp_path)
    assert "round 2019 opened: 23 partnerships, closes on 2019-06-30" in opened.stdout, opened.stderr
    again = consult("round", "open", "2019", "--questionnaire", str(EXAMPLES / "questionnaire-2019.yaml"),
                    cwd=tmp_path)
    assert "round 2019 already open" in again.stdout
    exported = consult("round", "participants", "2019", "--format", "limesurvey", cwd=tmp_path)
    assert exported.stdout.splitlines()[0].startswith("firstname,lastname,email,token")
    assert len(exported.stdout.splitlines()) == len((EXAMPLES / "panel.csv").read_text().splitlines())
    line = one_line_error(consult("panel", "import", str(tmp_path / "missing.csv"), cwd=tmp_path))
    assert line == f"error: {tmp_path / 'missing.csv'}: panel file not found"
    line = one_line_error(consult("round", "open", "2020", "--questionnaire", "q.yaml", "--closes-on", "30/06",
                                  cwd=tmp_path))
    assert "--closes-on: '30/06' is not a date" in line


def test_a_bad_argument_is_a_usage_error_not_a_traceback(tmp_path):
    result = consult("round", "close", "next-year", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "next-year" in result.stderr


def test_an_unreachable_database_is_one_line(tmp_path):
    line = one_line_error(consult("db", "upgrade", cwd=tmp_path,
                                  env={"CONSULT_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}))
    assert line.startswith("error: cannot reach the database postgresql+psycopg://nobody@127.0.0.1:1/none")


def test_a_flow_command_runs_its_flows_without_heartbeats_for_its_whole_life():
    """A command's flow runs send no heartbeats (each run would wait up to a second for the heartbeat thread
    at its end), and the setting holds after garbage collection: a fresh interpreter, as a command has."""
    import sys

    show_heartbeats = (
        "from prefect.settings import get_current_settings; print(get_current_settings().flows.heartbeat_frequency)"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_FLOWS")}

    def heartbeat_frequency(before: str) -> str:
        shown = subprocess.run([sys.executable, "-c", before + show_heartbeats], env=env, capture_output=True,
                               text=True, check=True)
        return shown.stdout.strip()

    assert heartbeat_frequency("") != "None"  # Prefect's default: heartbeats on
    after = heartbeat_frequency("import gc; from consult.cli_common import foreground_prefect; "
                                "foreground_prefect(); gc.collect()\n")
    assert after == "None"
