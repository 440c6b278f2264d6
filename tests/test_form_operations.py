"""Operations around the response form: the real `consult form serve` (uvicorn) never logs a token; form answers
show up beside file ingests in `consult files` and the data-quality report; reminders and `consult outbox` see a
form answer the moment it is stored."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from consult.cli import app as cli_app
from consult.form.app import create_app
from tests.conftest import EXAMPLES
from tests.test_form_http import ENGLISH, FRENCH, GOOD, csrf_of, post_answers, token_of

CONSULT = Path(sys.executable).parent / "consult"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_consult_form_serve_answers_on_uvicorn_and_never_logs_a_token(settings, round_2019, tmp_path):
    port = free_port()
    env = {**os.environ, "CONSULT_DEBUG": ""}
    server = subprocess.Popen([str(CONSULT), "form", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    token = token_of(settings, ENGLISH)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "consult form serve did not start"
                time.sleep(0.2)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, follow_redirects=True) as client:
            page = client.get(f"/r/{token}")
            assert page.status_code == 200 and "Submit my answers" in page.text
            sent = client.post(f"/r/{token}", data={**GOOD, "csrf_token": csrf_of(page.text)})
            assert sent.status_code == 200 and "Your answers were received" in sent.text  # after the redirect
            assert client.get(f"/r/{token[:-2]}xx").status_code == 404
            assert "server" not in {name.lower() for name in page.headers}
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "/r/…" in output  # requests are logged, with the token left out
    assert token not in output and token[:12] not in output and token[:-2] not in output


@pytest.fixture
def client(settings, round_2019) -> TestClient:
    return TestClient(create_app(settings))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.slow
def test_files_list_and_the_data_quality_report_show_form_answers_beside_files(client, settings, engine):
    token = token_of(settings, ENGLISH)
    assert post_answers(client, token, GOOD).status_code == 303
    assert post_answers(client, token_of(settings, FRENCH), {"markets": ["FR"]}, action="save").status_code == 303
    runner = CliRunner()
    ingested = runner.invoke(cli_app, ["ingest", "2019", str(EXAMPLES / "responses-2019.csv")], catch_exceptions=False)
    assert ingested.exit_code == 0, ingested.output

    listed = runner.invoke(cli_app, ["files", "list", "2019"], catch_exceptions=False).output.splitlines()
    form_lines = [line for line in listed if "[response form]" in line]
    assert len(form_lines) == 2 and all(f"form-{code}-" in " ".join(form_lines) for code in (ENGLISH, FRENCH))
    assert any("responses-2019.csv  22 rows" in line and "[file, plain]" in line for line in listed)
    assert token not in "\n".join(listed)

    # A form answer is kept as a one-row file: shown cell by cell like any export, without the token.
    file_id = form_lines[0].split()[0]
    shown = runner.invoke(cli_app, ["files", "show", "2019", file_id, "2"], catch_exceptions=False).output
    assert f'partnership_id: "{ENGLISH}"' in shown and 'markets: "US;JP"' in shown and token not in shown

    report = (settings.output_dir / "data-quality" / "dq-2019.md").read_text(encoding="utf-8")
    section = report.split("## Responses of round 2019 by source", 1)[1]
    # The form answer is dated now, after every row of the 2019 export: it stays accepted, the file's row for
    # that partnership is superseded; the French draft is partial.
    assert "| response form | form | 2 | 1 | 0 | 1 |" in section
    with engine.connect() as connection:
        file_counts = dict(connection.execute(text(
            "SELECT r.status, count(*) FROM responses r JOIN ingested_files f ON f.id = r.file_id "
            "WHERE f.name = 'responses-2019.csv' GROUP BY r.status")).all())
    expected = (f"| responses-2019.csv | plain | {sum(file_counts.values())} | {file_counts.get('accepted', 0)} "
                f"| {file_counts.get('superseded', 0)} | {file_counts.get('partial', 0)} |")
    assert expected in section


@pytest.mark.slow
def test_a_planned_reminder_is_skipped_once_the_partnership_answers_in_the_form(client, settings, engine):
    """Reminders planned before the answer: at sending time the form answer is seen, and `consult outbox` says so."""
    from consult.mail import outbox
    from flows.mailing import send_reminders

    today = dt.date(2019, 6, 1)
    sequence = (dt.date(2019, 6, 30) - today).days
    outbox.plan(engine, year=2019, kind="reminder", sequence=sequence)
    assert post_answers(client, token_of(settings, ENGLISH), GOOD).status_code == 303
    send_reminders(2019, force=True, today=today)
    with engine.connect() as connection:
        states = connection.execute(text(
            "SELECT p.code, o.state, o.error FROM outbox o JOIN partnerships p ON p.id = o.partnership_id "
            "WHERE o.kind = 'reminder'")).all()
    answered = {(state, error) for code, state, error in states if code == ENGLISH}
    assert answered == {("skipped", "partnership already answered")}
    assert any(code != ENGLISH and state == "sent" for code, state, _ in states)
    listing = CliRunner().invoke(cli_app, ["outbox", "2019"], catch_exceptions=False).output
    assert re.search(rf"{ENGLISH}\s+reminder\s+{sequence}\s+skipped .*partnership already answered", listing)
