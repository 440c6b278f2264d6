"""The outbox: one row per message, so that "each partnership gets exactly one" is a database fact.

Life of a row: ``pending`` (planned) -> ``sending`` (claimed by one run, committed *before* the provider is
called) -> ``sent`` | ``failed`` (refused for good, with the reason) | ``skipped`` (no longer eligible: answered,
contact bounced or unsubscribed, round closed). A run that dies after the provider accepted a batch but before
it recorded so leaves rows in ``sending``; once their lease has run out they become ``unknown`` and are
reconciled from webhook events (which carry the outbox id), never sent again blindly.

Claiming is one ``UPDATE ... WHERE state = 'pending' RETURNING id``: two concurrent runs never both get a row
(PostgreSQL re-checks the condition after waiting for the other's row lock; SQLite serialises writers).
Every transaction here starts with a write, so SQLite never has to upgrade a stale read snapshot.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from sqlalchemy import (
    DateTime,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    cast,
    exists,
    func,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from consult.errors import ConsultError
from consult.mail.message import Address, BatchResult, Content, OutgoingBatch, Recipient
from consult.tokens import check_round_fingerprint, derive_token, response_link
from db.models import (
    Contact,
    DeliveryEvent,
    OutboxMessage,
    Partnership,
    QuestionnaireVersion,
    Response,
    Round,
    RoundParticipant,
    utcnow,
)

KINDS_FOR_NON_RESPONDENTS = ("invitation", "reminder")
STATES = ("pending", "sending", "sent", "failed", "unknown", "skipped")
# A batch is handed to the provider within seconds; a row still `sending` after this long belongs to a dead run.
SENDING_LEASE = dt.timedelta(minutes=15)
# Webhook events that prove the provider took the message.
ACCEPTED_EVENTS = ("processed", "delivered", "deferred", "bounce", "open", "click", "spamreport", "unsubscribe",
                   "group_unsubscribe", "group_resubscribe")



class Mailbox(Protocol):
    """A backend that can say for certain which messages it holds (the Maildir)."""

    def written(self, rows: Sequence[tuple[int, str]]) -> dict[int, str]:
        """Of these (outbox id, batch key) pairs, the outbox ids whose message it holds, with its file name."""
        ...


outbox = OutboxMessage.__table__
contacts = Contact.__table__
partnerships = Partnership.__table__
participants = RoundParticipant.__table__
responses = Response.__table__
rounds = Round.__table__
events = DeliveryEvent.__table__


@dataclass(frozen=True)
class MailReport:
    """What the outbox holds for one round, kind and sequence after a run (the CLI prints it)."""

    year: int
    kind: str
    sequence: int | None
    planned: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    unknown: int = 0
    pending: int = 0
    sending: int = 0
    note: str = ""

    def __str__(self) -> str:
        if self.sequence is None:
            return self.note or "nothing due"
        text = (f"{self.planned} planned: {self.sent} sent, {self.skipped} skipped, {self.failed} failed, "
                f"{self.unknown} unknown")
        if self.pending or self.sending:
            text += f", {self.pending} pending, {self.sending} sending"
        return text + (f" ({self.note})" if self.note else "")


@dataclass(frozen=True)
class PlannedMail:
    round_id: int
    kind: str
    sequence: int
    created: int
    batch_keys: list[str]


@dataclass(frozen=True)
class ClaimedBatch:
    batch: OutgoingBatch
    claimed_ids: list[int]


@dataclass(frozen=True)
class BatchOutcome:
    batch_key: str
    claimed: int
    sent: int
    failed: int
    unknown: int
    released: int
    skipped: int = 0


def _insert(engine: Engine):  # type: ignore[no-untyped-def]
    """INSERT ... ON CONFLICT DO NOTHING on both databases."""
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(outbox).on_conflict_do_nothing()


def _round_row(engine: Engine, year: int):  # type: ignore[no-untyped-def]
    with engine.connect() as connection:
        row = connection.execute(
            select(rounds.c.id, rounds.c.status, rounds.c.closes_on, rounds.c.reminder_days).where(rounds.c.year == year)
        ).first()
    if row is None:
        raise ConsultError(f"round {year} does not exist: open it with `consult round open {year} --questionnaire FILE`")
    return row


def _answered():  # type: ignore[no-untyped-def]
    """SQL condition: the outbox row's partnership has an accepted response in its round."""
    return exists().where(
        responses.c.round_id == outbox.c.round_id,
        responses.c.partnership_id == outbox.c.partnership_id,
        responses.c.status == "accepted",
    )


def due_reminder(status: str, closes_on: dt.date, schedule: Sequence[int], today: dt.date, *, force: bool) -> int | None:
    """The sequence number of the reminder due ``today``: its number of days before closing, or None.

    The sequence is the number of days before ``closes_on`` the reminder belongs to, so a scheduled run that comes
    back the same day (or any day before the next reminder) finds it already planned and sends nothing new, and
    ``force`` on the day of a scheduled reminder is that same reminder. A forced reminder is
    ``(closes_on - today).days``; once the closing date has passed (the round still open) it is the one
    "last call" reminder, sequence -1, so that forcing again on a later day does not remind anyone twice.
    A closed round has none; the schedule has none after the closing date.
    """
    if status != "open":
        return None
    days_left = (closes_on - today).days
    if force:
        return max(days_left, -1)
    if days_left < 0:
        return None
    reached = [days for days in schedule if days >= days_left]
    return min(reached) if reached else None


ANONYMOUS_NO_REMINDERS = ("anonymous round (match_by: response_id): responses carry no partnership, so nobody "
                          "can be told apart as not having answered; no per-partnership reminders are sent")


def round_is_anonymous(engine: Engine, year: int) -> bool:
    """Whether the round's questionnaire matches responses by the survey tool's response id only."""
    from db.models import QuestionnaireVersion, Round

    with engine.connect() as connection:
        definition = connection.scalar(
            select(QuestionnaireVersion.definition)
            .join(Round, Round.questionnaire_version_id == QuestionnaireVersion.id)
            .where(Round.year == year)
        )
    return "response_id" in ((definition or {}).get("match_by") or [])


def reminder_sequence(engine: Engine, year: int, *, force: bool, today: dt.date) -> int | None:
    row = _round_row(engine, year)
    if round_is_anonymous(engine, year):
        return None
    return due_reminder(row.status, row.closes_on, list(row.reminder_days or []), today, force=force)


def plan(engine: Engine, *, year: int, kind: str, sequence: int, batch_size: int = 1000) -> PlannedMail:
    """Add a pending row for every eligible contact not planned yet, in batches of one language, and return
    the keys of every batch that still has pending rows."""
    if not 1 <= batch_size <= 1000:
        raise ConsultError(f"batch size {batch_size}: SendGrid takes 1 to 1,000 recipients per request")
    round_row = _round_row(engine, year)
    round_id = round_row.id
    now = utcnow()
    with engine.begin() as connection:
        if round_row.status != "open" and kind in KINDS_FOR_NON_RESPONDENTS:
            _skip_pending(connection, round_id, kind, sequence, "round closed")
            return PlannedMail(round_id, kind, sequence, 0, [])
        answered = exists().where(
            responses.c.round_id == round_id,
            responses.c.partnership_id == participants.c.partnership_id,
            responses.c.status == "accepted",
        )
        already = exists().where(
            outbox.c.round_id == round_id,
            outbox.c.partnership_id == participants.c.partnership_id,
            outbox.c.contact_id == contacts.c.id,
            outbox.c.kind == kind,
            outbox.c.sequence == sequence,
        )
        language = func.coalesce(partnerships.c.language, "en")
        # Batches of one language, numbered in order; the run token keeps keys of different plans apart.
        number = (func.row_number().over(partition_by=language, order_by=(participants.c.partnership_id,
                                                                         contacts.c.id)) - 1) // batch_size
        batch_key = (literal(f"{year}:{kind}:{sequence}:", String) + language
                     + literal(f":{uuid.uuid4().hex[:12]}-", String) + cast(number, String))
        eligible = (
            select(
                literal(round_id, Integer), participants.c.partnership_id, contacts.c.id, literal(kind, String),
                literal(sequence, Integer), literal("pending", String), contacts.c.email, batch_key,
                literal(0, Integer), literal(now, DateTime(timezone=True)), literal(now, DateTime(timezone=True)),
            )
            .join(contacts, contacts.c.partnership_id == participants.c.partnership_id)
            .join(partnerships, partnerships.c.id == participants.c.partnership_id)
            .where(participants.c.round_id == round_id, contacts.c.status == "active", ~already)
        )
        eligible = eligible.where(answered) if kind == "thank_you" else eligible.where(~answered)
        # INSERT ... SELECT: planning 100,000 rows never leaves the database. ON CONFLICT DO NOTHING: a planner
        # running at the same time may have inserted some of them first.
        created = connection.execute(_insert(engine).from_select(
            ["round_id", "partnership_id", "contact_id", "kind", "sequence", "state", "recipient", "batch_key",
             "attempts", "created_at", "updated_at"],
            eligible,
        )).rowcount
        keys = connection.scalars(
            select(outbox.c.batch_key)
            .where(outbox.c.round_id == round_id, outbox.c.kind == kind, outbox.c.sequence == sequence,
                   outbox.c.state == "pending")
            .group_by(outbox.c.batch_key)
            .order_by(func.min(outbox.c.id))
        ).all()
    return PlannedMail(round_id, kind, sequence, max(created, 0), [key for key in keys if key])


def _skip_pending(connection, round_id: int, kind: str, sequence: int, reason: str) -> int:  # type: ignore[no-untyped-def]
    return connection.execute(
        update(outbox)
        .where(outbox.c.round_id == round_id, outbox.c.kind == kind, outbox.c.sequence == sequence,
               outbox.c.state == "pending")
        .values(state="skipped", error=reason, updated_at=utcnow())
    ).rowcount


def claim_rows(engine: Engine, batch_key: str, *, stakeholders: bool = False, kind: str | None = None) -> list[int]:
    """Take the batch's pending rows for this run: one ``UPDATE ... SET state = 'sending' WHERE state =
    'pending' RETURNING id``, committed before the provider is called, so two runs never both get a row.

    ``stakeholders`` selects the rows without a partnership (the published summary, whose content
    ``consult.publish_send`` builds) instead of the contacts' rows; ``kind`` narrows to one kind. Contact rows are
    first re-checked for eligibility in the same transaction (round closed, partnership answered or not, contact
    bounced or unsubscribed) and the ineligible ones become ``skipped`` with the reason. Returns the claimed ids,
    sorted."""
    now = utcnow()
    audience = outbox.c.partnership_id.is_(None) if stakeholders else outbox.c.partnership_id.is_not(None)
    in_batch = and_(outbox.c.batch_key == batch_key, outbox.c.state == "pending", audience)
    if kind is not None:
        in_batch = and_(in_batch, outbox.c.kind == literal(kind))
    with engine.begin() as connection:
        if not stakeholders:
            _skip_ineligible(connection, in_batch, now)
        return sorted(connection.scalars(
            update(outbox).where(in_batch)
            # provider_message_id "": not handed to the provider yet (see MessageProgress and expire_sending).
            .values(state="sending", attempts=outbox.c.attempts + 1, updated_at=now, error=None,
                    provider_message_id="")
            .returning(outbox.c.id)
        ).all())


def _skip_ineligible(connection, in_batch, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
    """Contact rows of ``in_batch`` no longer eligible become ``skipped``, with the reason."""
    skip = update(outbox).values(state="skipped", updated_at=now)
    round_closed = exists().where(rounds.c.id == outbox.c.round_id, rounds.c.status != "open")
    for_non_respondents = outbox.c.kind.in_(KINDS_FOR_NON_RESPONDENTS)
    connection.execute(skip.where(in_batch, for_non_respondents, round_closed).values(error="round closed"))
    connection.execute(
        skip.where(in_batch, for_non_respondents, _answered()).values(error="partnership already answered")
    )
    connection.execute(
        skip.where(in_batch, outbox.c.kind == "thank_you", ~_answered()).values(error="no accepted response")
    )
    contact_status = select(contacts.c.status).where(contacts.c.id == outbox.c.contact_id).scalar_subquery()
    connection.execute(
        skip.where(in_batch, contact_status != "active").values(error=literal("contact ", String) + contact_status)
    )


def claim(engine: Engine, batch_key: str, *, mail_from: str, url_template: str,
          token_secret: bytes) -> ClaimedBatch | None:
    """Re-check eligibility, then take the batch's pending contact rows for this run (``sending``, committed)."""
    # Stakeholder rows (no partnership) are claimed by consult.publish_send, which knows their content.
    claimed_ids = claim_rows(engine, batch_key)
    if not claimed_ids:
        return None
    with engine.connect() as connection:
        rows = connection.execute(
            select(outbox.c.id, outbox.c.kind, outbox.c.recipient, contacts.c.first_name, contacts.c.last_name,
                   partnerships.c.code, partnerships.c.name, partnerships.c.attributes, partnerships.c.language,
                   rounds.c.year, rounds.c.closes_on, rounds.c.questionnaire_version_id, rounds.c.token_scheme,
                   rounds.c.token_fingerprint)
            .join(contacts, contacts.c.id == outbox.c.contact_id)
            .join(partnerships, partnerships.c.id == outbox.c.partnership_id)
            .join(rounds, rounds.c.id == outbox.c.round_id)
            # By batch rather than by a list of 1,000 ids (far cheaper on PostgreSQL); the ids filter below.
            .where(outbox.c.batch_key == batch_key, outbox.c.state == "sending")
            .order_by(outbox.c.id)
        ).all()
        mine = set(claimed_ids)
        rows = [row for row in rows if row.id in mine]
        title = connection.scalar(
            select(QuestionnaireVersion.title).where(QuestionnaireVersion.id == rows[0].questionnaire_version_id)
        )
    first = rows[0]
    try:
        check_round_fingerprint(first.year, first.token_fingerprint, token_secret)
    except ConsultError as error:
        # Nothing was handed over: the rows go back to pending for the run with the right secret.
        record(engine, ClaimedBatch(batch=OutgoingBatch(batch_key, first.kind, Address("x@x"), Content("", "", ""),
                                                        (), []), claimed_ids=claimed_ids),
               BatchResult(), reason=str(error))
        raise
    # Rendering (Jinja2) is imported here, not with the module: `consult outbox` only reads the table.
    from consult.mail.render import BatchContext, RecipientValues, recipient_substitutions, render_content

    sender = Address.parse(mail_from)
    content = render_content(first.kind, BatchContext(
        year=first.year, deadline=first.closes_on, consultation_title=title or "Consultation",
        sender_name=sender.name or sender.email, language=first.language or "en",
    ))
    recipients = []
    for row in rows:
        link = response_link(url_template, derive_token(token_secret, row.year, row.code, row.token_scheme))
        values = RecipientValues(
            first_name=row.first_name or "", last_name=row.last_name or "", email=row.recipient,
            partnership_name=row.name, partnership_acronym=(row.attributes or {}).get("acronym") or "", partnership_code=row.code, link=link,
        )
        recipients.append(Recipient(
            outbox_id=row.id, email=row.recipient, name=f"{row.first_name or ''} {row.last_name or ''}".strip(),
            substitutions=recipient_substitutions(content, values),
        ))
    batch = OutgoingBatch(
        batch_key=batch_key, kind=first.kind, sender=sender, content=content,
        categories=(f"consultation-{first.year}", first.kind), recipients=recipients,
    )
    return ClaimedBatch(batch=batch, claimed_ids=claimed_ids)


def record(engine: Engine, claimed: ClaimedBatch, result: BatchResult, *, ambiguous: Iterable[int] = (),
           reason: str = "") -> BatchOutcome:
    """Write what happened to a claimed batch, in one transaction. Rows neither accepted, refused nor ambiguous
    were certainly not taken by the provider and go back to ``pending`` for the next attempt."""
    now = utcnow()
    ambiguous_ids = set(ambiguous)
    settled = set(result.accepted) | set(result.rejected) | ambiguous_ids
    released = [outbox_id for outbox_id in claimed.claimed_ids if outbox_id not in settled]
    by_message_id: dict[str | None, list[int]] = {}
    for outbox_id, message_id in result.accepted.items():
        by_message_id.setdefault(message_id, []).append(outbox_id)
    sending = and_(outbox.c.id.in_(bindparam("ids", expanding=True)), outbox.c.state == "sending")
    with engine.begin() as connection:
        if len(by_message_id) == 1 and len(result.accepted) == len(claimed.claimed_ids):
            # The usual case: SendGrid took the whole batch, with one message id. The batch's `sending` rows are
            # exactly the ones claimed (its pending rows are claimed all at once, and only one run can hold them
            # until this record), so one statement by batch key, without a list of 1,000 ids.
            ((message_id, _ids),) = by_message_id.items()
            connection.execute(
                update(outbox)
                .where(outbox.c.batch_key == claimed.batch.batch_key, outbox.c.state == "sending")
                .values(state="sent", provider_message_id=message_id, sent_at=now, updated_at=now, error=None)
            )
        elif len(by_message_id) == 1:
            ((message_id, ids),) = by_message_id.items()
            connection.execute(update(outbox).where(sending).values(
                state="sent", provider_message_id=message_id, sent_at=now, updated_at=now, error=None),
                {"ids": ids})
        elif by_message_id:  # one id per message (SMTP, mailbox): one executemany
            connection.execute(
                update(outbox).where(outbox.c.id == bindparam("oid"), outbox.c.state == "sending")
                .values(state="sent", provider_message_id=bindparam("mid"), sent_at=now, updated_at=now, error=None),
                [{"oid": oid, "mid": mid} for oid, mid in result.accepted.items()],
            )
        if result.rejected:
            connection.execute(
                update(outbox).where(outbox.c.id == bindparam("oid"), outbox.c.state == "sending")
                .values(state="failed", error=bindparam("reason"), updated_at=now),
                [{"oid": outbox_id, "reason": why[:2000]} for outbox_id, why in result.rejected.items()],
            )
        if ambiguous_ids:
            connection.execute(update(outbox).where(sending).values(
                state="unknown", error=f"no answer from the provider: {reason}"[:2000], updated_at=now),
                {"ids": sorted(ambiguous_ids)})
        if released:
            connection.execute(update(outbox).where(sending).values(
                state="pending", error=(reason or None), provider_message_id=None, updated_at=now),
                {"ids": released})
    return BatchOutcome(
        batch_key=claimed.batch.batch_key, claimed=len(claimed.claimed_ids), sent=len(result.accepted),
        failed=len(result.rejected), unknown=len(ambiguous_ids), released=len(released),
    )


def expire_sending(engine: Engine, *, year: int, older_than: dt.timedelta = SENDING_LEASE) -> int:
    """Rows still ``sending`` after their lease belong to a run that died. Those a per-message mailer had not
    reached yet (``provider_message_id`` still the empty mark :class:`MessageProgress` gave them) were certainly
    never handed over and go back to ``pending``; the others become ``unknown``. Returns how many became unknown."""
    round_id = _round_row(engine, year).id
    cutoff = utcnow() - older_than
    stale = and_(outbox.c.round_id == round_id, outbox.c.state == "sending", outbox.c.updated_at <= cutoff)
    with engine.begin() as connection:
        connection.execute(
            update(outbox).where(stale, outbox.c.provider_message_id == "")
            .values(state="pending", provider_message_id=None, updated_at=utcnow(),
                    error="the sending run stopped before handing it over")
        )
        return connection.execute(
            update(outbox).where(stale)
            .values(state="unknown", error="the sending run stopped before recording the provider's answer",
                    updated_at=utcnow())
        ).rowcount


class MessageProgress:
    """Per-message accounting for mailers that hand messages over one at a time (SMTP, the Maildir), so that a
    run killed mid-batch leaves at most one message of unknown fate per batch.

    Claiming leaves every row with an empty ``provider_message_id`` ("not handed over yet"). Before a message is
    handed over, its row gets the message's id ("may have been handed over"); once accepted, the row becomes
    ``sent``. Each acceptance is committed together with the next message's mark: one commit per message.
    :func:`expire_sending` later tells the rows of a dead run apart by that mark. A mailer that sends the whole
    batch in one request has all its rows marked at once first (:meth:`whole_batch`)."""

    def __init__(self, engine: Engine, claimed_ids: Sequence[int]) -> None:
        self.engine = engine
        self.claimed_ids = list(claimed_ids)
        self._accepted: list[tuple[int, str | None]] = []

    def whole_batch(self, batch_key: str) -> None:
        """Every row of the batch is about to be handed over in one request: all of them in doubt from now on."""
        with self.engine.begin() as connection:
            connection.execute(update(outbox).where(outbox.c.batch_key == batch_key, outbox.c.state == "sending")
                               .values(provider_message_id=None))

    def handing_over(self, outbox_id: int, message_id: str | None) -> None:
        now = utcnow()
        with self.engine.begin() as connection:
            self._write_accepted(connection, now)
            connection.execute(update(outbox).where(outbox.c.id == outbox_id, outbox.c.state == "sending")
                               .values(provider_message_id=message_id or "?", updated_at=now))

    def accepted(self, outbox_id: int, message_id: str | None) -> None:
        self._accepted.append((outbox_id, message_id))

    def flush(self) -> None:
        if self._accepted:
            with self.engine.begin() as connection:
                self._write_accepted(connection, utcnow())

    def _write_accepted(self, connection, now: dt.datetime) -> None:  # type: ignore[no-untyped-def]
        if self._accepted:
            connection.execute(
                update(outbox).where(outbox.c.id == bindparam("oid"), outbox.c.state == "sending")
                .values(state="sent", provider_message_id=bindparam("mid"), sent_at=now, updated_at=now, error=None),
                [{"oid": oid, "mid": mid} for oid, mid in self._accepted],
            )
            self._accepted = []


@dataclass(frozen=True)
class ReconcileReport:
    confirmed_sent: int
    confirmed_failed: int
    released: int
    still_unknown: int
    unknown_ids: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.confirmed_sent} confirmed sent, {self.confirmed_failed} confirmed not delivered, "
                f"{self.released} released for sending, {self.still_unknown} still unknown")


def reconcile(engine: Engine, *, year: int, stale_after: dt.timedelta = SENDING_LEASE,
              release: bool = False, mailbox: Mailbox | None = None) -> ReconcileReport:
    """Resolve ``unknown`` rows from the webhook events recorded for them (by outbox id from ``custom_args``,
    or by the provider's message id): an event that proves acceptance makes them ``sent``; ``dropped`` makes
    them ``failed``. With ``release``, the rest go back to ``pending``: the operator has checked the provider's
    activity feed and states they were not sent.

    ``mailbox``: a backend that can tell for certain which messages it holds (the Maildir): each unknown row is
    ``sent`` if its message is there, else back to ``pending``, with or without ``release``."""
    expire_sending(engine, year=year, older_than=stale_after)
    round_id = _round_row(engine, year).id
    now = utcnow()
    unknown = and_(outbox.c.round_id == round_id, outbox.c.state == "unknown")
    mailbox_sent = mailbox_released = 0
    if mailbox is not None:
        with engine.connect() as connection:
            rows = connection.execute(select(outbox.c.id, outbox.c.batch_key).where(unknown)).all()
        found = mailbox.written([(row.id, row.batch_key or "") for row in rows])
        with engine.begin() as connection:
            for ids, values in (
                (sorted(found), {"state": "sent", "error": None, "sent_at": now}),
                (sorted({row.id for row in rows} - found.keys()),
                 {"state": "pending", "error": "not in the mailbox: released", "provider_message_id": None}),
            ):
                if ids:
                    done = connection.execute(
                        update(outbox).where(outbox.c.id.in_(bindparam("ids", expanding=True)),
                                             outbox.c.state == "unknown").values(updated_at=now, **values),
                        {"ids": ids}).rowcount
                    if values["state"] == "sent":
                        mailbox_sent += done
                    else:
                        mailbox_released += done
    by_outbox_id = exists().where(events.c.outbox_id == outbox.c.id, events.c.event.in_(ACCEPTED_EVENTS))
    by_message_id = and_(
        outbox.c.provider_message_id.is_not(None), outbox.c.provider_message_id != "",  # "": never handed over
        exists().where(events.c.provider_message_id.like(outbox.c.provider_message_id + "%"),
                       events.c.email == outbox.c.recipient, events.c.event.in_(ACCEPTED_EVENTS)),
    )
    dropped = exists().where(events.c.outbox_id == outbox.c.id, events.c.event == "dropped")
    with engine.begin() as connection:
        sent = connection.execute(
            update(outbox).where(unknown, by_outbox_id | by_message_id)
            .values(state="sent", error=None, sent_at=now, updated_at=now)
        ).rowcount
        failed = connection.execute(
            update(outbox).where(unknown, dropped)
            .values(state="failed", error="dropped by the provider (webhook event)", updated_at=now)
        ).rowcount
        released = 0
        if release:
            released = connection.execute(
                update(outbox).where(unknown).values(state="pending", error=None, updated_at=now)
            ).rowcount
        left = connection.scalars(select(outbox.c.id).where(unknown).order_by(outbox.c.id)).all()
    return ReconcileReport(sent + mailbox_sent, failed, released + mailbox_released, len(left), list(left))


def report(engine: Engine, *, year: int, kind: str, sequence: int | None, note: str = "") -> MailReport:
    if sequence is None:
        if not note and kind == "reminder" and round_is_anonymous(engine, year):
            note = ANONYMOUS_NO_REMINDERS
        return MailReport(year=year, kind=kind, sequence=None, note=note or f"no {kind} due")
    round_id = _round_row(engine, year).id
    with engine.connect() as connection:
        counts = Counter(dict(connection.execute(
            select(outbox.c.state, func.count())
            .where(outbox.c.round_id == round_id, outbox.c.kind == kind, outbox.c.sequence == sequence)
            .group_by(outbox.c.state)
        ).all()))
    return MailReport(
        year=year, kind=kind, sequence=sequence, planned=sum(counts.values()), sent=counts["sent"],
        skipped=counts["skipped"], failed=counts["failed"], unknown=counts["unknown"], pending=counts["pending"],
        sending=counts["sending"], note=note,
    )


def settled_fraction(engine: Engine, *, year: int, kind: str, sequence: int) -> float:
    """Share of the rows of (kind, sequence) no longer pending or sending, in percent (progress artifact)."""
    round_id = _round_row(engine, year).id
    with engine.connect() as connection:
        counts = dict(connection.execute(
            select(outbox.c.state, func.count())
            .where(outbox.c.round_id == round_id, outbox.c.kind == kind, outbox.c.sequence == sequence)
            .group_by(outbox.c.state)
        ).tuples().all())
    total = sum(counts.values())
    settled = total - counts.get("pending", 0) - counts.get("sending", 0)
    return 100.0 * settled / total if total else 100.0


def delivery_table(engine: Engine, *, year: int, kind: str | None = None, sequence: int | None = None,
                   limit: int = 5000) -> list[dict[str, object]]:
    """One row per message: who got what, with problems first (the table artifact and ``consult outbox``).

    Stakeholder rows (the published summary: no partnership) are listed too, after the partnerships' rows of the
    same state, with an empty ``partnership`` and the name given in the stakeholder list."""
    round_id = _round_row(engine, year).id
    query = (
        select(partnerships.c.code, partnerships.c.name, outbox.c.recipient_name, outbox.c.kind, outbox.c.sequence,
               outbox.c.recipient, outbox.c.state, outbox.c.error, outbox.c.sent_at, outbox.c.provider_message_id)
        # Outer join: a stakeholder row has no partnership and must still be listed.
        .outerjoin(partnerships, partnerships.c.id == outbox.c.partnership_id)
        .where(outbox.c.round_id == round_id)
    )
    if kind is not None:
        query = query.where(outbox.c.kind == kind)
    if sequence is not None:
        query = query.where(outbox.c.sequence == sequence)
    order = {"failed": 0, "unknown": 1, "sending": 2, "pending": 3, "skipped": 4, "sent": 5}
    with engine.connect() as connection:
        # Partnerships first, stakeholders after them (spelled out: SQLite and PostgreSQL sort NULLs apart).
        rows = connection.execute(query.order_by(outbox.c.partnership_id.is_(None), partnerships.c.code,
                                                 outbox.c.kind, outbox.c.sequence, outbox.c.recipient)).all()
    rows = sorted(rows, key=lambda row: order.get(row.state, 9))[:limit]
    return [
        {
            "partnership": row.code or "", "name": row.name or row.recipient_name or "", "kind": row.kind,
            "sequence": row.sequence,
            "recipient": row.recipient, "state": row.state, "reason": row.error or "",
            "sent_at": row.sent_at.isoformat(timespec="seconds") if row.sent_at else "",
        }
        for row in rows
    ]


def count_states(engine: Engine, *, year: int) -> dict[tuple[str, int, str], int]:
    round_id = _round_row(engine, year).id
    with engine.connect() as connection:
        return {
            (kind, sequence, state): count
            for kind, sequence, state, count in connection.execute(
                select(outbox.c.kind, outbox.c.sequence, outbox.c.state, func.count())
                .where(outbox.c.round_id == round_id)
                .group_by(outbox.c.kind, outbox.c.sequence, outbox.c.state)
            )
        }


__all__ = [
    "BatchOutcome", "ClaimedBatch", "MailReport", "Mailbox", "MessageProgress", "PlannedMail", "ReconcileReport", "claim", "claim_rows",
    "delivery_table", "due_reminder", "expire_sending", "plan", "reconcile", "record", "reminder_sequence", "report",
    "settled_fraction",
]
