"""Settings are read as documented (README "Configuration"): CONSULT_<NAME> in any case, the environment before
a .env file in the working directory, list values as JSON, keyword arguments first; a bad value stops a command
with one line naming the variable and the value (never a secret's)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from consult.errors import ConsultError
from consult.settings import Settings, environment_values

FIELDS = Settings.model_fields


def test_environment_then_env_file_then_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("CONSULT_SMTP_PORT=2525\nCONSULT_MAIL_FROM='Team <team@example.org>'\nOTHER=1\n",
                        encoding="utf-8")
    values = environment_values(FIELDS, {"consult_smtp_port": "587", "CONSULT_UNKNOWN": "x"}, env_file)
    assert values == {"smtp_port": "587", "mail_from": "Team <team@example.org>"}


def test_a_list_is_read_as_json_and_a_bad_one_is_named(tmp_path: Path) -> None:
    absent = tmp_path / "no.env"
    assert environment_values(FIELDS, {"CONSULT_REMINDER_DAYS_BEFORE_CLOSE": "[7, 1]"}, absent) == {
        "reminder_days_before_close": [7, 1]}
    with pytest.raises(ConsultError, match=r"CONSULT_REMINDER_DAYS_BEFORE_CLOSE: '7,1' is not a JSON list"):
        environment_values(FIELDS, {"CONSULT_REMINDER_DAYS_BEFORE_CLOSE": "7,1"}, absent)


def test_keywords_win_over_the_environment_and_defaults_are_validated(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONSULT_SMTP_PORT", "2525")
    monkeypatch.chdir(tmp_path)
    assert Settings().smtp_port == 2525
    assert Settings(smtp_port=25).smtp_port == 25
    assert Settings().data_dir == tmp_path / "data"  # the default, made absolute like a given value


def _consult(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from consult.cli import main; main()", *args],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def test_a_bad_setting_is_one_line_naming_the_variable_and_never_a_secret(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    env |= {"CONSULT_DATA_DIR": str(tmp_path / "data"), "CONSULT_MAIL_BACKEND": "pigeon"}
    result = _consult(["outbox", "2019"], env, tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: CONSULT_MAIL_BACKEND: Input should be 'mailbox', 'smtp' or 'sendgrid' (got 'pigeon')"]
    env |= {"CONSULT_MAIL_BACKEND": "mailbox", "CONSULT_RESPONSE_URL_TEMPLATE": "https://survey.example/"}
    result = _consult(["outbox", "2019"], env, tmp_path)
    assert result.stderr.strip() == ("error: CONSULT_RESPONSE_URL_TEMPLATE: CONSULT_RESPONSE_URL_TEMPLATE must contain "
                                     "{token} (got 'https://survey.example/')")
