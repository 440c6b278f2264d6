"""Receiver for SendGrid's Event Webhook: verify the ECDSA signature on the raw body and the freshness of its
timestamp, store each event once, and record bounces, drops and unsubscribes on the contact so that no later
message goes to them. A stakeholder's copy of the published summary has no contact: a bounce or drop of it marks
its outbox row ``failed`` instead.

Events carry the outbox id (our ``custom_args``) and SendGrid's ``sg_message_id`` (its ``X-Message-Id`` plus a
suffix): they are what resolves ``unknown`` outbox rows (see ``consult.mail.outbox.reconcile``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy import Engine, String, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from consult.errors import ConsultError
from db.models import Contact, DeliveryEvent, OutboxMessage, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER = EventWebhookHeader.TIMESTAMP
MAX_BODY_BYTES = 10 * 1024 * 1024  # SendGrid posts batches of events; far below this
# A signed post whose timestamp is further than this from now is refused: a recorded post replayed later carries
# a valid signature, and only its age gives it away. SendGrid posts within seconds of signing.
TIMESTAMP_TOLERANCE = dt.timedelta(minutes=5)

# Contact status an event leaves behind (an unsubscribe is never overridden by a later bounce).
CONTACT_STATUS = {
    "bounce": "bounced",
    "dropped": "dropped",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "spamreport": "unsubscribed",
}
# Events that prove a message never reached its recipient: a stakeholder's outbox row becomes `failed`.
UNDELIVERED_EVENTS = ("bounce", "dropped")
# Outbox states such an event overrides (`pending`: a row released by `reconcile --release` was sent after all).
UNDELIVERED_FROM_STATES = ("pending", "sending", "sent", "unknown")


class WebhookRejected(ConsultError):
    """The post is not from SendGrid (bad signature, stale timestamp: HTTP 403) or is not an event batch (400)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class WebhookReport:
    received: int
    stored: int
    duplicates: int
    contacts_updated: int
    stakeholder_messages_failed: int = 0


def verify(public_key: str, body: bytes, signature: str | None, timestamp: str | None, *,
           tolerance: dt.timedelta = TIMESTAMP_TOLERANCE, now: float | None = None) -> None:
    """Raise :class:`WebhookRejected` unless ``signature`` is SendGrid's ECDSA signature of ``timestamp + body``
    and ``timestamp`` (Unix seconds) is within ``tolerance`` of ``now`` (default: the current time)."""
    if not signature or not timestamp:
        raise WebhookRejected("event webhook post without a signature: refused", status=403)
    try:
        verifier = EventWebhook(public_key)
    except ValueError as error:
        raise ConsultError(f"CONSULT_SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key: {error}") from None
    try:
        valid = verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (ValueError, UnicodeDecodeError):  # undecodable base64 or body
        valid = False
    if not valid:
        raise WebhookRejected("event webhook post with a wrong signature: refused", status=403)
    check_fresh(timestamp, tolerance=tolerance, now=time.time() if now is None else now)


def check_fresh(timestamp: str, *, tolerance: dt.timedelta, now: float) -> None:
    """Raise :class:`WebhookRejected` unless the signed ``timestamp`` is within ``tolerance`` of ``now``."""
    try:
        signed_at = int(timestamp.strip())
    except ValueError:
        raise WebhookRejected(
            f"event webhook post: {TIMESTAMP_HEADER} {timestamp[:40]!r} is not a Unix time: refused", status=403
        ) from None
    skew = now - signed_at
    if abs(skew) > tolerance.total_seconds():
        raise WebhookRejected(
            f"event webhook post signed {abs(int(skew))} s {'ago' if skew > 0 else 'in the future'} "
            f"({TIMESTAMP_HEADER} {signed_at}), more than the {int(tolerance.total_seconds())} s allowed: refused "
            "as a possible replay (if every post is refused, check this server's clock)", status=403,
        )


def parse_events(body: bytes) -> list[dict[str, Any]]:
    try:
        events = json.loads(body)
    except ValueError as error:
        raise WebhookRejected(f"event webhook post is not JSON: {error}") from None
    if not isinstance(events, list) or not all(isinstance(item, dict) for item in events):
        raise WebhookRejected("event webhook post is not a JSON array of events")
    return events


def _outbox_id(event: dict[str, Any]) -> int | None:
    value = event.get("outbox_id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def record_events(engine: Engine, events: list[dict[str, Any]]) -> WebhookReport:
    """Store events (once each, keyed on sg_message_id, event, timestamp) and update contacts, and the outbox
    rows of stakeholders that bounced or were dropped, in one transaction. Events without those keys are refused."""
    rows = []
    for number, event in enumerate(events, start=1):
        message_id, name, timestamp = event.get("sg_message_id"), event.get("event"), event.get("timestamp")
        if not message_id or not name or timestamp is None:
            raise WebhookRejected(f"event {number} lacks sg_message_id, event or timestamp: {json.dumps(event)[:200]}")
        try:
            timestamp = int(timestamp)
        except (TypeError, ValueError):
            raise WebhookRejected(f"event {number}: timestamp {timestamp!r} is not a Unix time") from None
        rows.append({
            "provider_message_id": str(message_id)[:200], "event": str(name)[:32], "timestamp": timestamp,
            "email": (event.get("email") or None), "outbox_id": _outbox_id(event),
            "reason": str(event.get("reason") or event.get("response") or event.get("type") or "") or None,
            "payload": event, "received_at": utcnow(),
        })
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    table = DeliveryEvent.__table__
    stored = 0
    updated = 0
    stakeholders_failed = 0
    with engine.begin() as connection:
        if rows:
            known = set(connection.scalars(select(OutboxMessage.id).where(
                OutboxMessage.id.in_({row["outbox_id"] for row in rows if row["outbox_id"] is not None})
            )))
            for row in rows:
                if row["outbox_id"] not in known:
                    row["outbox_id"] = None  # an id from another sender, or a deleted round: keep the event anyway
            inserted = connection.execute(
                dialect.insert(table).on_conflict_do_nothing().returning(*_returned_columns(table)), rows,
            ).all() if engine.dialect.name == "postgresql" else _insert_sqlite(connection, table, rows)
            stored = len(inserted)
            for _id, name, outbox_id, email, reason, _timestamp, message_id in inserted:
                status = CONTACT_STATUS.get(name)
                if status is None:
                    continue
                if name in UNDELIVERED_EVENTS:
                    stakeholders_failed += _fail_stakeholder_message(
                        connection, outbox_id=outbox_id, message_id=message_id, email=email,
                        reason=f"{status}: {reason}" if reason else status)
                updated += _mark_contact(connection, status=status, outbox_id=outbox_id, email=email,
                                         reason=f"{name}: {reason}" if reason else name)
    return WebhookReport(received=len(rows), stored=stored, duplicates=len(rows) - stored, contacts_updated=updated,
                         stakeholder_messages_failed=stakeholders_failed)


def _returned_columns(table):  # type: ignore[no-untyped-def]
    return (table.c.id, table.c.event, table.c.outbox_id, table.c.email, table.c.reason, table.c.timestamp,
            table.c.provider_message_id)


def _insert_sqlite(connection, table, rows):  # type: ignore[no-untyped-def]
    """SQLite cannot RETURNING from an executemany: insert one by one (event batches are small)."""
    inserted = []
    statement = sqlite.insert(table).on_conflict_do_nothing().returning(*_returned_columns(table))
    for row in rows:
        found = connection.execute(statement, row).first()
        if found is not None:
            inserted.append(tuple(found))
    return inserted


def _mark_contact(connection, *, status: str, outbox_id: int | None, email: str | None, reason: str) -> int:  # type: ignore[no-untyped-def]
    contact = Contact.__table__
    if outbox_id is not None:
        where = contact.c.id == select(OutboxMessage.contact_id).where(OutboxMessage.id == outbox_id).scalar_subquery()
    elif email:
        where = func.lower(contact.c.email) == email.lower()
    else:
        return 0
    statement = update(contact).where(where).values(status=status, status_reason=reason[:2000], status_at=utcnow())
    if status != "unsubscribed":
        statement = statement.where(contact.c.status != "unsubscribed")
    return connection.execute(statement).rowcount


def _fail_stakeholder_message(connection, *, outbox_id: int | None, message_id: str, email: str | None,  # type: ignore[no-untyped-def]
                              reason: str) -> int:
    """Mark the stakeholder's outbox row (no partnership, so no contact to mark) the event is about ``failed``.

    Found by the outbox id of the event's ``custom_args``, else by SendGrid's message id (``sg_message_id`` is the
    ``X-Message-Id`` recorded at sending plus a suffix) and the address, as ``outbox.reconcile`` does."""
    if outbox_id is not None:
        which = OutboxMessage.id == outbox_id
    elif email:
        recorded = OutboxMessage.provider_message_id
        which = and_(
            recorded.is_not(None),
            func.substr(literal(message_id, String), 1, func.length(recorded)) == recorded,
            func.lower(OutboxMessage.recipient) == email.lower(),
        )
    else:
        return 0
    return connection.execute(
        update(OutboxMessage.__table__)
        .where(which, OutboxMessage.partnership_id.is_(None), OutboxMessage.state.in_(UNDELIVERED_FROM_STATES))
        .values(state="failed", error=reason[:2000], updated_at=utcnow())
    ).rowcount


def handle_post(engine: Engine, public_key: str, body: bytes, headers: dict[str, str], *,
                tolerance: dt.timedelta = TIMESTAMP_TOLERANCE) -> WebhookReport:
    """Verify, parse and record one Event Webhook post (the raw body, exactly as received)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    verify(public_key, body, lowered.get(SIGNATURE_HEADER.lower()), lowered.get(TIMESTAMP_HEADER.lower()),
           tolerance=tolerance)
    return record_events(engine, parse_events(body))


def make_server(engine: Engine, public_key: str, *, host: str = "127.0.0.1", port: int = 8025,
                tolerance: dt.timedelta = TIMESTAMP_TOLERANCE) -> ThreadingHTTPServer:
    """An HTTP server answering POST (any path) with 204 when the events are stored, 403 for a bad signature or a
    timestamp further than ``tolerance`` from now, 400 for a malformed batch. Put it behind HTTPS (a reverse
    proxy) for SendGrid."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            log.info("webhook %s", format % args)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self.send_error(413, "event batch too large")
                return
            body = self.rfile.read(length)
            try:
                report = handle_post(engine, public_key, body, dict(self.headers.items()), tolerance=tolerance)
            except WebhookRejected as error:
                log.warning("webhook post refused: %s", error)
                self.send_response(error.status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            log.info("webhook: %s events, %s new, %s contacts updated, %s stakeholder messages failed",
                     report.received, report.stored, report.contacts_updated, report.stakeholder_messages_failed)
            self.send_response(204)
            self.end_headers()

    return ThreadingHTTPServer((host, port), Handler)
