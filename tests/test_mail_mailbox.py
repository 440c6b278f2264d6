"""Specification of invitations and reminders with the embedded mailbox backend (a Maildir on disk).

Expected recipients and links are computed here from ``examples/escp4i/panel.csv`` and the token rule
(HMAC-SHA256(secret, "year:code"), its 32 lowest base-62 digits: letters and digits), not with the engine's own helpers.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import hmac
import mailbox
from collections import Counter
from email.header import decode_header, make_header
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import select, update

from consult.settings import Settings
from db.engine import session_scope
from db.models import Contact, OutboxMessage, Round
from flows.mailing import send_invitations, send_reminders
from tests.conftest import EXAMPLES, TEST_TOKEN_SECRET, alnum_token
from tests.factories import accepted_reference_rows, add_responses, reference_rows


def panel_contacts() -> dict[str, str]:
    """email -> partnership code, from the reference panel."""
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return {row["contact_email"]: row["partnership_id"] for row in csv.DictReader(handle)}


def expected_link(year: int, code: str) -> str:
    digest = hmac.new(TEST_TOKEN_SECRET.encode(), f"{year}:{code}".encode(), hashlib.sha256).digest()
    return "http://127.0.0.1:8000/r/" + alnum_token(digest)


def read_mailbox(directory: Path) -> list[Message]:
    return list(mailbox.Maildir(directory, create=False)) if directory.exists() else []


def recipient(message: Message) -> str:
    return message["To"].rsplit("<", 1)[-1].rstrip(">").strip()


def is_kind(message: Message, kind: str) -> bool:
    """Whether ``message`` is a ``kind`` message (by its categories header: subjects differ by language)."""
    return kind in [part.strip() for part in (message["X-Consult-Categories"] or "").split(",")]


def bodies(message: Message) -> tuple[str, str]:
    text = html = ""
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            text = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        elif part.get_content_type() == "text/html":
            html = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    return text, html


@pytest.mark.slow
def test_every_contact_gets_one_invitation_with_its_partnerships_link(engine, settings: Settings, round_2019):
    """Each contact of the panel finds exactly one invitation in the Maildir, carrying the link of its own
    partnership in both the text and the HTML part; a second run sends nothing more."""
    report = send_invitations(2019)
    messages = read_mailbox(settings.resolved_mailbox_dir)
    contacts = panel_contacts()

    assert Counter(recipient(m) for m in messages) == Counter(list(contacts))
    assert (report.planned, report.sent, report.failed, report.unknown) == (len(contacts), len(contacts), 0, 0)
    for message in messages:
        link = expected_link(2019, contacts[recipient(message)])
        text, html = bodies(message)
        assert link in text
        assert f'href="{link}"' in html
        assert "30 June 2019" in text or "30 juin 2019" in text or "2019-06-30" in text

    again = send_invitations(2019)
    assert len(read_mailbox(settings.resolved_mailbox_dir)) == len(contacts)
    assert again.sent == len(contacts) and again.planned == len(contacts)


@pytest.mark.slow
def test_french_speaking_partnerships_get_the_french_invitation(engine, settings: Settings, round_2019):
    """A partnership whose language has templates reads its invitation in that language; one without
    (German here) reads English."""
    send_invitations(2019)
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        language = {row["contact_email"]: row["language"] for row in csv.DictReader(handle)}
    for message in read_mailbox(settings.resolved_mailbox_dir):
        text, _ = bodies(message)
        if language[recipient(message)] == "fr":
            assert "Merci de répondre" in text and "30 juin 2019" in text
        else:
            assert "Please answer once for your partnership" in text and "30 June 2019" in text


def panel_languages() -> dict[str, str]:
    """email -> the partnership's language, from the reference panel."""
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return {row["contact_email"]: row["language"] for row in csv.DictReader(handle)}


def subject(message: Message) -> str:
    return str(make_header(decode_header(message["Subject"])))


@pytest.mark.slow
def test_french_speaking_partnerships_get_the_french_reminder(engine, settings: Settings, round_2019):
    """The reminder of a French-speaking partnership is French throughout (subject, text, HTML, its footer and
    the date), carrying the partnership's own link; everyone else's is English."""
    send_reminders(2019, force=True, today=dt.date(2019, 6, 1))
    language, contacts = panel_languages(), panel_contacts()
    reminders = [m for m in read_mailbox(settings.resolved_mailbox_dir) if is_kind(m, "reminder")]
    assert len(reminders) == len(contacts)
    french = [m for m in reminders if language[recipient(m)] == "fr"]
    assert 0 < len(french) < len(reminders)
    for message in reminders:
        text, html = bodies(message)
        assert expected_link(2019, contacts[recipient(message)]) in text
        if language[recipient(message)] == "fr":
            assert subject(message).startswith("Rappel : ") and "30 juin 2019" in subject(message)
            assert "Nous n'avons pas encore reçu les réponses" in text and "se termine le 30 juin 2019" in text
            assert '<html lang="fr">' in html and "Répondre à la consultation" in html
            assert "Vous recevez ce message" in html and "You receive this message" not in html
            assert "We have not yet received" not in text + html and "June" not in text + html
        else:
            assert subject(message).startswith("Reminder: ") and "We have not yet received" in text
            assert "30 June 2019" in text and '<html lang="en">' in html


@pytest.mark.slow
def test_french_speaking_partnerships_get_the_french_thank_you(engine, settings: Settings, round_2019):
    """Thank-yous go to the contacts of the partnerships that answered, in French where the partnership speaks
    it, with the same link."""
    from flows.mailing import send_thank_yous
    from tests.factories import add_reference_responses

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    send_thank_yous(2019)
    language, contacts = panel_languages(), panel_contacts()
    answered = set(accepted_reference_rows(2019))
    thanks = [m for m in read_mailbox(settings.resolved_mailbox_dir) if is_kind(m, "thank_you")]
    assert Counter(recipient(m) for m in thanks) == Counter(e for e, code in contacts.items() if code in answered)
    assert any(language[recipient(m)] == "fr" for m in thanks)
    for message in thanks:
        text, html = bodies(message)
        assert expected_link(2019, contacts[recipient(message)]) in text
        if language[recipient(message)] == "fr":
            assert subject(message).startswith("Merci de votre participation")
            assert "nous avons bien reçu les réponses" in text and "le 30 juin 2019" in text
            assert "le même lien</a> reste valable" in html and "Vous recevez ce message" in html
        else:
            assert subject(message).startswith("Thank you") and "we have received the answers" in text


@pytest.mark.slow
def test_names_with_markup_and_line_breaks_cannot_inject_html_or_headers(engine, settings: Settings, round_2019):
    """A contact name holding HTML and a CR/LF followed by a header arrives escaped in the HTML part and
    on one line in the To header; no extra header appears."""
    with session_scope(engine) as session:
        contact = session.scalars(select(Contact).order_by(Contact.id)).first()
        contact.first_name = '<script>alert("x")</script>\r\nBcc: victim@evil.example'
        email = contact.email
    send_invitations(2019)
    (message,) = [m for m in read_mailbox(settings.resolved_mailbox_dir) if recipient(m) == email]
    text, html = bodies(message)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert message["Bcc"] is None
    assert "\n" not in message["To"] and "\r" not in message["To"]
    assert "Bcc: victim@evil.example" in text  # one harmless line of text, not a header


@pytest.mark.slow
def test_reminder_run_after_some_responses_reaches_exactly_the_non_respondents(
    engine, settings: Settings, round_2019
):
    """After the reference responses arrived, `remind --force` writes one reminder to each contact of every
    partnership without an accepted response, and to nobody else; running it again the same day adds nothing."""
    send_invitations(2019)
    with session_scope(engine) as session:
        from tests.factories import add_reference_responses

        add_reference_responses(session, 2019)
    answered = set(accepted_reference_rows(2019))
    contacts = panel_contacts()
    expected = Counter(email for email, code in contacts.items() if code not in answered)
    assert 0 < sum(expected.values()) < len(contacts)

    report = send_reminders(2019, force=True, today=dt.date(2019, 6, 1))
    reminders = [m for m in read_mailbox(settings.resolved_mailbox_dir) if is_kind(m, "reminder")]
    assert Counter(recipient(m) for m in reminders) == expected
    assert report.sent == sum(expected.values())

    send_reminders(2019, force=True, today=dt.date(2019, 6, 1))
    assert len([m for m in read_mailbox(settings.resolved_mailbox_dir) if is_kind(m, "reminder")]) == len(reminders)


@pytest.mark.slow
def test_scheduled_reminders_follow_the_rounds_schedule(engine, settings: Settings, round_2019):
    """With reminders 14 and 3 days before the 30 June closing: nothing on 1 June, one reminder on 16 June,
    nothing new on 20 June, a second one on 27 June, none once the round is closed."""
    contacts = panel_contacts()

    def reminder_count() -> int:
        return len([m for m in read_mailbox(settings.resolved_mailbox_dir) if is_kind(m, "reminder")])

    assert send_reminders(2019, today=dt.date(2019, 6, 1)).sequence is None
    assert reminder_count() == 0
    send_reminders(2019, today=dt.date(2019, 6, 16))
    assert reminder_count() == len(contacts)
    send_reminders(2019, today=dt.date(2019, 6, 20))
    assert reminder_count() == len(contacts)
    send_reminders(2019, today=dt.date(2019, 6, 27))
    assert reminder_count() == 2 * len(contacts)
    with session_scope(engine) as session:
        session.execute(update(Round).where(Round.year == 2019).values(status="closed"))
    report = send_reminders(2019, force=True, today=dt.date(2019, 6, 28))
    assert report.sequence is None and reminder_count() == 2 * len(contacts)


@pytest.mark.slow
def test_a_partnership_that_answers_between_planning_and_sending_gets_no_reminder(
    engine, settings: Settings, round_2019
):
    """Eligibility is checked again just before a batch goes out: rows planned for a partnership that has since
    answered, or for a contact that has since bounced, are skipped with the reason."""
    from consult.mail import outbox
    from consult.mail.mailer import get_mailer
    from consult.mail.sending import send_batch

    planned = outbox.plan(engine, year=2019, kind="reminder", sequence=14, batch_size=1000)
    first = reference_rows(2019)[0]["partnership_id"]
    with session_scope(engine) as session:
        add_responses(session, 2019, [{**reference_rows(2019)[0], "status": "accepted"}])
        bounced = session.scalars(select(Contact).order_by(Contact.id.desc())).first()
        bounced.status = "bounced"
        bounced_email = bounced.email
    for key in planned.batch_keys:
        send_batch(engine, settings, get_mailer(settings), key)
    sent_to = {recipient(m) for m in read_mailbox(settings.resolved_mailbox_dir)}
    contacts = panel_contacts()
    assert sent_to == {e for e, code in contacts.items() if code != first and e != bounced_email}
    with session_scope(engine) as session:
        skipped = dict(session.execute(
            select(OutboxMessage.recipient, OutboxMessage.error).where(OutboxMessage.state == "skipped")
        ).tuples().all())
    assert skipped[bounced_email] == "contact bounced"
    assert {skipped[e] for e, code in contacts.items() if code == first} == {"partnership already answered"}


@pytest.mark.slow
def test_a_forced_reminder_goes_out_after_the_closing_date_while_the_round_is_open(engine, settings, round_2019):
    """The schedule stops at the closing date, but an operator may still remind everyone who has not answered
    while the round is open (late answers are kept and flagged)."""
    assert send_reminders(2019, today=dt.date(2019, 7, 2)).sequence is None
    report = send_reminders(2019, force=True, today=dt.date(2019, 7, 2))
    assert report.sent == len(panel_contacts())
