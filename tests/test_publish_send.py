"""Specification of sending the published summary to a stakeholder list (``consult publish YEAR --send-to FILE``).

Each address of the list gets the summary once per published content, whatever the backend: the mailbox (a
Maildir on disk) and SendGrid (the real client against the local stub). Expected figures are computed here from
the example CSV files, not with the engine's own helpers.
"""

from __future__ import annotations

import base64
import csv
import email
import mailbox
from email.message import Message
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from consult import settings as settings_module
from consult.errors import ConsultError
from consult.settings import Settings
from db.engine import session_scope
from db.models import OutboxMessage, Publication
from flows.publish import publish_and_send_summary
from tests.factories import accepted_reference_rows, add_reference_responses, add_responses, panel_strands
from tests.mail_servers import sendgrid_stub

STAKEHOLDERS = [
    ("minister.office@example.org", "Ana <b>Silva</b> & Co"),
    ("press@example.com", ""),
    ("board@example.net", "Board of the Cluster Programme"),
]


def write_stakeholders(path: Path, rows: list[tuple[str, str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        writer.writerows(rows)
    return path


def read_mailbox(directory: Path) -> list[Message]:
    return list(mailbox.Maildir(directory, create=False)) if directory.exists() else []


def parts(message: Message) -> dict[str, object]:
    """The plain text, the HTML body and the attachments (file name -> bytes) of one message."""
    found: dict[str, object] = {"text": "", "html": "", "files": {}}
    for part in message.walk():
        filename = part.get_filename()
        if filename:
            found["files"][filename] = part.get_payload(decode=True)  # type: ignore[index]
        elif part.get_content_type() == "text/plain":
            found["text"] = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
        elif part.get_content_type() == "text/html":
            found["html"] = part.get_payload(decode=True).decode(part.get_content_charset() or "utf-8")
    return found


def summary_rows(engine) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return list(session.scalars(select(OutboxMessage).where(OutboxMessage.kind == "summary")
                                    .order_by(OutboxMessage.id)))


@pytest.fixture
def answered_2019(engine, round_2019):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    return 2019


@pytest.mark.slow
def test_each_stakeholder_gets_one_message_with_the_rounds_figures_and_the_summary_attached(
        engine, settings: Settings, answered_2019, tmp_path):
    """Three addresses, three messages: each To one address, subject naming the round, the 2019 figures (23
    partnerships consulted, 19 responses) in text and HTML, names escaped in the HTML, and the published
    summary-2019.html attached byte for byte."""
    stakeholders = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS)
    _, report = publish_and_send_summary(2019, str(stakeholders), str(tmp_path / "out"))
    consulted, responses = len(panel_strands()), len(accepted_reference_rows(2019))
    assert (consulted, responses) == (23, 19)
    messages = read_mailbox(settings.resolved_mailbox_dir)
    by_address = {email.utils.parseaddr(message["To"])[1]: message for message in messages}
    assert len(messages) == 3 and set(by_address) == {address for address, _ in STAKEHOLDERS}
    published = (tmp_path / "out" / "2019" / "summary-2019.html").read_bytes()
    for address, name in STAKEHOLDERS:
        message = by_address[address]
        assert "2019" in message["Subject"] and "summary" in message["Subject"].lower()
        body = parts(message)
        for text in (body["text"], body["html"]):
            assert f"{responses} responses" in text and f"{consulted} partnerships" in text
        assert body["files"] == {"summary-2019.html": published}
        if not name:
            assert "Hello," in body["text"]
    assert "Dear Ana &lt;b&gt;Silva&lt;/b&gt; &amp; Co," in parts(by_address["minister.office@example.org"])["html"]
    assert "<b>Silva</b>" not in parts(by_address["minister.office@example.org"])["html"]
    assert (report.planned, report.sent) == (3, 3)
    assert all(row.state == "sent" and row.partnership_id is None for row in summary_rows(engine))


@pytest.mark.slow
def test_a_second_run_with_the_same_content_sends_nothing(engine, settings: Settings, answered_2019, tmp_path):
    """Publishing again with the same data gives the same content: nobody gets the summary twice, even when the
    list grows by one address, which gets it alone."""
    stakeholders = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS)
    publish_and_send_summary(2019, str(stakeholders), str(tmp_path / "out"))
    _, again = publish_and_send_summary(2019, str(stakeholders), str(tmp_path / "out"))
    assert len(read_mailbox(settings.resolved_mailbox_dir)) == 3
    assert (again.planned, again.sent) == (3, 3)  # the same three rows, not new ones
    grown = write_stakeholders(tmp_path / "grown.csv", [*STAKEHOLDERS, ("late@example.org", "Late Comer")])
    publish_and_send_summary(2019, str(grown), str(tmp_path / "out"))
    recipients = [email.utils.parseaddr(m["To"])[1] for m in read_mailbox(settings.resolved_mailbox_dir)]
    assert sorted(recipients) == sorted([a for a, _ in STAKEHOLDERS] + ["late@example.org"])
    with session_scope(engine) as session:
        assert len(session.scalars(select(Publication)).all()) == 3


@pytest.mark.slow
def test_a_republication_with_changed_figures_sends_the_new_summary(engine, settings: Settings, answered_2019,
                                                                    tmp_path):
    """One more partnership answers after the first sending: the new summary (20 responses) goes to everyone."""
    stakeholders = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS[:2])
    publish_and_send_summary(2019, str(stakeholders), str(tmp_path / "out"))
    accepted = accepted_reference_rows(2019)
    silent = min(set(panel_strands()) - set(accepted))
    template = next(iter(accepted.values()))
    with session_scope(engine) as session:
        add_responses(session, 2019, [{**template, "partnership_id": silent, "status": "accepted"}], name="late.csv")
    publish_and_send_summary(2019, str(stakeholders), str(tmp_path / "out"))
    messages = read_mailbox(settings.resolved_mailbox_dir)
    assert len(messages) == 4
    texts = sorted(str(parts(message)["text"]) for message in messages)
    assert sum(f"{len(accepted) + 1} responses" in text for text in texts) == 2
    assert sum(f"{len(accepted)} responses" in text for text in texts) == 2
    assert len({row.sequence for row in summary_rows(engine)}) == 2


@pytest.mark.parametrize(("rows", "row", "what"), [
    ([("good@example.org", "Good"), ("not-an-address", "Bad")], 3, "'not-an-address' is not an email address"),
    ([("good@example.org", "Evil\r\nBcc: victim@example.org")], 2, "line break"),
    ([("good@example.org", "A"), ("GOOD@example.org", "B")], 3, "repeats row 2"),
])
def test_a_bad_stakeholder_file_is_one_error_naming_file_and_row_and_sends_nothing(
        engine, settings: Settings, answered_2019, tmp_path, rows, row, what):
    """The CLI stops before publishing: exit non-zero, one line with the file and the row, no message, no
    publication, no outbox row."""
    from consult.cli_publish import app

    path = write_stakeholders(tmp_path / "stakeholders.csv", rows)
    result = CliRunner().invoke(app, ["publish", "2019", "--out", str(tmp_path / "out"), "--send-to", str(path)])
    assert result.exit_code != 0
    assert isinstance(result.exception, ConsultError)
    message = str(result.exception)
    assert f"{path}, row {row}:" in message and what in message and "\n" not in message
    assert read_mailbox(settings.resolved_mailbox_dir) == []
    assert summary_rows(engine) == []
    with session_scope(engine) as session:
        assert session.scalars(select(Publication)).all() == []


def test_the_flow_refuses_a_bad_file_before_publishing(engine, settings: Settings, answered_2019, tmp_path):
    path = write_stakeholders(tmp_path / "stakeholders.csv", [("a@example.org", "A"), ("b@", "B")])
    with pytest.raises(ConsultError, match=r"stakeholders\.csv, row 3: 'b@' is not an email address"):
        publish_and_send_summary(2019, str(path), str(tmp_path / "out"))
    assert read_mailbox(settings.resolved_mailbox_dir) == [] and summary_rows(engine) == []


def test_the_cli_prints_the_files_and_what_was_sent(engine, settings: Settings, answered_2019, tmp_path):
    from consult.cli_publish import app

    path = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS)
    runner = CliRunner()
    result = runner.invoke(app, ["publish", "2019", "--out", str(tmp_path / "out"), "--send-to", str(path)])
    assert result.exit_code == 0, result.output
    assert "summary mail:" in result.output and "3 planned: 3 sent" in result.output
    assert "--send-to" in runner.invoke(app, ["publish", "--help"]).output


@pytest.mark.slow
def test_sendgrid_receives_the_summary_attached_with_the_round_and_summary_categories(
        engine, settings: Settings, answered_2019, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Through the real sendgrid client: one request, one personalization per stakeholder carrying its outbox
    id, the summary HTML base64-encoded as an attachment, categories consultation-2019 and summary."""
    with sendgrid_stub() as stub:
        monkeypatch.setenv("CONSULT_MAIL_BACKEND", "sendgrid")
        monkeypatch.setenv("CONSULT_SENDGRID_API_KEY", stub.api_key)
        monkeypatch.setenv("CONSULT_SENDGRID_HOST", stub.url)
        settings_module.get_settings.cache_clear()
        try:
            path = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS)
            publish_and_send_summary(2019, str(path), str(tmp_path / "out"))
            publish_and_send_summary(2019, str(path), str(tmp_path / "out"))
        finally:
            settings_module.get_settings.cache_clear()
    assert len(stub.bodies) == 1  # the second run sent nothing
    (body,) = stub.bodies
    assert body["categories"] == ["consultation-2019", "summary"]
    rows = {row.recipient: row.id for row in summary_rows(engine)}
    assert {(p["to"][0]["email"], int(p["custom_args"]["outbox_id"])) for p in body["personalizations"]} == set(
        rows.items())
    (attachment,) = body["attachments"]
    assert attachment["filename"] == "summary-2019.html" and attachment["type"] == "text/html"
    assert base64.b64decode(attachment["content"]) == (tmp_path / "out" / "2019" / "summary-2019.html").read_bytes()
    assert f"{len(accepted_reference_rows(2019))} responses" in body["content"][0]["value"]


@pytest.mark.slow
def test_an_smtp_server_receives_one_message_per_stakeholder_with_the_summary_attached(
        engine, settings: Settings, answered_2019, tmp_path, monkeypatch: pytest.MonkeyPatch):
    """Through a real SMTP server (aiosmtpd): one envelope per address, the attachment intact."""
    from tests.mail_servers import SmtpCatcher

    with SmtpCatcher() as catcher:
        monkeypatch.setenv("CONSULT_MAIL_BACKEND", "smtp")
        monkeypatch.setenv("CONSULT_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("CONSULT_SMTP_PORT", str(catcher.port))
        settings_module.get_settings.cache_clear()
        try:
            path = write_stakeholders(tmp_path / "stakeholders.csv", STAKEHOLDERS)
            publish_and_send_summary(2019, str(path), str(tmp_path / "out"))
        finally:
            settings_module.get_settings.cache_clear()
    assert sorted(rcpt for _, rcpts, _ in catcher.messages for rcpt in rcpts) == sorted(a for a, _ in STAKEHOLDERS)
    published = (tmp_path / "out" / "2019" / "summary-2019.html").read_bytes()
    for _, _, raw in catcher.messages:
        assert parts(email.message_from_bytes(raw))["files"] == {"summary-2019.html": published}


@pytest.mark.node
@pytest.mark.slow
def test_the_summary_request_with_its_attachment_is_valid_against_sendgrids_spec(tmp_path):
    """Prism serving SendGrid's OpenAPI contract answers 202 to a summary batch (attachment, categories), and
    400 to the same request with the attachment's file name missing (the check can fail)."""
    import copy

    from python_http_client.exceptions import HTTPError

    from consult.mail.message import Address, Attachment, Content, OutgoingBatch, Recipient
    from consult.mail.sendgrid_mailer import SendGridMailer
    from tests.mail_servers import prism_server, prism_skip_reason

    reason = prism_skip_reason()
    if reason:
        pytest.skip(reason)
    batch = OutgoingBatch(
        batch_key="2019:summary:1:test-0", kind="summary", sender=Address("consultation@eccp.example", "ECCP"),
        content=Content("Consultation 2019: summary of results", "%%greeting%%\n19 responses",
                        "<p>%%greeting:html%%</p><p>19 responses</p>"),
        categories=("consultation-2019", "summary"),
        recipients=[Recipient(outbox_id=index, email=address, name=name,
                              substitutions={"%%greeting%%": "Hello,", "%%greeting:html%%": "Hello,"})
                    for index, (address, name) in enumerate(STAKEHOLDERS, start=1)],
        attachments=(Attachment("summary-2019.html", "text/html", b"<!DOCTYPE html><p>19 responses</p>"),),
    )
    with prism_server(tmp_path) as url:
        mailer = SendGridMailer(api_key="SG.contract", host=url)
        assert len(mailer.send(batch).accepted) == len(STAKEHOLDERS)
        broken = copy.deepcopy(SendGridMailer.request_body(batch, batch.recipients))
        del broken["attachments"][0]["filename"]
        with pytest.raises(HTTPError) as refused:
            mailer.post(broken)
        assert refused.value.status_code == 400
