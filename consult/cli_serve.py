"""`consult serve` and `consult secrets`: run the scheduled jobs on one machine, and say how to give them
secrets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)


@app.command("serve")
def serve(
    limit: Annotated[
        int | None, typer.Option(help="Most flow runs executing at once (default: no cap).", min=1)
    ] = None,
    prefect_file: Annotated[
        Path | None, typer.Option(help="Deployments to serve (default: deployments/prefect.yaml).")
    ] = None,
) -> None:
    """Serve every deployment of deployments/prefect.yaml from this process, on their schedules, until Ctrl-C.

    Runs go to the Prefect server of PREFECT_API_URL, else to the local one (`consult server start`, started
    here when it does not run); for several machines, use a work pool and `prefect worker start` instead
    (deployments/README.md).
    """
    from consult.cli_common import prefect_ready

    prefect_ready()
    from consult.serve import PREFECT_YAML, serve_all

    serve_all(limit=limit, path=prefect_file or PREFECT_YAML)


@app.command("secrets")
def secrets() -> None:
    """Print how to create the SendGrid key and database URL as environment variables or Prefect Secret
    blocks."""
    from consult.serve import secrets_instructions

    typer.echo(secrets_instructions())
