"""Mail commands, merged into the top level of `consult`: remind, thank, outbox, reconcile, webhook serve."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from sqlalchemy import Engine

from consult.cli_common import YearArg, foreground_prefect, prefect_ready
from consult.errors import ConsultError
from consult.settings import get_settings
from db.engine import open_database

app = typer.Typer(no_args_is_help=True)
webhook_app = typer.Typer(help="SendGrid Event Webhook receiver.", no_args_is_help=True)
app.add_typer(webhook_app, name="webhook")


def _engine() -> Engine:
    return open_database(get_settings().resolved_database_url)


@app.command("invite")
def invite(year: YearArg) -> None:
    """Send the round's invitations: each active contact of each partnership gets exactly one, with its
    partnership's own response link; a re-run sends only what is still missing."""
    _engine()
    prefect_ready()
    from flows.mailing import send_invitations
    foreground_prefect()

    report = send_invitations(year)
    typer.echo(f"invitations for {year}: {report}")
    _exit_on_problems(report)


@app.command("remind")
def remind(
    year: YearArg,
    force: Annotated[bool, typer.Option("--force", help="Send one now, whatever the round's schedule says.")] = False,
) -> None:
    """Send the reminder that is due by the round's schedule, or one now with --force; only contacts of
    partnerships that have not answered get it, and never twice."""
    _engine()
    prefect_ready()
    from flows.mailing import send_reminders
    foreground_prefect()

    report = send_reminders(year, force=force)
    if report.sequence is None:
        hint = "" if "anonymous round" in report.note else " (use --force to send one now)"
        typer.echo(f"reminders for {year}: {report.note or 'none due today'}{hint}")
    else:
        typer.echo(f"reminders for {year}: {report}")
    _exit_on_problems(report)


@app.command("thank")
def thank(year: YearArg) -> None:
    """Thank the contacts of every partnership whose answers were accepted (once each)."""
    _engine()
    prefect_ready()
    from flows.mailing import send_thank_yous
    foreground_prefect()

    report = send_thank_yous(year)
    typer.echo(f"thank-yous for {year}: {report}")
    _exit_on_problems(report)


def _exit_on_problems(report) -> None:  # type: ignore[no-untyped-def]
    if report.failed or report.unknown:
        typer.echo(
            f"{report.failed} failed and {report.unknown} of unknown fate: see `consult outbox {report.year} "
            "--problems`", err=True,
        )
        raise typer.Exit(2)


@app.command("outbox")
def outbox_status(
    year: YearArg,
    problems: Annotated[bool, typer.Option("--problems", help="List only failed, unknown and skipped messages.")] = False,
) -> None:
    """The outbox of a round: counts per kind and state, then one line per message (problems first), the
    stakeholders' copies of the published summary included."""
    from consult.mail import outbox

    engine = _engine()
    counts = outbox.count_states(engine, year=year)
    if not counts:
        typer.echo(f"the outbox of round {year} is empty: send invitations with `consult invite {year}`")
        return
    typer.echo(f"{'kind':<12} {'seq':>4}  " + "  ".join(f"{state:>8}" for state in outbox.STATES))
    for kind, sequence in sorted({(kind, sequence) for kind, sequence, _ in counts}):
        cells = "  ".join(f"{counts.get((kind, sequence, state), 0):>8}" for state in outbox.STATES)
        typer.echo(f"{kind:<12} {sequence:>4}  {cells}")
    rows = outbox.delivery_table(engine, year=year)
    if problems:
        rows = [row for row in rows if row["state"] in ("failed", "unknown", "skipped", "sending")]
    if rows:
        typer.echo("")
    for row in rows:
        # A row without a partnership is a stakeholder's copy of the published summary (`consult publish --send-to`).
        who = row["partnership"] or "(stakeholder)"
        typer.echo(f"{who:<14} {row['kind']:<10} {row['sequence']:>4} {row['state']:<8} "
                   f"{row['recipient']:<40} {row['reason']}")


@app.command("reconcile")
def reconcile(
    year: YearArg,
    stale_after: Annotated[int, typer.Option(
        help="Minutes after which a message still `sending` belongs to a dead run and becomes `unknown`.", min=0,
    )] = 15,
    release: Annotated[bool, typer.Option(
        "--release",
        help="Put messages still unknown back to pending (only once the provider's activity feed shows they "
             "were not sent).",
    )] = False,
) -> None:
    """Resolve messages of unknown fate from the delivery events received; never resends unless --release."""
    from consult.mail import outbox

    settings = get_settings()
    mailbox = None
    if settings.mail_backend == "mailbox":  # the Maildir knows for certain which messages it holds
        from consult.mail.mailbox_mailer import MailboxMailer

        mailbox = MailboxMailer(settings.resolved_mailbox_dir)
    result = outbox.reconcile(_engine(), year=year, stale_after=dt.timedelta(minutes=stale_after), release=release,
                              mailbox=mailbox)
    typer.echo(f"outbox {year}: {result}")
    if result.still_unknown:
        shown = ", ".join(str(i) for i in result.unknown_ids[:20])
        typer.echo(f"unknown outbox ids: {shown}{' ...' if result.still_unknown > 20 else ''}", err=True)
        raise typer.Exit(2)


@webhook_app.command("serve")
def webhook_serve(
    host: Annotated[str, typer.Option(help="Address to listen on (put HTTPS in front of it).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8025,
    timestamp_tolerance: Annotated[int, typer.Option(
        help="Seconds a signed post's timestamp may be away from this server's clock; older posts are refused "
             "as possible replays (403).", min=1,
    )] = 300,
) -> None:
    """Receive SendGrid's signed delivery events: bounces, drops and unsubscribes are recorded on contacts (a
    stakeholder's bounced or dropped summary mail on its outbox row)."""
    from consult.webhook import make_server

    settings = get_settings()
    if not settings.sendgrid_webhook_public_key:
        raise ConsultError(
            "CONSULT_SENDGRID_WEBHOOK_PUBLIC_KEY is not set: copy the verification key from SendGrid's "
            "Mail Settings > Event Webhook > Signed Event Webhook"
        )
    server = make_server(_engine(), settings.sendgrid_webhook_public_key, host=host, port=port,
                         tolerance=dt.timedelta(seconds=timestamp_tolerance))
    typer.echo(f"listening for SendGrid events on http://{host}:{port}/ (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
