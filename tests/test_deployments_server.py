"""The deployments on a real Prefect server: applied with `prefect deploy --all`, executed by a process
worker, triggered through the API, reporting through artifacts; two triggers for one round never overlap.

One server, one worker and one reference round run are shared by the whole test process
(tests/prefect_server.py).
"""

from __future__ import annotations

import mailbox
import tempfile
from collections import Counter
from pathlib import Path

import prefect_server as harness
import pytest
from sqlalchemy import func, select

from db.engine import get_engine, session_scope
from db.models import IngestedFile, Publication, Response, Round

# One xdist worker for every test of the deployed server: it and its reference round run are made once.
pytestmark = [pytest.mark.prefect_server, pytest.mark.slow, pytest.mark.xdist_group("deployed-server")]

EXAMPLES = harness.EXAMPLES
reference_figures = harness.reference_figures


@pytest.fixture(scope="module")
def server() -> harness.PrefectServer:
    return harness.deployed_server()


def test_prefect_deploy_applies_every_deployment_with_its_schedule_limit_and_pool(
    server: harness.PrefectServer,
) -> None:
    """After `prefect deploy --all`, the server holds the five deployments on the `consult` process pool,
    their schedules in Europe/Brussels, and one run at a time each."""
    from prefect.client.orchestration import get_client

    with harness.api_settings(server), get_client(sync_client=True) as client:
        found = {deployment.name: deployment for deployment in client.read_deployments()}
        pool = client.read_work_pool(harness.WORK_POOL)
    assert pool.type == "process"
    assert set(found) == {
        "open-yearly-round",
        "send-due-reminders",
        "ingest-drop-folder",
        "close-and-publish",
        "run-round",
    }
    for name, deployment in found.items():
        assert deployment.work_pool_name == harness.WORK_POOL, name
        assert (
            deployment.global_concurrency_limit is not None and deployment.global_concurrency_limit.limit == 1
        ), name
        assert deployment.concurrency_options is not None
        assert deployment.concurrency_options.collision_strategy == "ENQUEUE", name
        assert {schedule.schedule.timezone for schedule in deployment.schedules} <= {"Europe/Brussels"}, name
    assert [schedule.schedule.cron for schedule in found["open-yearly-round"].schedules] == ["0 8 1-7 2 1"]
    assert found["run-round"].schedules == []


def test_a_round_triggered_through_the_api_runs_on_the_worker_and_reports_in_artifacts(
    server: harness.PrefectServer,
) -> None:
    """The 2019 reference round, triggered with `run_deployment` and executed by the process worker,
    completes; its data-quality report (`dq-2019`) and its summary (`summary-2019`) can be read back through
    the API with the figures of the reference files; it used the database and folders given in the job
    variables."""
    run = harness.reference_round_run()
    assert run.flow_run.state.is_completed(), server.worker_log("worker-1")[-4000:]
    expected = reference_figures(2019)

    dq = harness.read_markdown_artifact(server, "dq-2019")
    assert dq is not None
    assert "responses-2019.csv" in dq
    assert f"{expected['rows']} rows" in dq
    assert f"{expected['accepted']} accepted" in dq
    for unknown in expected["unknown"]:  # type: ignore[attr-defined]
        assert unknown in dq

    summary = harness.read_markdown_artifact(server, "summary-2019")
    assert summary is not None
    assert f"{expected['accepted']} responses" in summary
    assert f"{expected['consulted']} partnerships" in summary
    assert f"({expected['top_market']}) | {expected['top_count']} |" in summary

    engine = get_engine(run.env["CONSULT_DATABASE_URL"])
    with session_scope(engine) as session:
        round_ = session.scalars(select(Round).where(Round.year == 2019)).one()
        assert round_.status != "open"
        publications = session.scalars(select(Publication).where(Publication.round_id == round_.id)).all()
    engine.dispose()
    assert publications
    published_dir = Path(run.env["CONSULT_OUTPUT_DIR"])
    assert any(path.is_file() for path in published_dir.rglob("*"))


def test_two_overlapping_triggers_for_one_round_run_one_after_the_other_and_do_everything_once(
    server: harness.PrefectServer,
) -> None:
    """Two runs of round 2020 triggered at the same moment: the second waits for the first to finish (it
    starts after the first ends), both complete, and each contact received one invitation, the file and each
    of its rows were stored once, and the published files exist once with one content."""
    root = Path(tempfile.mkdtemp(prefix="consult-overlap-", dir=server.home))
    env = harness.consult_environment(root)
    parameters = {
        "year": 2020,
        "questionnaire": str(EXAMPLES / "questionnaire-2020.yaml"),
        "response_files": [str(EXAMPLES / "responses-2020.csv")],
        "closes_on": "2020-06-30",
    }
    first = harness.trigger(server, "run-round/run-round", parameters, env)
    second = harness.trigger(server, "run-round/run-round", parameters, env)
    first_done = harness.wait_for(server, first.id)
    second_done = harness.wait_for(server, second.id)

    assert first_done.state.is_completed() and second_done.state.is_completed(), server.worker_log(
        "worker-1"
    )[-4000:]
    earlier, later = sorted([first_done, second_done], key=lambda run: run.start_time)
    assert later.start_time >= earlier.end_time

    expected = reference_figures(2020)
    messages = list(mailbox.Maildir(Path(env["CONSULT_DATA_DIR"]) / "mailbox", create=False))
    # Each message names its outbox row: a message sent twice would show the same row twice.
    outbox_rows = Counter(message["X-Consult-Outbox-Id"] for message in messages)
    assert set(outbox_rows.values()) == {1}
    invited = Counter(
        message["To"] for message in messages if "invitation" in message["X-Consult-Categories"]
    )
    assert len(invited) == expected["contacts"]
    assert set(invited.values()) == {1}

    engine = get_engine(env["CONSULT_DATABASE_URL"])
    with session_scope(engine) as session:
        files = session.scalar(select(func.count()).select_from(IngestedFile))
        responses = session.scalar(select(func.count()).select_from(Response))
        published = session.execute(select(Publication.content_sha256, Publication.files)).tuples().all()
    engine.dispose()
    assert files == 1
    # Publishing again rewrote the same files with the same content: one set of files, one content hash.
    assert len({content for content, _ in published}) == 1
    on_disk = sorted(
        path.name for path in (Path(env["CONSULT_OUTPUT_DIR"]) / "2020").iterdir() if path.is_file()
    )
    assert on_disk == sorted(published[0][1])
    # Every row of a known partnership is stored once (accepted, superseded or partial); unknown ones are
    # quarantined.
    assert responses == expected["rows"] - len(expected["unknown"])  # type: ignore[operator, arg-type]
