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
import threading
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
# A connection that sends nothing for this long is closed; a whole request must arrive within the second bound.
IDLE_TIMEOUT_SECONDS = 10.0
REQUEST_DEADLINE_SECONDS = 30.0
MAX_CONNECTIONS = 64  # connections served at once; more are closed at once instead of each holding a thread
# The columns' ranges: an outbox id is an INTEGER, a timestamp a BIGINT of Unix seconds (up to year 9999).
MAX_OUTBOX_ID = 2**31 - 1
MAX_TIMESTAMP = 253402300799
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


def _outbox_id(number: int, event: dict[str, Any]) -> int | None:
    """The event's outbox id (from our ``custom_args``): None when absent or not a number (another sender's);
    an out-of-range number is refused (400) rather than overflowing the column."""
    value = event.get("outbox_id")
    try:
        outbox_id = int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON Infinity
        return None
    if outbox_id is not None and not 0 < outbox_id <= MAX_OUTBOX_ID:
        raise WebhookRejected(f"event {number}: outbox_id {str(value)[:40]} is out of range")
    return outbox_id


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
        except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON Infinity
            raise WebhookRejected(f"event {number}: timestamp {str(timestamp)[:40]!r} is not a Unix time") from None
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise WebhookRejected(f"event {number}: timestamp {str(timestamp)[:40]} is out of range")
        rows.append({
            "provider_message_id": str(message_id)[:200], "event": str(name)[:32], "timestamp": timestamp,
            "email": (str(event.get("email"))[:320] if event.get("email") else None),
            "outbox_id": _outbox_id(number, event),
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
            recorded.is_not(None), recorded != "",  # "": claimed, never handed over (consult.mail.outbox)
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


class BodyRefused(Exception):
    """The request's body cannot be read within the limits: answer ``status`` and close the connection."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def read_body(headers: Any, rfile: Any, *, limit: int = MAX_BODY_BYTES, deadline: float) -> bytes:
    """The request body, by ``Content-Length`` (digits only, at most ``limit``) or chunked transfer encoding (at
    most ``limit`` in all), read before ``deadline`` (a ``time.monotonic()`` value)."""
    length_header = headers.get("Content-Length")
    chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
    if chunked and length_header is not None:
        raise BodyRefused(400, "both Content-Length and Transfer-Encoding")  # a request-smuggling shape
    if chunked:
        return _read_chunked(rfile, limit=limit, deadline=deadline)
    if length_header is None:
        raise BodyRefused(411, "a Content-Length or chunked body is required")
    text = length_header.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise BodyRefused(400, f"Content-Length {length_header[:20]!r} is not a byte count")
    length = int(text)
    if length > limit:
        raise BodyRefused(413, "event batch too large")
    return _read_exactly(rfile, length, deadline=deadline)


def _read_exactly(rfile: Any, length: int, *, deadline: float) -> bytes:
    parts: list[bytes] = []
    left = length
    while left > 0:
        if time.monotonic() > deadline:
            raise BodyRefused(408, "the request took too long")
        part = rfile.read1(min(left, 65536)) if hasattr(rfile, "read1") else rfile.read(min(left, 65536))
        if not part:
            raise BodyRefused(400, "the body ended before its Content-Length")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _read_chunked(rfile: Any, *, limit: int, deadline: float) -> bytes:
    parts: list[bytes] = []
    total = 0
    while True:
        if time.monotonic() > deadline:
            raise BodyRefused(408, "the request took too long")
        line = rfile.readline(100)
        size_text = line.split(b";", 1)[0].strip()
        if not line.endswith(b"\n") or not size_text or len(size_text) > 8 or \
                any(byte not in b"0123456789abcdefABCDEF" for byte in size_text):
            raise BodyRefused(400, "malformed chunk size")
        size = int(size_text, 16)
        if size == 0:
            while rfile.readline(1000) not in (b"\r\n", b"\n", b""):  # trailers, if any
                if time.monotonic() > deadline:
                    raise BodyRefused(408, "the request took too long")
            return b"".join(parts)
        total += size
        if total > limit:
            raise BodyRefused(413, "event batch too large")
        parts.append(_read_exactly(rfile, size, deadline=deadline))
        if rfile.readline(3) not in (b"\r\n", b"\n"):
            raise BodyRefused(400, "malformed chunk")


class BoundedThreadingHTTPServer(ThreadingHTTPServer):
    """At most ``max_connections`` connections served at once: the next ones are closed straight away, so idle or
    slow clients cannot make the server hold a thread each without bound."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: refused connections are accepted, then closed, not left hanging

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], *,
                 max_connections: int = MAX_CONNECTIONS) -> None:
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("webhook: %s connections already open; closing one from %s", self.max_connections,
                        client_address)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(engine: Engine, public_key: str, *, host: str = "127.0.0.1", port: int = 8025,
                tolerance: dt.timedelta = TIMESTAMP_TOLERANCE, max_connections: int = MAX_CONNECTIONS,
                idle_timeout: float = IDLE_TIMEOUT_SECONDS,
                request_deadline: float = REQUEST_DEADLINE_SECONDS) -> ThreadingHTTPServer:
    """An HTTP server answering POST (any path) with 204 when the events are stored, 403 for a bad signature or a
    timestamp further than ``tolerance`` from now, 400 for a malformed batch or body, 411/413 for a body without
    a length or too large, 408 for one too slow. A connection idle for ``idle_timeout`` seconds is closed; at
    most ``max_connections`` are served at once. Put it behind HTTPS (a reverse proxy) for SendGrid."""

    class Handler(BaseHTTPRequestHandler):
        timeout = idle_timeout  # socket timeout for every read: an idle or half-open connection is dropped

        def log_message(self, format: str, *args: Any) -> None:
            log.info("webhook %s", format % args)

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            try:
                body = read_body(self.headers, self.rfile, deadline=time.monotonic() + request_deadline)
            except BodyRefused as refused:
                log.warning("webhook post refused (%s): %s", refused.status, refused.reason)
                self.close_connection = True
                self._answer(refused.status)
                return
            except (TimeoutError, OSError):
                self.close_connection = True
                return
            try:
                report = handle_post(engine, public_key, body, dict(self.headers.items()), tolerance=tolerance)
            except WebhookRejected as error:
                log.warning("webhook post refused: %s", error)
                self._answer(error.status)
                return
            except Exception as error:  # noqa: BLE001 - one line in the log and a 500, never a traceback
                log.error("webhook post failed: %s: %s", type(error).__name__, str(error).splitlines()[0][:200]
                          if str(error) else "")
                self.close_connection = True
                self._answer(500)
                return
            log.info("webhook: %s events, %s new, %s contacts updated, %s stakeholder messages failed",
                     report.received, report.stored, report.contacts_updated, report.stakeholder_messages_failed)
            self.send_response(204)
            self.end_headers()

    return BoundedThreadingHTTPServer((host, port), Handler, max_connections=max_connections)
