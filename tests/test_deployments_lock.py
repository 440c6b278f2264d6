"""The round's lock (`round-YEAR`, a Prefect global concurrency limit of one slot) and the task runner chosen
by settings."""

from __future__ import annotations

import threading

import pytest

from consult.runners import round_lock, task_runner
from consult.settings import Settings


def test_a_second_holder_of_the_same_round_waits_until_the_first_releases_it() -> None:
    """While one run holds round 2031, another run for 2031 cannot enter (it times out when told to wait at
    most one second), a run for 2032 enters at once, and 2031 is free again as soon as the first run
    leaves."""
    holding = threading.Event()
    release = threading.Event()

    def first_run() -> None:
        with round_lock(2031):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=first_run)
    thread.start()
    try:
        assert holding.wait(30)
        with pytest.raises(TimeoutError), round_lock(2031, timeout_seconds=1):
            pytest.fail("two runs held round 2031 at the same time")
        with round_lock(2032, timeout_seconds=5):
            pass
    finally:
        release.set()
        thread.join(30)
    with round_lock(2031, timeout_seconds=15):
        pass


def test_the_lock_is_a_global_concurrency_limit_named_after_the_round() -> None:
    """Operators see it in the UI under Concurrency as `round-YEAR` with one slot."""
    from prefect.client.orchestration import get_client

    with round_lock(2033):
        pass
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name("round-2033")
    assert (limit.limit, limit.active_slots) == (1, 0)


def test_the_task_runner_is_threads_by_default_and_dask_when_configured() -> None:
    """CONSULT_TASK_RUNNER=dask or a CONSULT_DASK_ADDRESS moves heavy stages to Dask without code changes."""
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    assert isinstance(task_runner(Settings(task_runner="threads")), ThreadPoolTaskRunner)
    assert isinstance(task_runner(Settings(task_runner="dask")), DaskTaskRunner)
    remote = task_runner(Settings(dask_address="tcp://10.0.0.5:8786"))
    assert isinstance(remote, DaskTaskRunner)
    assert remote.address == "tcp://10.0.0.5:8786"


def test_a_secret_block_fills_a_missing_variable_but_never_overrides_one_that_is_set() -> None:
    """`consult secrets` offers Prefect Secret blocks as an alternative to environment variables: a flow run
    takes the database URL from the `database-url` block when CONSULT_DATABASE_URL is not set, keeps the
    variable when it is, and reports only the names of what it took."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client

    from consult.runners import load_secret_blocks

    Secret(value="postgresql+psycopg://consult:s3cret@db.internal/consult").save(
        "database-url", overwrite=True
    )
    try:
        empty: dict[str, str] = {}
        assert "CONSULT_DATABASE_URL" in load_secret_blocks(empty)
        assert empty["CONSULT_DATABASE_URL"] == "postgresql+psycopg://consult:s3cret@db.internal/consult"
        preset = {"CONSULT_DATABASE_URL": "sqlite:///local.db"}
        assert "CONSULT_DATABASE_URL" not in load_secret_blocks(preset)
        assert preset["CONSULT_DATABASE_URL"] == "sqlite:///local.db"
    finally:
        with get_client(sync_client=True) as client:
            block = client.read_block_document_by_name("database-url", block_type_slug="secret")
            client.delete_block_document(block.id)
