"""Poisoned names and addresses: refused at import with their file and row, failed alone at send time; contacts
updated by a re-import and edited with `consult panel contact ...`."""

from __future__ import annotations

import csv
import mailbox
from pathlib import Path

import pytest
from sqlalchemy import select, update

from consult.errors import ConsultError
from consult.panel import import_panel
from db.engine import session_scope
from db.models import Contact, OutboxMessage
from flows.mailing import send_invitations
from tests.conftest import EXAMPLES

HEADER = ["partnership_id", "name", "acronym", "strand", "country", "contact_first_name", "contact_last_name",
          "contact_email", "language"]
POISON = "=?utf-8?q?=0D=0ABcc:_x@evil.example?="


def write_panel(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=HEADER)
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(**changes: str) -> dict[str, str]:
    base = {"partnership_id": "P1", "name": "Partnership One", "acronym": "P1", "strand": "1", "country": "BE",
            "contact_first_name": "Ana", "contact_last_name": "Silva", "contact_email": "ana@p1.example",
            "language": "en"}
    return base | changes


@pytest.mark.parametrize(("changes", "message"), [
    ({"contact_last_name": POISON}, r"row 3: contact_last_name contains a line break \(CR\) \(after decoding"),
    ({"contact_first_name": "Ana\u2028Bcc: x@evil.example"}, r"row 3: contact_first_name .* line separator \(U\+2028\)"),
    ({"contact_first_name": "Ana\u2029"}, r"row 3: contact_first_name .* paragraph separator"),
    ({"contact_last_name": "Sil\x00va"}, r"row 3: contact_last_name .* NUL"),
    ({"name": "Evil \u202eorp"}, r"row 3: name .* U\+202E"),
    ({"contact_last_name": "=?utf-8?b?U2lsdmEK?="}, r"row 3: contact_last_name contains a line break \(LF\)"),
    ({"contact_email": "=cmd|x@b.example"}, r"row 3: contact_email '=cmd\|x@b.example' starts with '=', which a spreadsheet"),
    ({"contact_email": "+1@b.example"}, r"row 3: contact_email .* starts with '\+'"),
    ({"contact_email": "-x@b.example"}, r"row 3: contact_email .* starts with '-'"),
    ({"contact_email": "@x@b.example"}, r"row 3: contact_email .* starts with '@'"),
    ({"contact_email": "\tx@b.example"}, r"row 3: contact_email .* a tab"),
])
def test_a_poisoned_name_or_address_is_refused_at_import_with_its_file_and_row(engine, settings, tmp_path, changes,
                                                                               message):
    """Encoded words are decoded before checking; control, separator and bidi characters and formula lead
    characters in an address are refused with the file and row; nothing of the file is stored."""
    path = write_panel(tmp_path / "panel.csv", [row(partnership_id="P0", contact_email="ok@p0.example"),
                                                row(**changes)])
    with pytest.raises(ConsultError, match=message) as caught, session_scope(engine) as session:
        import_panel(session, path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)
    with session_scope(engine) as session:
        assert session.scalars(select(Contact)).all() == []


def test_encoded_words_in_names_are_stored_decoded(engine, settings, tmp_path):
    """A name sent as an RFC 2047 encoded word is stored as the text it stands for; joiners used by real
    scripts (ZWNJ in Persian) stay allowed."""
    path = write_panel(tmp_path / "panel.csv", [
        row(contact_first_name="=?utf-8?q?Ren=C3=A9?=", contact_last_name="Mi\u200cr")])
    with session_scope(engine) as session:
        import_panel(session, path)
    with session_scope(engine) as session:
        contact = session.scalars(select(Contact)).one()
        assert (contact.first_name, contact.last_name) == ("René", "Mi\u200cr")


def test_reimport_updates_a_contacts_corrected_name(engine, settings, tmp_path):
    """Importing the panel again with a corrected name replaces the stored one and counts it as updated."""
    with session_scope(engine) as session:
        import_panel(session, write_panel(tmp_path / "a.csv", [row(contact_last_name="Slva")]))
    with session_scope(engine) as session:
        report = import_panel(session, write_panel(tmp_path / "b.csv", [row(contact_last_name="Silva")]))
        assert (report.contacts_added, report.contacts_updated) == (0, 1)
    with session_scope(engine) as session:
        assert session.scalars(select(Contact.last_name)).all() == ["Silva"]
        again = import_panel(session, tmp_path / "b.csv")
        assert (again.contacts_added, again.contacts_updated) == (0, 0)


def _poison_stored_contact(engine, email: str) -> None:
    """What a database filled before these checks holds: a poisoned name, written without the import."""
    with session_scope(engine) as session:
        session.execute(update(Contact).where(Contact.email == email).values(last_name=POISON))


def _panel_emails() -> list[str]:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return [line["contact_email"] for line in csv.DictReader(handle)]


def test_a_message_that_cannot_be_built_fails_alone_and_the_batch_goes_on(engine, settings, round_2019):
    """A contact stored with a poisoned name gets no message: its row is `failed` with the reason, and every
    other contact of the same batch gets its invitation."""
    emails = _panel_emails()
    poisoned = emails[3]
    _poison_stored_contact(engine, poisoned)
    report = send_invitations(2019)
    received = [m["To"] for m in mailbox.Maildir(settings.resolved_mailbox_dir, create=False)]
    assert len(received) == len(emails) - 1
    assert not any(poisoned in to for to in received)
    assert all("\r" not in to and "\n" not in to and "evil" not in to for to in received)
    assert (report.sent, report.failed) == (len(emails) - 1, 1)
    with session_scope(engine) as session:
        failed = session.scalars(select(OutboxMessage).where(OutboxMessage.state == "failed")).one()
        assert failed.recipient == poisoned and "line break (CR)" in failed.error


def test_stakeholder_list_with_an_encoded_line_break_is_refused_with_its_row(tmp_path):
    from consult.publish_send import read_stakeholders

    path = tmp_path / "stakeholders.csv"
    path.write_text(f"email,name\na@x.example,Ann\nb@x.example,{POISON}\n", encoding="utf-8")
    with pytest.raises(ConsultError, match=r"row 3: name contains a line break \(CR\)"):
        read_stakeholders(path)


def test_contact_commands_show_update_deactivate_and_remove(engine, settings, round_2019, capsys):
    """`consult panel contact show|update|deactivate|remove` on one contact, each with a one-line answer."""
    from consult.cli import app

    email = _panel_emails()[0]

    def run(*args: str) -> str:
        app(list(args), standalone_mode=False)
        return capsys.readouterr().out

    assert f"email:         {email}" in run("panel", "contact", "show", email)
    assert "updated last_name" in run("panel", "contact", "update", email, "--last-name", "=?utf-8?q?M=C3=BCller?=")
    with pytest.raises(ConsultError, match="--last-name contains a line break"):
        run("panel", "contact", "update", email, "--last-name", "A\nB")
    with pytest.raises(ConsultError, match="--email '=x@y.example' starts with '='"):
        run("panel", "contact", "update", email, "--email", "=x@y.example")
    with session_scope(engine) as session:
        assert session.scalars(select(Contact.last_name).where(Contact.email == email)).one() == "Müller"

    run("panel", "contact", "deactivate", email)
    send_invitations(2019)
    received = [m["To"] for m in mailbox.Maildir(settings.resolved_mailbox_dir, create=False)]
    assert not any(email in to for to in received) and len(received) == len(_panel_emails()) - 1
    with session_scope(engine) as session:
        skipped = session.scalars(select(OutboxMessage).where(OutboxMessage.recipient == email)).all()
        assert skipped == []  # an inactive contact is not planned at all

    assert "removed" in run("panel", "contact", "remove", email)
    with session_scope(engine) as session:
        assert session.scalars(select(Contact).where(Contact.email == email)).all() == []
    with pytest.raises(ConsultError, match="no contact"):
        run("panel", "contact", "show", email)
