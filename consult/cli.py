"""`consult`: the command line for operations staff.

Every failure prints one line naming the file, row or value and exits non-zero; a traceback only with
CONSULT_DEBUG=1.

Adding a command (here or in a consult/cli_*.py module): import flows (and anything that imports Prefect)
lazily, inside the command, after `prefect_ready()` (consult.cli_common): importing Prefect costs about a second,
and database-only commands must not pay it (tests/test_cli_imports.py checks this). `prefect_ready()` makes
sure a Prefect server answers, starting the local one (consult/local_prefect.py) when none does.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import os
import sys
from pathlib import Path
from typing import Annotated, Literal

import typer
from sqlalchemy import Engine

from consult.cli_common import YearArg, foreground_prefect, prefect_ready
from consult.errors import ConsultError, find_cause
from consult.settings import EXAMPLES_DIR, get_settings
from db.engine import open_database

app = typer.Typer(
    help="Run yearly consultations of a panel of partnerships: invite, remind, ingest, validate, publish.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
panel_app = typer.Typer(help="The panel of partnerships and contacts.", no_args_is_help=True)
round_app = typer.Typer(help="Yearly rounds: open, participants, close.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(panel_app, name="panel")
app.add_typer(round_app, name="round")



def _engine() -> Engine:
    return open_database(get_settings().resolved_database_url)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the schema to the latest version (safe to repeat)."""
    from db.engine import upgrade

    url = get_settings().resolved_database_url
    upgrade(url)
    typer.echo("database schema is up to date")


@panel_app.command("import")
def panel_import(file: Annotated[Path, typer.Argument(help="CSV, one row per contact.")]) -> None:
    """Import or update partnerships and contacts from a CSV file. Invalid rows stop the import unchanged."""
    from consult.panel import import_panel
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        report = import_panel(session, file)
    typer.echo(
        f"{file}: {report.partnerships_added} partnerships added, {report.partnerships_updated} updated, "
        f"{report.contacts_added} contacts added, {report.contacts_updated} contacts updated; "
        f"panel has {report.partnerships_total} partnerships"
        + (f"; attributes: {', '.join(report.attributes)}" if report.attributes else "")
    )


@panel_app.command("list")
def panel_list(
    out: Annotated[Path | None, typer.Option(help="Write the panel as CSV to this file.")] = None,
) -> None:
    """List the partnerships with their number of active contacts and every attribute of the panel."""
    import csv
    import io

    from consult.panel import panel_listing
    from consult.rounds import neutralise_cell
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        header, rows = panel_listing(session)
    if out is not None:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([[neutralise_cell(cell) for cell in row] for row in rows])
        out.write_text(buffer.getvalue(), encoding="utf-8")
        typer.echo(f"wrote {len(rows)} partnerships to {out}")
        return
    widths = [max([len(header[i])] + [len(row[i]) for row in rows]) for i in range(len(header))]
    for line in [header, *rows]:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())


@round_app.command("open")
def round_open(
    year: YearArg,
    questionnaire: Annotated[Path, typer.Option(help="Questionnaire YAML for this round.")],
    closes_on: Annotated[str | None, typer.Option(help="Closing date, YYYY-MM-DD.")] = None,
) -> None:
    """Open a round: store its questionnaire and give every partnership a response token."""
    from consult.rounds import open_round
    from db.engine import session_scope

    settings = get_settings()
    with session_scope(_engine()) as session:
        info = open_round(
            session,
            year=year,
            questionnaire_path=questionnaire,
            token_secret=settings.resolved_token_secret(),
            closes_on=_parse_date(closes_on, "--closes-on") if closes_on else None,
            reminder_days=settings.reminder_days_before_close,
            duration_days=settings.round_duration_days,
        )
    verb = "opened" if info.created else "already open"
    typer.echo(f"round {year} {verb}: {info.consulted} partnerships, closes on {info.closes_on.isoformat()}")


@round_app.command("participants")
def round_participants(
    year: YearArg,
    export_format: Annotated[Literal["limesurvey", "csv"], typer.Option("--format", help="Survey tool layout.")] = "csv",
    out: Annotated[Path | None, typer.Option(help="Write to this file instead of standard output.")] = None,
) -> None:
    """Export the participant list with response tokens for the survey tool."""
    from consult.rounds import participants_table
    from db.engine import session_scope

    settings = get_settings()
    with session_scope(_engine()) as session:
        table = participants_table(
            session,
            year=year,
            token_secret=settings.resolved_token_secret(),
            url_template=settings.resolved_response_url_template,
            export_format=export_format,
        )
    if out is None:
        typer.echo(table, nl=False)
    else:
        out.write_text(table, encoding="utf-8")
        typer.echo(f"wrote {table.count(chr(10)) - 1} participants to {out}")


@round_app.command("close")
def round_close(year: YearArg) -> None:
    """Close a round: no more reminders; responses still arriving are kept but flagged as late."""
    from consult.rounds import close_round
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        round_ = close_round(session, year)
        status = round_.status
    typer.echo(f"round {year} is {status}")


@app.command("demo")
def demo(
    out: Annotated[Path | None, typer.Option(help="Output folder (default: CONSULT_OUTPUT_DIR).")] = None,
) -> None:
    """Run the 2019 and 2020 reference ESCP-4i rounds end to end on the embedded defaults."""
    prefect_ready()
    from flows.demo import REFERENCE_ROUNDS, run_demo
    foreground_prefect()

    results = run_demo(EXAMPLES_DIR / "escp4i", out)
    settings = get_settings()
    typer.echo("")
    typer.echo(f"database:  {settings.resolved_database_url}")
    typer.echo(f"mailbox:   {settings.resolved_mailbox_dir.resolve()}  (Maildir: open with `mutt -f` or any mail client)")
    for year, paths in results.items():
        for label, path in paths.items():
            typer.echo(f"{year} {label + ':':<26} {path}")
    from consult.local_prefect import ui_url

    ui = ui_url(os.environ.get("PREFECT_API_URL", "")) if settings.prefect != "ephemeral" else None
    if ui:
        typer.echo(f"Prefect UI: {ui}/artifacts (summary-YEAR: the summaries; stop the server: `consult server stop`)")
        for year in REFERENCE_ROUNDS:
            typer.echo(f"data-quality report {year} in the Prefect UI: {ui}/artifacts/key/dq-{year}")
    else:
        typer.echo(
            "The Prefect artifacts (dq-YEAR, summary-YEAR) went to Prefect's temporary server, which stopped with the "
            "demo (CONSULT_PREFECT=ephemeral). To browse them in the UI, run the demo again without it: it starts "
            "the local Prefect server (`consult server start`) and prints the reports' addresses."
        )


def _parse_date(value: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise ConsultError(f"{option}: {value!r} is not a date in the form YYYY-MM-DD") from None


def _register_stage_commands() -> None:
    """Commands owned by each stage's module, merged into the top level."""
    from consult import cli_contacts, cli_form, cli_ingest, cli_mail, cli_publish, cli_serve, cli_server

    panel_app.add_typer(cli_contacts.app, name="contact")
    app.add_typer(cli_mail.app)
    app.add_typer(cli_ingest.app)
    app.add_typer(cli_ingest.quarantine_app, name="quarantine", help="Review quarantined rows.")
    app.add_typer(cli_ingest.files_app, name="files", help="Ingested files, kept byte for byte.")
    app.add_typer(cli_publish.app)
    app.add_typer(cli_serve.app)
    app.add_typer(cli_form.app, name="form")
    app.add_typer(cli_server.app, name="server")


_register_stage_commands()


def main() -> None:
    if Path(sys.argv[0]).name == "consult" and "coverage" not in sys.modules:
        end_without_teardown_at_exit()
    try:
        _main()
    except SystemExit as stop:
        _EXIT_CODE["code"] = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        raise
    except KeyboardInterrupt:
        _EXIT_CODE["code"] = 130
        raise
    except BaseException:
        _EXIT_CODE["code"] = 1
        raise


def _main() -> None:
    try:
        # Without standalone mode, click returns a command's `typer.Exit(code)` instead of exiting with it.
        code = app(standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except ConsultError as error:
        typer.echo(f"error: {error}", err=True)
        sys.exit(1)
    except (typer.Exit, SystemExit) as stop:
        code = stop.exit_code if isinstance(stop, typer.Exit) else stop.code
        sys.exit(code or 0)
    except Exception as error:  # noqa: BLE001 - the promise to users: one line, never a bare traceback
        if not _is_usage_error(error):
            _report_unexpected(error)
        error.show()  # type: ignore[attr-defined]  # click's own one-line usage message
        sys.exit(getattr(error, "exit_code", 2))


_EXIT_CODE = {"code": 0}
_TEARDOWN = {"registered": False}


def end_without_teardown_at_exit() -> None:
    """Register :func:`_end_without_teardown` once per process, before any flow is imported (the warm command
    process, consult/warm.py, registers it before its imports; its children then keep that order)."""
    if not _TEARDOWN["registered"]:
        atexit.register(_end_without_teardown)
        _TEARDOWN["registered"] = True


def _end_without_teardown() -> None:
    """End the `consult` process without tearing the interpreter down (an exit handler, see :func:`main`).

    After a flow, freeing the modules of Prefect, pandas and Great Expectations one by one took about a second
    of an ingest's six on this project's machine, for nothing: the process ends anyway. Exit handlers run
    last-registered first, so this one, registered before any flow is imported, runs after all the others
    (Prefect's, which send the flow run's last logs and events and wait for its threads); then logging is
    flushed and the process ends with the command's exit code. Transactions are committed or rolled back before
    that, and the database connections are closed here. Only for the `consult` program: not when a test calls :func:`main`, nor under coverage, whose own exit
    handler must run."""
    import logging

    engine_module = sys.modules.get("db.engine")
    if engine_module is not None:
        with contextlib.suppress(Exception):
            engine_module.dispose_engines()  # SQLite's write-ahead log folded back into the database file
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(_EXIT_CODE["code"])


def _is_usage_error(error: BaseException) -> bool:
    # Click's exceptions (vendored by typer) know how to print themselves as a short usage message.
    return type(error).__module__.endswith("click.exceptions") and hasattr(error, "show")


def _report_unexpected(error: BaseException) -> None:
    if isinstance(error, typer.Abort):
        typer.echo("aborted", err=True)
        sys.exit(130)
    if os.environ.get("CONSULT_DEBUG"):
        raise error
    cause = find_cause(error, ConsultError)
    if cause is not None:
        typer.echo(f"error: {cause}", err=True)
    else:
        first_line = (str(error).strip().splitlines() or [""])[0]
        typer.echo(f"error: {type(error).__name__}: {first_line} (set CONSULT_DEBUG=1 for details)", err=True)
    sys.exit(1)
