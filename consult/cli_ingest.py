"""`consult ingest YEAR FILE...` and `consult quarantine list|show|accept|reject YEAR ...`.

Registered by consult.cli: ``app``'s commands at the top level, ``quarantine_app`` as ``consult quarantine``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

from consult.cli_common import YearArg, foreground_prefect, prefect_ready
from consult.errors import ConsultError
from consult.settings import get_settings
from db.engine import open_database

app = typer.Typer(no_args_is_help=True)
quarantine_app = typer.Typer(help="Review quarantined rows: list, show, accept after a fix, reject.", no_args_is_help=True)
files_app = typer.Typer(help="Ingested files, kept byte for byte: list, show a row, export.", no_args_is_help=True)

RowArg = Annotated[int, typer.Argument(help="The quarantined row's id (see `consult quarantine list`).")]


def _engine() -> Engine:
    return open_database(get_settings().resolved_database_url)


@app.command("ingest")
def ingest(
    year: YearArg,
    files: Annotated[list[Path], typer.Argument(help="Survey exports: CSV, XLSX or JSON lines.")],
) -> None:
    """Ingest response files into a round: match, validate, store; quarantine what is invalid."""
    _engine()
    prefect_ready()
    from flows.ingest import ingest_responses
    foreground_prefect()

    summary = ingest_responses(year, [str(path) for path in files])
    for item in summary.files:
        if item.skipped_as_duplicate_file:
            typer.echo(f"{item.name}: already ingested, skipped")
            continue
        typer.echo(
            f"{item.name}: {item.rows} rows, {item.accepted} accepted, {item.superseded} superseded, "
            f"{item.partial} partial, {item.quarantined} quarantined, {item.warnings} with warnings"
            + (f" ({item.replaced_earlier} earlier responses superseded)" if item.replaced_earlier else "")
        )
    quarantined = summary.total("quarantined")
    if quarantined:
        typer.echo(f"review the {quarantined} quarantined row(s) with `consult quarantine list {year}`")


def _one_line(text: str, limit: int = 60) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@quarantine_app.command("list")
def quarantine_list(
    year: YearArg,
    status: Annotated[str, typer.Option(help="open, accepted, rejected or all.")] = "open",
) -> None:
    """List quarantined rows with the first reason of each."""
    from consult.ingest.review import list_quarantine
    from db.engine import session_scope

    if status not in ("open", "accepted", "rejected", "all"):
        raise ConsultError(f"--status {status}: expected open, accepted, rejected or all")
    with session_scope(_engine()) as session:
        entries = list_quarantine(session, year, status=None if status == "all" else status)
    if not entries:
        typer.echo(f"round {year}: no {'' if status == 'all' else status + ' '}quarantined row")
        return
    for entry in entries:
        first = entry.reasons[0]["message"] if entry.reasons else ""
        more = f" (+{len(entry.reasons) - 1} more)" if len(entry.reasons) > 1 else ""
        typer.echo(
            f"{entry.id:>6}  {entry.status:<8}  {_one_line(entry.file, 30)} row {entry.row_number}  "
            f"{entry.partnership or '-':<12}  {_one_line(first, 80)}{more}"
        )


@quarantine_app.command("show")
def quarantine_show(year: YearArg, row_id: RowArg) -> None:
    """Show a quarantined row: every reason and the raw cells as exported."""
    from consult.ingest.review import list_quarantine
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        entries = [entry for entry in list_quarantine(session, year, status=None) if entry.id == row_id]
    if not entries:
        raise ConsultError(f"round {year} has no quarantined row {row_id}: see `consult quarantine list {year}`")
    entry = entries[0]
    typer.echo(f"row {entry.row_number} of {entry.file}, partnership {entry.partnership or 'unknown'}, {entry.status}")
    for reason in entry.reasons:
        typer.echo(f"  {reason.get('severity', 'error')}: {reason.get('message')}  [{reason.get('expectation')}]")
    if entry.review_note:
        typer.echo(f"  note: {entry.review_note}")
    typer.echo("raw cells:")
    # JSON keeps control characters and formulas visible as text instead of acting on the terminal.
    for column, value in entry.raw.items():
        typer.echo(f"  {column}: {json.dumps(value, ensure_ascii=False)}")


def _parse_fixes(values: list[str]) -> dict[str, str]:
    fixes: dict[str, str] = {}
    for value in values:
        key, sep, cell = value.partition("=")
        if not sep or not key.strip():
            raise ConsultError(f"--set {value!r}: expected QUESTION=VALUE, e.g. --set agreements=3")
        fixes[key.strip()] = cell
    return fixes


@quarantine_app.command("accept")
def quarantine_accept(
    year: YearArg,
    row_id: RowArg,
    set_: Annotated[list[str] | None, typer.Option("--set", help="QUESTION=VALUE fix; repeatable.")] = None,
    partnership: Annotated[str | None, typer.Option(help="Assign the row to this partnership code.")] = None,
    note: Annotated[str | None, typer.Option(help="Why the row is accepted.")] = None,
) -> None:
    """Re-validate a quarantined row (after the given fixes) and store it as a response."""
    from consult.ingest.pipeline import accept_quarantined

    _engine()
    response = accept_quarantined(
        get_settings(), year, row_id, fixes=_parse_fixes(set_ or []), partnership_code=partnership, note=note
    )
    typer.echo(f"quarantined row {row_id} accepted as response {response.id} ({response.status})")


@quarantine_app.command("reject")
def quarantine_reject(
    year: YearArg,
    row_id: RowArg,
    note: Annotated[str | None, typer.Option(help="Why the row is rejected.")] = None,
) -> None:
    """Keep a quarantined row out of the results for good."""
    from consult.ingest.review import reject_quarantined
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        reject_quarantined(session, year, row_id, note=note)
    typer.echo(f"quarantined row {row_id} rejected")



FileArg = Annotated[int, typer.Argument(help="The ingested file's id (see `consult files list`).")]


@files_app.command("list")
def files_list(year: YearArg) -> None:
    """The files ingested into a round, with their SHA-256 and row counts."""
    from consult.ingest.review import list_files
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        files = list_files(session, year)
    if not files:
        typer.echo(f"no file ingested into round {year} yet")
    for item in files:
        kept = "" if item.kept else "  (bytes not kept: ingested before 0002)"
        # A submission of the response form is kept as a one-row file too, beside the survey exports.
        source = "response form" if item.layout == "form" else f"file, {item.layout or 'plain'}"
        if item.kept:
            kept = ("  (kept encrypted: no token in the clear)" if item.token_storage == "encrypted"
                    else "  (kept as received: tokens in the clear)")
        typer.echo(f"{item.id}  {item.name}  {item.row_count} rows  {item.size_bytes} bytes  "
                   f"sha256 {item.sha256[:16]}…  {item.ingested_at:%Y-%m-%d %H:%M}  [{source}]{kept}")


@files_app.command("show")
def files_show(
    year: YearArg,
    file_id: FileArg,
    row: Annotated[int, typer.Argument(help="Row number as a spreadsheet shows it (the header is row 1).")],
) -> None:
    """One row of an ingested file, cell by cell, exactly as exported."""
    from consult.ingest.store import file_row_cells
    from db.engine import session_scope

    with session_scope(_engine()) as session:
        cells = file_row_cells(session, year, file_id, row)
    typer.echo("token cells are shown as their SHA-256 (the file is kept encrypted under the token secret's key; "
               "`consult files export` gives it back as received)", err=True)
    # JSON keeps control characters and formulas visible as text instead of acting on the terminal.
    for column, value in cells.items():
        typer.echo(f"{column}: {json.dumps(value, ensure_ascii=False)}")


@files_app.command("export")
def files_export(
    year: YearArg,
    file_id: FileArg,
    to: Annotated[Path, typer.Option("--to", help="Folder to write the file into.")] = Path("."),
) -> None:
    """Write an ingested file back exactly as it was received (checked against its SHA-256)."""
    from sqlalchemy import select

    from consult.ingest.store import export_file
    from db.engine import session_scope
    from db.models import IngestedFile

    with session_scope(_engine()) as session:
        target = export_file(session, year, file_id, to)
        storage = session.scalar(select(IngestedFile.token_storage).where(IngestedFile.id == file_id))
    how = ("decrypted with the token secret's key" if storage == "encrypted" else "kept as received")
    typer.echo(f"wrote {target} ({how}; SHA-256 checked; it holds working response tokens: keep it private)")
