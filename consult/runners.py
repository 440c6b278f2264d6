"""How flows run: the task runner chosen by settings, and the per-round lock that keeps two runs for one round
from overlapping across deployments, workers and machines.

The task runner is a setting, not code: `CONSULT_TASK_RUNNER=dask` (optionally with `CONSULT_DASK_ADDRESS` of an
existing cluster) moves heavy stages onto Dask through prefect-dask; the default is Prefect's thread pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from consult.errors import ConsultError
from consult.settings import Settings, get_settings

# Seconds a round's lock is leased for; renewed while the run is alive, released when the run's process dies,
# so that a crashed run never blocks the next one for longer than this.
ROUND_LOCK_LEASE_SECONDS = 300


def task_runner(settings: Settings | None = None) -> TaskRunner:  # type: ignore[type-arg]
    """ThreadPoolTaskRunner by default; DaskTaskRunner when CONSULT_TASK_RUNNER=dask or CONSULT_DASK_ADDRESS is set.

    With an address, tasks go to that cluster (`dask scheduler` + `dask worker` on other machines); without one,
    prefect-dask starts a temporary local cluster for the flow run.
    """
    settings = settings or get_settings()
    if settings.task_runner == "dask" or settings.dask_address:
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError as error:
            raise ConsultError(
                f"CONSULT_TASK_RUNNER=dask needs prefect-dask installed on every worker machine: {error}"
            ) from None
        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner()
    return ThreadPoolTaskRunner()


def round_lock_name(year: int) -> str:
    return f"round-{year}"


def ensure_round_limit(year: int) -> str:
    """Create the Prefect global concurrency limit ``round-YEAR`` (one slot) if it does not exist yet."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    name = round_lock_name(year)
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass  # another run created it between our read and our create: exactly what we wanted
    return name


@contextmanager
def round_lock(year: int, timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the round's single slot: a second run for the same round waits here (or times out with
    TimeoutError after ``timeout_seconds``), whichever deployment or worker it runs on."""
    from prefect.concurrency.sync import concurrency

    name = ensure_round_limit(year)
    with concurrency(
        name, occupy=1, timeout_seconds=timeout_seconds, lease_duration=ROUND_LOCK_LEASE_SECONDS, strict=True
    ):
        yield
