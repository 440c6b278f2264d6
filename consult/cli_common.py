"""Argument types shared by the `consult` command modules."""

from __future__ import annotations

from typing import Annotated

import typer


def parse_year(value: str) -> int:
    """A round's year; a bad value is named in the error ("'next-year' is not a year")."""
    if not value.strip().isdigit() or not 1900 <= int(value) <= 2999:
        raise typer.BadParameter(f"{value!r} is not a year between 1900 and 2999")
    return int(value)


YearArg = Annotated[int, typer.Argument(help="The round's year, e.g. 2019.", parser=parse_year, metavar="YEAR")]


def prefect_ready() -> None:
    """Before a command imports its flow: make sure a Prefect server answers (the local one is started and
    left running when none does), saying so in one line. See consult/local_prefect.py."""
    from consult.local_prefect import ensure_prefect_api
    from consult.settings import get_settings

    note = ensure_prefect_api(get_settings())
    if note:
        typer.echo(note)
