"""Receiver for SendGrid's Event Webhook: verify the ECDSA signature on the raw body, store each event once,
and record bounces, drops and unsubscribes on the contact so that no later message goes to them.

Events carry the outbox id (our ``custom_args``) and SendGrid's ``sg_message_id`` (its ``X-Message-Id`` plus a
suffix): they are what resolves ``unknown`` outbox rows (see ``consult.mail.outbox.reconcile``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from consult.errors import ConsultError
from db.models import Contact, DeliveryEvent, OutboxMessage, utcnow

log = logging.getLogger(__name__)

SIGNATURE_HEADER = EventWebhookHeader.SIGNATURE
TIMESTAMP_HEADER = EventWebhookHeader.TIMESTAMP
MAX_BODY_BYTES = 10 * 1024 * 1024  # SendGrid posts batches of events; far below this

# Contact status an event leaves behind (an unsubscribe is never overridden by a later bounce).
CONTACT_STATUS = {
    "bounce": "bounced",
    "dropped": "dropped",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
    "spamreport": "unsubscribed",
}


class WebhookRejected(ConsultError):
    """The post is not from SendGrid (bad signature) or is not an event batch."""


@dataclass(frozen=True)
class WebhookReport:
    received: int
    stored: int
    duplicates: int
    contacts_updated: int


def verify(public_key: str, body: bytes, signature: str | None, timestamp: str | None) -> None:
    """Raise :class:`WebhookRejected` unless ``signature`` is SendGrid's ECDSA signature of ``timestamp + body``."""
    if not signature or not timestamp:
        raise WebhookRejected("event webhook post without a signature: refused")
    try:
        verifier = EventWebhook(public_key)
    except ValueError as error:
        raise ConsultError(f"CONSULT_SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid public key: {error}") from None
    try:
        valid = verifier.verify_signature(body.decode("utf-8"), signature, timestamp)
    except (ValueError, UnicodeDecodeError):  # undecodable base64 or body
        valid = False
    if not valid:
        raise WebhookRejected("event webhook post with a wrong signature: refused")


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
    """Store events (once each, keyed on sg_message_id, event, timestamp) and update contacts, in one
    transaction. Events without those keys are refused."""
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
    with engine.begin() as connection:
        if rows:
            known = set(connection.scalars(select(OutboxMessage.id).where(
                OutboxMessage.id.in_({row["outbox_id"] for row in rows if row["outbox_id"] is not None})
            )))
            for row in rows:
                if row["outbox_id"] not in known:
                    row["outbox_id"] = None  # an id from another sender, or a deleted round: keep the event anyway
            inserted = connection.execute(
                dialect.insert(table).on_conflict_do_nothing().returning(table.c.id, table.c.event,
                                                                          table.c.outbox_id, table.c.email,
                                                                          table.c.reason, table.c.timestamp),
                rows,
            ).all() if engine.dialect.name == "postgresql" else _insert_sqlite(connection, table, rows)
            stored = len(inserted)
            for _id, name, outbox_id, email, reason, timestamp in inserted:
                status = CONTACT_STATUS.get(name)
                if status is None:
                    continue
                updated += _mark_contact(connection, status=status, outbox_id=outbox_id, email=email,
                                         reason=f"{name}: {reason}" if reason else name)
    return WebhookReport(received=len(rows), stored=stored, duplicates=len(rows) - stored, contacts_updated=updated)


def _insert_sqlite(connection, table, rows):  # type: ignore[no-untyped-def]
    """SQLite cannot RETURNING from an executemany: insert one by one (event batches are small)."""
    inserted = []
    statement = sqlite.insert(table).on_conflict_do_nothing().returning(
        table.c.id, table.c.event, table.c.outbox_id, table.c.email, table.c.reason, table.c.timestamp)
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


def handle_post(engine: Engine, public_key: str, body: bytes, headers: dict[str, str]) -> WebhookReport:
    """Verify, parse and record one Event Webhook post (the raw body, exactly as received)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    verify(public_key, body, lowered.get(SIGNATURE_HEADER.lower()), lowered.get(TIMESTAMP_HEADER.lower()))
    return record_events(engine, parse_events(body))


def make_server(engine: Engine, public_key: str, *, host: str = "127.0.0.1", port: int = 8025) -> ThreadingHTTPServer:
    """An HTTP server answering POST (any path) with 204 when the events are stored, 403 for a bad signature,
    400 for a malformed batch. Put it behind HTTPS (a reverse proxy) for SendGrid."""

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
                report = handle_post(engine, public_key, body, dict(self.headers.items()))
            except WebhookRejected as error:
                status = 403 if "signature" in str(error) else 400
                log.warning("webhook post refused: %s", error)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            log.info("webhook: %s events, %s new, %s contacts updated", report.received, report.stored,
                     report.contacts_updated)
            self.send_response(204)
            self.end_headers()

    return ThreadingHTTPServer((host, port), Handler)
