"""`consult serve` (every deployment from one process, for a small team) and `consult secrets`."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import prefect_server as harness
import pytest
import yaml
from typer.testing import CliRunner

from consult.cli_serve import app
from consult.serve import PREFECT_YAML, load_deployment_specs, runner_deployments

pytestmark = pytest.mark.slow


def test_serve_offers_the_same_jobs_schedules_and_limits_as_prefect_yaml() -> None:
    """What `consult serve` registers is what `prefect deploy` registers: same names, parameters, cron
    schedules in Brussels time and one run at a time."""
    written = {entry["name"]: entry for entry in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    served = {deployment.name: deployment for deployment in runner_deployments(load_deployment_specs())}
    assert set(served) == set(written)
    for name, deployment in served.items():
        expected = [
            (item["cron"], item["timezone"], item.get("day_or", True))
            for item in written[name].get("schedules") or []
        ]
        actual = [
            (item.schedule.cron, item.schedule.timezone, item.schedule.day_or)
            for item in deployment.schedules
        ]
        assert actual == expected, name
        assert deployment.parameters == (written[name].get("parameters") or {}), name
        assert deployment.concurrency_limit == 1, name
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE", name


def test_consult_secrets_says_how_to_provide_each_secret_without_showing_any() -> None:
    """It names each variable and its Secret block, and the Prefect server's own database setting."""
    result = CliRunner().invoke(app, ["secrets"])
    assert result.exit_code == 0
    for needed in [
        "CONSULT_SENDGRID_API_KEY",
        "CONSULT_DATABASE_URL",
        "sendgrid-api-key",
        "'database-url'",
        "PREFECT_API_DATABASE_CONNECTION_URL",
        "getpass",
    ]:
        assert needed in result.output


@pytest.mark.prefect_server
def test_consult_serve_runs_a_triggered_job_from_one_process(tmp_path: Path) -> None:
    """With `consult serve` running against a Prefect server (started from another folder), the five
    deployments appear without any work pool, and a run triggered through the API is executed by the serving
    process."""
    server = harness.PrefectServer(home=Path(tempfile.mkdtemp(prefix="consult-serve-", dir=tmp_path))).start()
    try:
        env = harness.consult_environment(tmp_path)
        log = (tmp_path / "serve.log").open("wb")
        serving = subprocess.Popen(
            [sys.executable, "-c", "from consult.cli_serve import app; app(['serve'])"],
            env={**server.env, **env},
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        server.children.append(serving)
        from prefect.client.orchestration import get_client

        deadline = time.monotonic() + 120
        deployments = []
        while time.monotonic() < deadline and len(deployments) < 5:
            assert serving.poll() is None, (tmp_path / "serve.log").read_text()
            with harness.api_settings(server), get_client(sync_client=True) as client:
                deployments = client.read_deployments()
            time.sleep(1)
        assert sorted(deployment.name for deployment in deployments) == sorted(
            spec.name for spec in load_deployment_specs()
        )
        assert {deployment.work_pool_name for deployment in deployments} == {None}

        created = harness.trigger(server, "send-due-reminders/send-due-reminders", {}, {})
        finished = harness.wait_for(server, created.id, timeout=180)
        assert finished.state.is_completed(), (tmp_path / "serve.log").read_text()[-4000:]
    finally:
        server.stop()
