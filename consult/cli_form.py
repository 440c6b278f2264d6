"""`consult form serve`: the response form behind every invitation's link."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(help="The response form partnerships answer in (the link in their emails).", no_args_is_help=True)


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on (behind a reverse proxy: 127.0.0.1).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)] = 8000,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies whose X-Forwarded-For/-Proto are trusted (the client address is what "
                               "failed lookups are limited by).")
    ] = "127.0.0.1",
) -> None:
    """Serve /r/TOKEN until Ctrl-C: the round's questionnaire for the partnership the token stands for."""
    import uvicorn

    from consult.form.app import create_app
    from consult.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(settings)
    link = settings.resolved_response_url_template.replace("{token}", "TOKEN")
    typer.echo(f"response form on http://{host}:{port}/r/TOKEN (links in emails: {link}); Ctrl-C stops it")
    # uvicorn's own access log prints each request's path, and a form's path is its response token: it stays
    # off, and the app logs requests with the token left out (consult.form.app).
    uvicorn.run(application, host=host, port=port, access_log=False, proxy_headers=True,
                forwarded_allow_ips=forwarded_allow_ips, server_header=False, log_level="info")
