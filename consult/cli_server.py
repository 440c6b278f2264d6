"""`consult server start|status|stop`: the local Prefect server that flow commands report to (its UI shows the
data-quality reports and summaries). Registered by consult.cli; see consult/local_prefect.py."""

from __future__ import annotations

from typing import Annotated

import typer

from consult.settings import get_settings

app = typer.Typer(help="The local Prefect server (UI and API) that flow commands report to.", no_args_is_help=True)


@app.command("start")
def server_start(
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: the last one used, else 4200, "
                                             "else a free one).", min=1, max=65535)] = None,
) -> None:
    """Start the local Prefect server in the background (its database in CONSULT_DATA_DIR/prefect/), unless it
    runs already; it keeps running until `consult server stop`. Also the warm command process that flow
    commands start in (consult/warm.py; CONSULT_WARM=0: none)."""
    from consult import local_prefect

    result = local_prefect.start(get_settings(), port=port)
    for note in result.notes:
        typer.echo(note)
    verb = "started" if result.started else "already running"
    typer.echo(f"local Prefect server {verb} (pid {result.pid}): UI at {result.url}, API at {result.api_url}")
    warm_line = local_prefect.start_warm(get_settings(), result.api_url, wait=True)
    if warm_line:
        typer.echo(warm_line)


@app.command("status")
def server_status() -> None:
    """Say whether the local Prefect server runs, and where; exit 3 when it does not."""
    from consult import local_prefect

    settings = get_settings()
    current = local_prefect.status(settings)
    if current.running:
        typer.echo(f"local Prefect server running (pid {current.pid}): UI at {current.url}, API at {current.api_url}")
        typer.echo(local_prefect.warm_status_line(settings))
        return
    if current.alive:
        typer.echo(f"local Prefect server (pid {current.pid}) is starting or not answering at {current.url}; "
                   f"its log: {local_prefect.server_files(settings).log}")
    elif current.stale:
        typer.echo(f"local Prefect server not running: pid {current.pid} has died (stale pid file; "
                   "`consult server start` replaces it)")
    else:
        typer.echo("local Prefect server not running: `consult server start` starts it")
    typer.echo(local_prefect.warm_status_line(settings))
    raise typer.Exit(3)


@app.command("stop")
def server_stop() -> None:
    """Stop the local Prefect server (its database, runs and artifacts stay for the next start) and the warm
    command process."""
    from consult import local_prefect

    typer.echo(local_prefect.stop(get_settings()))
