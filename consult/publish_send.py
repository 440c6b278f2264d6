"""Sending the published summary to a stakeholder list: read the list, plan one outbox row per address, claim and
send each batch with the summary HTML attached.

Stakeholders are not panel contacts: their outbox rows have no partnership and no contact, carry the name given
in the list, and are unique on (round, ``summary``, sequence, address) (index ``ux_outbox_stakeholder``). Everything
else is the partnership mail's machinery: the same states, claiming, recording, lease expiry and webhook
reconciliation by outbox id.

The sequence is the id of the round's first publication with this content hash: re-publishing identical data
gives the same sequence (nobody gets the same summary twice), changed data a new one (everyone gets the new one).
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import html
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from jinja2 import TemplateNotFound
from markupsafe import Markup
from sqlalchemy import Connection, Engine, func, select

from consult.contacts import clean_email, clean_name, is_valid_email
from consult.errors import ConsultError
from consult.mail.mailer import Mailer
from consult.mail.message import Address, Attachment, Content, OutgoingBatch, Recipient, single_line
from consult.mail.outbox import BatchOutcome, ClaimedBatch, PlannedMail, _insert, _round_row, claim_rows
from consult.mail.render import EMAIL_TEMPLATES_DIR, _environment
from consult.mail.sending import send_claimed
from consult.publish import PublishResult, SummaryContext
from consult.settings import Settings
from consult.webhook import CONTACT_STATUS, UNDELIVERED_EVENTS
from db.models import DeliveryEvent, OutboxMessage, Publication, utcnow

KIND = "summary"
outbox = OutboxMessage.__table__
publications = Publication.__table__
events = DeliveryEvent.__table__
# The provider's events after which an address gets no more summaries, and those that lift that again: a
# delivery lifts a bounce or a drop, only a resubscription lifts an unsubscribe or a spam report.
SUPPRESSING_EVENTS = tuple(CONTACT_STATUS)
CLEARING_EVENTS = ("delivered", "group_resubscribe")

_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
GREETING = "%%greeting%%"
GREETING_HTML = "%%greeting:html%%"


@dataclass(frozen=True, slots=True)
class Stakeholder:
    email: str
    name: str


def read_stakeholders(path: Path) -> list[Stakeholder]:
    """The stakeholder list: a CSV file with the columns ``email`` and ``name`` (others are ignored).

    Every row is checked before anything is planned; the first bad one is one ConsultError naming the file and
    the row (rows numbered as a spreadsheet shows them: the header is row 1).
    """
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            columns = [str(column).strip().lower() for column in reader.fieldnames or []]
            missing = [column for column in ("email", "name") if column not in columns]
            if missing:
                raise ConsultError(f"{path}: missing column(s) {', '.join(missing)} (expected a header: email,name)")
            reader.fieldnames = columns
            stakeholders: list[Stakeholder] = []
            seen: dict[str, int] = {}
            for line, row in enumerate(reader, start=2):
                if None in row:
                    raise ConsultError(f"{path}, row {line}: more fields than columns in the header")
                email, name = (row.get("email") or "").strip(), (row.get("name") or "").strip()
                if not email and not name:
                    continue  # a blank line
                if _CONTROL.search(email) or _CONTROL.search(name):
                    raise ConsultError(f"{path}, row {line}: a line break or control character in email or name")
                name = clean_name(name, where=f"{path}, row {line}", column="name")  # encoded words, Cf characters
                if len(email) > 254 or not is_valid_email(email):  # the panel's check, within SendGrid's 254
                    raise ConsultError(f"{path}, row {line}: {email!r} is not an email address")
                email = clean_email(email, where=f"{path}, row {line}", column="email")
                if len(name) > 300:
                    raise ConsultError(f"{path}, row {line}: the name is longer than 300 characters")
                key = email.lower()
                if key in seen:
                    raise ConsultError(f"{path}, row {line}: {email} repeats row {seen[key]}")
                seen[key] = line
                stakeholders.append(Stakeholder(email=email, name=name))
    except FileNotFoundError:
        raise ConsultError(f"{path}: stakeholder file not found") from None
    except UnicodeDecodeError as error:
        raise ConsultError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise ConsultError(f"{path}: not a readable CSV file ({error})") from None
    if not stakeholders:
        raise ConsultError(f"{path}: no stakeholder in the file (expected rows of email,name)")
    return stakeholders


def summary_sequence(engine: Engine, *, year: int, content_sha256: str) -> int:
    """The id of the round's first publication of this content: the same for every re-publication of it."""
    round_id = _round_row(engine, year).id
    with engine.connect() as connection:
        first = connection.scalar(
            select(func.min(publications.c.id))
            .where(publications.c.round_id == round_id, publications.c.content_sha256 == content_sha256)
        )
    if first is None:
        raise ConsultError(f"round {year} has no publication with content {content_sha256[:12]}: publish it first")
    return int(first)


def plan_summary(engine: Engine, *, year: int, content_sha256: str, stakeholders: list[Stakeholder],
                 batch_size: int = 1000) -> PlannedMail:
    """A pending row for each stakeholder not planned yet for this content, and the keys of the batches that
    still have pending rows (this run's and those a dead run left behind)."""
    if not 1 <= batch_size <= 1000:
        raise ConsultError(f"batch size {batch_size}: SendGrid takes 1 to 1,000 recipients per request")
    sequence = summary_sequence(engine, year=year, content_sha256=content_sha256)
    round_id = _round_row(engine, year).id
    now = utcnow()
    run = uuid.uuid4().hex[:12]
    with engine.connect() as connection:
        suppressed = suppressed_addresses(connection, [person.email for person in stakeholders])
    mailed = [person for person in stakeholders if person.email.lower() not in suppressed]
    rows = [
        {"round_id": round_id, "partnership_id": None, "contact_id": None, "kind": KIND, "sequence": sequence,
         "state": "pending", "recipient": person.email, "recipient_name": person.name or None,
         "batch_key": f"{year}:{KIND}:{sequence}:{run}-{index // batch_size}", "attempts": 0, "error": None,
         "created_at": now, "updated_at": now}
        for index, person in enumerate(mailed)
    ] + [
        # Planned as skipped, with the reason, rather than left out: the report and `consult outbox` show them.
        {"round_id": round_id, "partnership_id": None, "contact_id": None, "kind": KIND, "sequence": sequence,
         "state": "skipped", "recipient": person.email, "recipient_name": person.name or None, "batch_key": None,
         "attempts": 0, "error": suppressed[person.email.lower()], "created_at": now, "updated_at": now}
        for person in stakeholders if person.email.lower() in suppressed
    ]
    with engine.begin() as connection:
        # ON CONFLICT DO NOTHING on ux_outbox_stakeholder: an address already planned for this content keeps its
        # row (and its state), so a re-run sends nothing twice.
        created = connection.execute(_insert(engine), rows).rowcount if rows else 0
        keys = connection.scalars(
            select(outbox.c.batch_key)
            .where(outbox.c.round_id == round_id, outbox.c.kind == KIND, outbox.c.sequence == sequence,
                   outbox.c.state == "pending", outbox.c.partnership_id.is_(None))
            .group_by(outbox.c.batch_key)
            .order_by(func.min(outbox.c.id))
        ).all()
    return PlannedMail(round_id, KIND, sequence, max(created, 0), [key for key in keys if key])


def suppressed_addresses(connection: Connection, addresses: Iterable[str]) -> dict[str, str]:
    """The addresses (lower case) that get no summary, each with the reason: those whose latest news from the
    provider is a bounce or a drop (unless a later message to them was delivered), an unsubscribe or a spam
    report (unless they resubscribed). Stakeholders have no contact row to carry that status, so the webhook's
    events are the record; without this, every new summary would go to an address known to be dead."""
    wanted = sorted({address.lower() for address in addresses})
    latest: dict[str, tuple[int, str, str | None]] = {}
    for chunk in _chunks(wanted):
        for email_address, name, timestamp, reason in connection.execute(
            select(func.lower(events.c.email), events.c.event, events.c.timestamp, events.c.reason)
            .where(events.c.event.in_(SUPPRESSING_EVENTS), func.lower(events.c.email).in_(chunk))
            .order_by(events.c.timestamp, events.c.id)
        ):
            latest[email_address] = (int(timestamp), name, reason)  # ordered by time: the last one stays
    cleared: dict[str, int] = {}
    for chunk in _chunks(sorted(latest)):
        for email_address, name, timestamp in connection.execute(
            select(func.lower(events.c.email), events.c.event, func.max(events.c.timestamp))
            .where(events.c.event.in_(CLEARING_EVENTS), func.lower(events.c.email).in_(chunk))
            .group_by(func.lower(events.c.email), events.c.event)
        ):
            if timestamp > latest[email_address][0] and (
                name == "group_resubscribe" or latest[email_address][1] in UNDELIVERED_EVENTS
            ):
                cleared[email_address] = int(timestamp)
    return {
        email_address: _suppression_reason(name, timestamp, reason)
        for email_address, (timestamp, name, reason) in latest.items() if email_address not in cleared
    }


def _chunks(values: list[str], size: int = 500) -> Iterable[list[str]]:
    """``values`` in slices of ``size``: below SQLite's limit on bound parameters in one ``IN``."""
    return (values[start:start + size] for start in range(0, len(values), size))


def _suppression_reason(event_name: str, timestamp: int, reason: str | None) -> str:
    when = dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()
    text = f"{CONTACT_STATUS[event_name]} on {when}"
    return f"{text}: {reason}" if reason else text


@dataclass(frozen=True, slots=True)
class SummaryMail:
    """The rendered email (placeholders for the greeting) and the file attached to it."""

    year: int
    content: Content
    attachment: Attachment


def render_summary_mail(context: SummaryContext, result: PublishResult, *, sender_name: str,
                        directory: Path = EMAIL_TEMPLATES_DIR) -> SummaryMail:
    """The email of ``templates/email/summary.{txt,html}.j2`` for the published round, with the summary HTML as
    written on disk (checked against the hash recorded at publication) attached."""
    data = result.html.read_bytes()
    if hashlib.sha256(data).hexdigest() != result.files.get(result.html.name):
        raise ConsultError(f"{result.html}: changed since it was published; publish the round again")
    environment = _environment(directory)
    values = {
        "s": context,
        "year": context.year,
        "sender_name": single_line(sender_name),
        "attachment_name": result.html.name,
    }
    try:
        text_module = environment.get_template("summary.txt.j2").make_module(values | {"greeting": GREETING})
        html_body = environment.get_template("summary.html.j2").render(
            values | {"greeting": Markup(GREETING_HTML)})
    except TemplateNotFound as missing:
        raise ConsultError(f"email template {directory / str(missing)} is missing") from None
    subject = single_line(str(getattr(text_module, "subject", "")))
    if not subject:
        raise ConsultError(f"email template {directory / 'summary.txt.j2'} sets no subject ({{% set subject %}}...)")
    return SummaryMail(
        year=context.year,
        content=Content(subject=subject, text=str(text_module), html=html_body),
        attachment=Attachment(filename=result.html.name, content_type="text/html", data=data),
    )


def greeting(name: str) -> str:
    return f"Dear {single_line(name)}," if name.strip() else "Hello,"


def claim_summary(engine: Engine, batch_key: str, mail: SummaryMail, *, mail_from: str) -> ClaimedBatch | None:
    """Take the batch's pending stakeholder rows for this run (``sending``, committed) and build the batch."""
    claimed_ids = claim_rows(engine, batch_key, stakeholders=True, kind=KIND)
    if not claimed_ids:
        return None
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.id, outbox.c.recipient, outbox.c.recipient_name)
            .where(outbox.c.batch_key == batch_key, outbox.c.state == "sending")
            .order_by(outbox.c.id)
        ).all()
    mine = set(claimed_ids)
    recipients = []
    for row in rows:
        if row.id not in mine:
            continue
        hello = greeting(row.recipient_name or "")
        recipients.append(Recipient(
            outbox_id=row.id, email=row.recipient, name=single_line(row.recipient_name or ""),
            substitutions={GREETING: hello, GREETING_HTML: html.escape(hello, quote=True)},
        ))
    batch = OutgoingBatch(
        batch_key=batch_key, kind=KIND, sender=Address.parse(mail_from), content=mail.content,
        categories=(f"consultation-{mail.year}", KIND), recipients=recipients, attachments=(mail.attachment,),
    )
    return ClaimedBatch(batch=batch, claimed_ids=claimed_ids)


def send_summary_batch(engine: Engine, settings: Settings, mailer: Mailer, batch_key: str,
                       mail: SummaryMail) -> BatchOutcome:
    """Send the pending stakeholder rows of ``batch_key`` (same failure contract as the partnership mail)."""
    claimed = claim_summary(engine, batch_key, mail, mail_from=settings.mail_from)
    if claimed is None:
        return BatchOutcome(batch_key=batch_key, claimed=0, sent=0, failed=0, unknown=0, released=0)
    return send_claimed(engine, mailer, claimed)


__all__ = [
    "KIND", "Stakeholder", "SummaryMail", "claim_summary", "greeting", "plan_summary", "read_stakeholders",
    "render_summary_mail", "send_summary_batch", "summary_sequence",
]
