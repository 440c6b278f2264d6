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


@pytest.mark.slow
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


@pytest.mark.slow
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


STAKEHOLDERS = [("minister.office@example.org", "Ana Silva"), ("press@example.com", ""),
                ("board@example.net", "Board of the Cluster Programme")]


def send_summary_to_stakeholders(engine, tmp_path) -> dict[str, OutboxMessage]:  # type: ignore[no-untyped-def]
    """Publish round 2019 with the reference responses and mail the summary to STAKEHOLDERS (mailbox backend);
    returns their outbox rows by address."""
    import csv

    from flows.publish import publish_and_send_summary
    from tests.factories import add_reference_responses

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    path = tmp_path / "stakeholders.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows([("email", "name"), *STAKEHOLDERS])
    publish_and_send_summary(2019, str(path), str(tmp_path / "out"))
    return summary_rows(engine)


def summary_rows(engine) -> dict[str, OutboxMessage]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return {row.recipient: row for row in session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "summary"))}


@pytest.mark.slow
def test_a_bounced_or_dropped_stakeholder_summary_marks_its_outbox_row_failed(engine, settings, round_2019,
                                                                              tmp_path):
    """Stakeholders have no contact to mark: a bounce (carrying the outbox id) and a drop (carrying only
    SendGrid's message id and the address) make their summary rows `failed` with the provider's reason; the
    delivered one stays `sent`, no contact changes, and the same post again changes nothing."""
    rows = send_summary_to_stakeholders(engine, tmp_path)
    assert {row.state for row in rows.values()} == {"sent"} and set(rows) == {a for a, _ in STAKEHOLDERS}
    bounced, dropped, delivered = (rows[address] for address, _ in STAKEHOLDERS)
    drop = event(dropped.id, dropped.recipient, "dropped", reason="Bounced Address")
    del drop["outbox_id"]
    drop["sg_message_id"] = f"{dropped.provider_message_id}.filterdrecv-5645d9c87f-abcde-1-0"
    events = [event(bounced.id, bounced.recipient, "bounce", type="bounce", reason="550 5.1.1 no such user"),
              drop, event(delivered.id, delivered.recipient, "delivered")]
    signer = WebhookSigner()
    body = json.dumps(events).encode()
    report = handle_post(engine, signer.public_key, body, signer.headers(body))
    assert (report.stored, report.stakeholder_messages_failed, report.contacts_updated) == (3, 2, 0)
    after = summary_rows(engine)
    assert {address: row.state for address, row in after.items()} == {
        bounced.recipient: "failed", dropped.recipient: "failed", delivered.recipient: "sent"}
    assert after[bounced.recipient].error == "bounced: 550 5.1.1 no such user"
    assert after[dropped.recipient].error == "dropped: Bounced Address"
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Contact).where(Contact.status != "active")) == 0
    again = handle_post(engine, signer.public_key, body, signer.headers(body))
    assert (again.stored, again.stakeholder_messages_failed) == (0, 0)


@pytest.mark.slow
def test_the_outbox_lists_a_bounced_stakeholder_as_a_failed_summary(engine, settings, round_2019, tmp_path):
    """After the webhook recorded a stakeholder's bounce, `consult outbox 2019 --problems` shows that summary
    mail failed, with the address and the reason."""
    from typer.testing import CliRunner

    from consult.cli_mail import app

    rows = send_summary_to_stakeholders(engine, tmp_path)
    address = STAKEHOLDERS[1][0]
    signer = WebhookSigner()
    body = json.dumps([event(rows[address].id, address, "bounce", reason="550 mailbox full")]).encode()
    handle_post(engine, signer.public_key, body, signer.headers(body))
    result = CliRunner().invoke(app, ["outbox", "2019", "--problems"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if address in line]
    assert line.split()[:4] == ["(stakeholder)", "summary", str(rows[address].sequence), "failed"]
    assert line.endswith("bounced: 550 mailbox full")


@pytest.mark.slow
def test_the_next_summary_skips_stakeholders_known_to_bounce_or_unsubscribed_and_says_why(
        engine, settings, round_2019, tmp_path):
    """A stakeholder whose copy bounced, and one who unsubscribed, are not sent the next (changed) summary: their
    rows are `skipped` with what happened and when. One whose bounce was followed by a delivery gets it."""
    import mailbox

    from flows.publish import publish_and_send_summary
    from tests.factories import accepted_reference_rows, add_responses, panel_strands

    rows = send_summary_to_stakeholders(engine, tmp_path)
    dead, unsubscribed, recovered = (rows[address] for address, _ in STAKEHOLDERS)
    bounce_time = 1560000000  # 2019-06-08 13:20 UTC
    events = [event(dead.id, dead.recipient.upper(), "bounce", bounce_time, reason="550 5.1.1 no such user"),
              event(unsubscribed.id, unsubscribed.recipient, "unsubscribe", bounce_time),
              event(recovered.id, recovered.recipient, "bounce", bounce_time, reason="452 mailbox full"),
              event(recovered.id, recovered.recipient, "delivered", bounce_time + 3600)]
    signer = WebhookSigner()
    body = json.dumps(events).encode()
    handle_post(engine, signer.public_key, body, signer.headers(body))

    accepted = accepted_reference_rows(2019)
    late = min(set(panel_strands()) - set(accepted))
    with session_scope(engine) as session:
        add_responses(session, 2019, [{**next(iter(accepted.values())), "partnership_id": late,
                                       "status": "accepted"}], name="late.csv")
    path = tmp_path / "stakeholders.csv"
    _, report = publish_and_send_summary(2019, str(path), str(tmp_path / "out"))

    assert (report.planned, report.sent, report.skipped) == (3, 1, 2)
    with session_scope(engine) as session:
        second = {row.recipient: (row.state, row.error) for row in session.scalars(
            select(OutboxMessage).where(OutboxMessage.kind == "summary", OutboxMessage.sequence == report.sequence))}
    assert second == {dead.recipient: ("skipped", "bounced on 2019-06-08: 550 5.1.1 no such user"),
                      unsubscribed.recipient: ("skipped", "unsubscribed on 2019-06-08"),
                      recovered.recipient: ("sent", None)}
    delivered = [message["To"] for message in mailbox.Maildir(settings.resolved_mailbox_dir, create=False)]
    assert len(delivered) == 3 + 1
    assert sum(recovered.recipient in to for to in delivered) == 2


def signed_at(signer: WebhookSigner, body: bytes, when: float) -> dict[str, str]:
    """Headers of a post correctly signed with the timestamp ``when`` (Unix seconds)."""
    timestamp = str(int(when))
    return {"X-Twilio-Email-Event-Webhook-Signature": signer.sign(body, timestamp),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp, "Content-Type": "application/json"}


def test_a_correctly_signed_post_with_an_old_timestamp_is_refused_as_a_replay(engine, settings, round_2019):
    """A post signed more than 5 minutes ago (or ahead) is refused with a message naming the replay guard and
    stores nothing; the same events signed now are accepted; the tolerance is a parameter."""
    import time

    signer = WebhookSigner()
    body = json.dumps([event(1, "x@example.org", "processed")]).encode()
    now = time.time()
    for when in (now - 301, now - 3600, now + 400):
        with pytest.raises(WebhookRejected, match="possible replay") as refused:
            handle_post(engine, signer.public_key, body, signed_at(signer, body, when))
        assert refused.value.status == 403 and "300 s" in str(refused.value)
    assert event_count(engine) == 0
    with pytest.raises(WebhookRejected, match="'yesterday' is not a Unix time"):
        handle_post(engine, signer.public_key, body, {"X-Twilio-Email-Event-Webhook-Signature": signer.sign(
            body, "yesterday"), "X-Twilio-Email-Event-Webhook-Timestamp": "yesterday"})
    assert handle_post(engine, signer.public_key, body, signed_at(signer, body, now - 600),
                       tolerance=dt.timedelta(minutes=15)).stored == 1
    fresh = json.dumps([event(2, "y@example.org", "processed")]).encode()
    assert handle_post(engine, signer.public_key, fresh, signed_at(signer, fresh, now - 30)).stored == 1
    assert event_count(engine) == 2


@pytest.mark.slow
def test_the_webhook_server_answers_403_to_a_replayed_post(engine, settings, round_2019):
    """Over HTTP: the same correctly signed post is refused (403) when its timestamp is 10 minutes old and
    stored (204) when it is fresh."""
    import time

    signer = WebhookSigner()
    server = make_server(engine, signer.public_key, port=free_port())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/events"
    body = json.dumps([event(1, "x@example.org", "delivered")]).encode()
    try:
        replayed = urllib.request.Request(url, data=body, headers=signed_at(signer, body, time.time() - 600),
                                          method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(replayed, timeout=10)
        assert refused.value.code == 403
        assert event_count(engine) == 0
        fresh = urllib.request.Request(url, data=body, headers=signed_at(signer, body, time.time()), method="POST")
        with urllib.request.urlopen(fresh, timeout=10) as answer:
            assert answer.status == 204
    finally:
        server.shutdown()
        server.server_close()
    assert event_count(engine) == 1
