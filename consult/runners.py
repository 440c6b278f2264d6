"""How flows run: the task runner chosen by settings, and the per-round lock that keeps two runs for one
round from overlapping across deployments, workers and machines.

The task runner is a setting, not code: `CONSULT_TASK_RUNNER=dask` (optionally with `CONSULT_DASK_ADDRESS`
of an existing cluster) moves heavy stages onto Dask through prefect-dask; the default is a thread pool.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager

from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from consult.errors import ConsultError
from consult.mail.mailer import SENDGRID_SECRET_BLOCK
from consult.settings import Settings, get_settings

# Seconds a round's lock is leased for; renewed while the run is alive, released when the run's process dies,
# so that a crashed run never blocks the next one for longer than this.
ROUND_LOCK_LEASE_SECONDS = 300

# Prefect Secret blocks that may hold what would otherwise be environment variables (see `consult secrets`).
SECRET_BLOCKS = {
    "CONSULT_SENDGRID_API_KEY": SENDGRID_SECRET_BLOCK,
    "CONSULT_DATABASE_URL": "database-url",
}


def task_runner(settings: Settings | None = None) -> TaskRunner:  # type: ignore[type-arg]
    """ThreadPoolTaskRunner by default; DaskTaskRunner with CONSULT_TASK_RUNNER=dask or CONSULT_DASK_ADDRESS.

    With an address, tasks go to that cluster (`dask scheduler` + `dask worker` on other machines); without
    one, prefect-dask starts a temporary local cluster for the flow run.
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


def load_secret_blocks(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Export the Secret blocks that exist (see SECRET_BLOCKS) as environment variables for this flow-run
    process, unless the variable is already set; return the names of the variables set (never the values)."""
    from prefect.blocks.system import Secret
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    environ = os.environ if environ is None else environ
    loaded = []
    with get_client(sync_client=True) as client:
        for variable, block in SECRET_BLOCKS.items():
            if environ.get(variable):
                continue
            try:
                client.read_block_document_by_name(block, block_type_slug="secret", include_secrets=False)
            except ObjectNotFound:
                continue  # not set up this way: the setting keeps its default or fails with its own message
            environ[variable] = str(Secret.load(block).get())
            loaded.append(variable)
    if loaded:
        get_settings.cache_clear()  # settings were read before the secrets arrived
    return loaded
