"""`consult panel contact show|update|deactivate|remove`: the operator's edits of one contact."""

from __future__ import annotations

from typing import Annotated

import typer

from consult.settings import get_settings
from db.engine import open_database, session_scope

app = typer.Typer(help="One contact of the panel: show, update, deactivate, remove.", no_args_is_help=True)

EmailArg = Annotated[str, typer.Argument(help="The contact's email address.", metavar="EMAIL")]
PartnershipOpt = Annotated[str | None, typer.Option("--partnership", help="Partnership id, when the address is a "
                                                    "contact of several.")]


def _session():  # type: ignore[no-untyped-def]
    return session_scope(open_database(get_settings().resolved_database_url))


@app.command("show")
def show(email: EmailArg, partnership: PartnershipOpt = None) -> None:
    """Print the contact: partnership, names, address, status and how many messages it has in the outbox."""
    from consult.contacts import describe_contact, find_contact

    with _session() as session:
        fields = describe_contact(session, find_contact(session, email, partnership=partnership))
    for key, value in fields.items():
        typer.echo(f"{key + ':':<15}{value}")


@app.command("update")
def update(
    email: EmailArg,
    partnership: PartnershipOpt = None,
    first_name: Annotated[str | None, typer.Option("--first-name")] = None,
    last_name: Annotated[str | None, typer.Option("--last-name")] = None,
    new_email: Annotated[str | None, typer.Option("--email", help="The new address.")] = None,
) -> None:
    """Correct a contact's names or address (checked as at import); messages not sent yet follow the address."""
    from consult.contacts import find_contact, update_contact

    with _session() as session:
        changed = update_contact(session, find_contact(session, email, partnership=partnership),
                                 first_name=first_name, last_name=last_name, email=new_email)
    typer.echo(f"contact {email}: " + (f"updated {', '.join(changed)}" if changed else "nothing changed"))


@app.command("deactivate")
def deactivate(email: EmailArg, partnership: PartnershipOpt = None) -> None:
    """Send this contact nothing more (planned messages are skipped); it stays in the panel and its history."""
    from consult.contacts import deactivate_contact, find_contact

    with _session() as session:
        deactivate_contact(session, find_contact(session, email, partnership=partnership))
    typer.echo(f"contact {email}: deactivated")


@app.command("remove")
def remove(email: EmailArg, partnership: PartnershipOpt = None) -> None:
    """Delete the contact and its unsent messages; messages already sent stay in the outbox, detached from it."""
    from consult.contacts import find_contact, remove_contact

    with _session() as session:
        kept = remove_contact(session, find_contact(session, email, partnership=partnership))
    typer.echo(f"contact {email}: removed ({kept} sent messages kept in the outbox)")
