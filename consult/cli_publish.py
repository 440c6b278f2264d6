"""`consult publish YEAR` and `consult indicators YEAR`: registered at the top level by consult.cli."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from consult.cli_common import YearArg, foreground_prefect, prefect_ready
from consult.settings import get_settings

app = typer.Typer(no_args_is_help=True)


@app.command("publish")
def publish(
    year: YearArg,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: CONSULT_OUTPUT_DIR); "
                                             "files go to OUT/YEAR/.")] = None,
    send_to: Annotated[Path | None, typer.Option(
        "--send-to", metavar="STAKEHOLDERS.csv",
        help="Then email the summary (narrative and key figures, summary HTML attached) to each address of this "
             "CSV file (columns: email,name) through the mailer (CONSULT_MAIL_BACKEND). Once per address and "
             "published content: a re-run sends nothing again; a re-publication with changed figures sends the "
             "new summary. The whole file is checked first: a bad row stops everything, nothing is sent.")] = None,
) -> None:
    """Compute the round's indicators and write its summary (HTML, Markdown) and indicator CSV under OUT/YEAR/;
    with --send-to, also email the summary to a stakeholder list."""
    from db.engine import get_engine, require_schema

    require_schema(get_engine(get_settings().resolved_database_url))
    if send_to is not None:
        from consult.publish_send import read_stakeholders

        read_stakeholders(send_to)  # a bad file is one clear error before anything is published or sent
    prefect_ready()
    if send_to is None:
        from flows.publish import compute_and_publish
        foreground_prefect()
        result = compute_and_publish(year, str(out) if out else None)
    else:
        from flows.publish_send import publish_and_send_summary
        foreground_prefect()
        result, mail_report = publish_and_send_summary(year, str(send_to), str(out) if out else None)
    for label, path in result.paths_by_label().items():
        typer.echo(f"{label + ':':<22} {path}")
    if send_to is not None:
        typer.echo(f"{'summary mail:':<22} {mail_report}")


@app.command("indicators")
def indicators(year: YearArg) -> None:
    """Print the round's indicators compared with the previous round (nothing is stored or written)."""
    from consult.indicators import TABLE_COLUMNS, compute_report
    from db.engine import get_engine, require_schema, session_scope

    engine = get_engine(get_settings().resolved_database_url)
    require_schema(engine)
    with session_scope(engine) as session:
        report = compute_report(session, year)
    columns = TABLE_COLUMNS[1:7] + ["rank", "rank_change", "comparison"]
    rows = [[_text(record[c]) for c in columns] for record in report.records()]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    typer.echo("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in rows:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def _text(value: object) -> str:
    from consult.indicators import format_number

    return value if isinstance(value, str) else format_number(value)
