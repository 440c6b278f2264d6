"""Specification of the SendGrid Event Webhook receiver: signed posts only, each event stored once, and
bounces, drops and unsubscribes recorded on the contact so that nothing more is sent to them."""

from __future__ import annotations

import datetime as dt
import json
import threading
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from consult.mail import outbox
from consult.webhook import WebhookRejected, handle_post, make_server
from db.engine import session_scope
from db.models import Contact, DeliveryEvent, OutboxMessage
from flows.mailing import send_invitations, send_reminders
from tests.mail_servers import WebhookSigner, free_port


def sent_rows(engine) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return list(session.execute(select(OutboxMessage.id, OutboxMessage.recipient).order_by(OutboxMessage.id)))


def event(outbox_id: int, email: str, name: str, timestamp: int = 1560000000, **extra: object) -> dict[str, object]:
    return {"email": email, "event": name, "timestamp": timestamp, "sg_message_id": f"msg{outbox_id}.filter.0",
            "sg_event_id": f"evt-{outbox_id}-{name}-{timestamp}", "outbox_id": str(outbox_id), **extra}


def event_count(engine) -> int:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return session.scalar(select(func.count()).select_from(DeliveryEvent)) or 0


def test_a_signed_batch_is_stored_once_even_when_posted_twice(engine, settings, round_2019):
    """SendGrid retries posts: the same events posted again are recognised and not stored twice."""
    send_invitations(2019)
    rows = sent_rows(engine)
    events = [event(oid, email, "delivered") for oid, email in rows[:5]]
    signer = WebhookSigner()
    body = json.dumps(events).encode()
    first = handle_post(engine, signer.public_key, body, signer.headers(body))
    second = handle_post(engine, signer.public_key, body, signer.headers(body))
    assert (first.stored, first.duplicates) == (5, 0)
    assert (second.stored, second.duplicates) == (0, 5)
    assert event_count(engine) == 5


def test_a_post_with_a_wrong_signature_is_refused_and_stores_nothing(engine, settings, round_2019):
    """A body altered after signing, a signature from another key, or no signature at all: refused."""
    signer, other = WebhookSigner(), WebhookSigner()
    body = json.dumps([event(1, "a@example.org", "bounce")]).encode()
    tampered = body.replace(b"bounce", b"delivered")
    with pytest.raises(WebhookRejected, match="signature"):
        handle_post(engine, signer.public_key, tampered, signer.headers(body))
    with pytest.raises(WebhookRejected, match="signature"):
        handle_post(engine, signer.public_key, body, other.headers(body))
    with pytest.raises(WebhookRejected, match="signature"):
        handle_post(engine, signer.public_key, body, {})
    assert event_count(engine) == 0


def test_bounced_and_unsubscribed_contacts_get_no_reminder(engine, settings, round_2019):
    """After a bounce and an unsubscribe arrive for two invitations, those contacts are marked and the next
    reminder goes to everyone else only."""
    send_invitations(2019)
    rows = sent_rows(engine)
    (bounced_id, bounced), (unsub_id, unsubscribed) = rows[0], rows[1]
    events = [event(bounced_id, bounced, "bounce", type="bounce", reason="550 5.1.1 no such user"),
              event(unsub_id, unsubscribed, "unsubscribe")]
    signer = WebhookSigner()
    body = json.dumps(events).encode()
    report = handle_post(engine, signer.public_key, body, signer.headers(body))
    assert report.contacts_updated == 2
    with session_scope(engine) as session:
        status = dict(session.execute(select(Contact.email, Contact.status)).tuples().all())
        reason = session.scalar(select(Contact.status_reason).where(Contact.email == bounced))
    assert (status[bounced], status[unsubscribed]) == ("bounced", "unsubscribed")
    assert "no such user" in reason
    reminders = send_reminders(2019, force=True, today=dt.date(2019, 6, 1))
    assert reminders.sent == len(rows) - 2
    with session_scope(engine) as session:
        reminded = set(session.scalars(select(OutboxMessage.recipient).where(OutboxMessage.kind == "reminder")))
    assert bounced not in reminded and unsubscribed not in reminded


def test_the_webhook_server_answers_204_for_signed_posts_and_403_otherwise(engine, settings, round_2019):
    """Over HTTP: a signed post is stored (204), an unsigned one is refused (403)."""
    signer = WebhookSigner()
    server = make_server(engine, signer.public_key, port=free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    try:
        body = json.dumps([event(1, "x@example.org", "processed")]).encode()
        request = urllib.request.Request(url, data=body, headers=signer.headers(body), method="POST")
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.status == 204
        unsigned = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(unsigned, timeout=10)
        assert refused.value.code == 403
    finally:
        server.shutdown()
        server.server_close()
    assert event_count(engine) == 1


def test_a_dropped_message_of_unknown_fate_is_reconciled_as_failed(engine, settings, round_2019):
    """An `unknown` row whose webhook event says `dropped` becomes `failed`; one with `processed`, `sent`."""
    planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0)
    with session_scope(engine) as session:
        ids = list(session.scalars(select(OutboxMessage.id).order_by(OutboxMessage.id)))[:2]
        for row in session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids))):
            row.state = "unknown"
        recipients = dict(session.execute(select(OutboxMessage.id, OutboxMessage.recipient)).tuples().all())
    assert planned.batch_keys
    signer = WebhookSigner()
    body = json.dumps([event(ids[0], recipients[ids[0]], "dropped", reason="Bounced Address"),
                       event(ids[1], recipients[ids[1]], "processed")]).encode()
    handle_post(engine, signer.public_key, body, signer.headers(body))
    result = outbox.reconcile(engine, year=2019)
    assert (result.confirmed_sent, result.confirmed_failed, result.still_unknown) == (1, 1, 0)
    with session_scope(engine) as session:
        states = dict(session.execute(select(OutboxMessage.id, OutboxMessage.state)
                                      .where(OutboxMessage.id.in_(ids))).tuples().all())
    assert states == {ids[0]: "failed", ids[1]: "sent"}
