"""Exactly once under kill -9: `consult invite` (and `consult publish --send-to`) killed at several points, for
each backend (the Maildir, a real aiosmtpd SMTP server, the local SendGrid stub), then re-run and reconciled.

The tests count what the mailbox, the SMTP server or the stub received, not the outbox rows: every contact ends
with exactly one message, or its row is reported `unknown` (with its id) and it has at most one.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import mailbox
import os
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from consult import settings as settings_module
from consult.mail import outbox
from consult.mail.mailbox_mailer import MailboxMailer
from consult.webhook import handle_post
from db.engine import session_scope
from db.models import OutboxMessage
from flows.mailing import send_invitations
from tests.conftest import REPO_ROOT
from tests.mail_servers import SendGridStub, SmtpCatcher, WebhookSigner
from tests.warm_consult import start_consult

pytestmark = pytest.mark.slow

PARTNERSHIPS = 40  # two contacts each: room after the last kill point, however fast the run goes
BATCH_SIZE = 6


@pytest.fixture
def crash_round(engine, settings, tmp_path):
    """A panel of 80 contacts and round 2019 open; returns the contacts' addresses."""
    from consult.panel import import_panel
    from consult.rounds import open_round
    from tests.conftest import EXAMPLES

    path = tmp_path / "panel.csv"
    emails = []
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["partnership_id", "name", "strand", "country", "contact_first_name", "contact_last_name",
                         "contact_email"])
        for number in range(PARTNERSHIPS):
            for contact in ("a", "b"):
                emails.append(f"{contact}{number}@p{number}.example")
                writer.writerow([f"P{number:02d}", f"Partnership {number}", "1", "BE", contact.upper(), "Lee",
                                 emails[-1]])
    with session_scope(engine) as session:
        import_panel(session, path)
        open_round(session, year=2019, questionnaire_path=EXAMPLES / "questionnaire-2019.yaml",
                   token_secret=settings.resolved_token_secret(), closes_on=dt.date(2019, 6, 30),
                   today=dt.date(2019, 2, 1))
    return emails


def _environment(**extra: str) -> dict[str, str]:
    """This test's settings (CONSULT_*) and the session's Prefect server, for a `consult` subprocess."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ) | {"CONSULT_MAIL_BATCH_SIZE": str(BATCH_SIZE)} | extra
    if PREFECT_API_URL.value():
        env["PREFECT_API_URL"] = PREFECT_API_URL.value()
    return env


def _use(monkeypatch, **values: str) -> None:
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("CONSULT_MAIL_BATCH_SIZE", str(BATCH_SIZE))
    settings_module.get_settings.cache_clear()


def _states(engine) -> Counter[str]:
    with session_scope(engine) as session:
        return Counter(session.scalars(select(OutboxMessage.state)))


def _recipients_of_unknown(engine, ids: list[int]) -> set[str]:
    with session_scope(engine) as session:
        return set(session.scalars(select(OutboxMessage.recipient).where(OutboxMessage.id.in_(ids))))


def _maildir_recipients(directory: Path) -> Counter[str]:
    return Counter(m["To"].rsplit("<", 1)[-1].rstrip(">") for m in mailbox.Maildir(directory, create=False))


def _assert_one_each_or_unknown(received: Counter[str], emails: list[str], unknown: set[str]) -> None:
    """Every contact has exactly one message, or its row is unknown and it has at most one."""
    assert set(received) <= set(emails)
    for address in emails:
        if address in unknown:
            assert received[address] <= 1, address
        else:
            assert received[address] == 1, (address, received[address])


def _kill_once_the_maildir_holds(command: list[str], maildir: Path, kill_at: int, *, timeout: float) -> None:
    """Run ``consult COMMAND`` (started warm, tests/warm_consult.py) and SIGKILL it as soon as ``maildir`` holds ``kill_at`` messages; it must not finish first."""
    new = maildir / "new"
    process = start_consult(command, cwd=REPO_ROOT, env=_environment())
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if new.is_dir() and len(os.listdir(new)) >= kill_at:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.001)
    assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be killed"


@pytest.mark.parametrize("kill_at", [1, 14, 33])
def test_invite_killed_while_writing_the_maildir_ends_with_exactly_one_invitation_each(
        engine, settings, crash_round, kill_at):
    """`consult invite` is killed (SIGKILL) once the Maildir holds `kill_at` messages. Re-running it, then
    `reconcile --stale-after 0` (the Maildir says for certain which messages it holds) and `invite` again leaves
    every contact exactly one invitation, and no message of unknown fate."""
    _kill_once_the_maildir_holds(["invite", "2019"], settings.resolved_mailbox_dir, kill_at, timeout=120)
    at_kill = sum(_maildir_recipients(settings.resolved_mailbox_dir).values())
    assert kill_at <= at_kill < len(crash_round)

    settings_module.get_settings.cache_clear()
    send_invitations(2019)
    result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0),
                              mailbox=MailboxMailer(settings.resolved_mailbox_dir))
    assert result.still_unknown == 0
    report = send_invitations(2019)
    assert (report.sent, report.unknown, report.sending, report.pending) == (len(crash_round), 0, 0, 0)
    _assert_one_each_or_unknown(_maildir_recipients(settings.resolved_mailbox_dir), crash_round, set())


class KillingSmtpServer(SmtpCatcher):
    """The SMTP catcher that kills the sending process (SIGKILL) on receiving message number ``kill_at``: the
    server has the message, the sender never hears the 250."""

    def __init__(self, kill_at: int) -> None:
        super().__init__()
        self.kill_at = kill_at
        self.pid: int | None = None

    def __enter__(self):  # type: ignore[no-untyped-def]
        catcher = super().__enter__()
        handler = self._controller.handler
        original = handler.handle_DATA

        async def handle_data(server, session, envelope):  # type: ignore[no-untyped-def]
            answer = await original(server, session, envelope)
            if len(self.messages) == self.kill_at and self.pid:
                os.kill(self.pid, signal.SIGKILL)
            return answer

        handler.handle_DATA = handle_data
        return catcher


def _smtp_recipients(server: SmtpCatcher) -> Counter[str]:
    return Counter(rcpt for _, rcpts, _ in server.messages for rcpt in rcpts)


@pytest.mark.parametrize("kill_at", [1, 14, 33])
def test_invite_killed_mid_smtp_conversation_ends_with_one_invitation_each_or_reported_unknown(
        engine, settings, crash_round, monkeypatch, kill_at):
    """`consult invite` over SMTP is killed when the server receives message `kill_at`, before it answers.
    Every message is recorded as it is accepted, so after a re-run and `reconcile --stale-after 0` only the
    messages in the middle of their hand-over (one per batch at most) are `unknown`, reported by id; every other
    contact has exactly one invitation, none has two."""
    with KillingSmtpServer(kill_at) as server:
        env = {"CONSULT_MAIL_BACKEND": "smtp", "CONSULT_SMTP_HOST": "127.0.0.1", "CONSULT_SMTP_PORT": str(server.port)}
        process = start_consult(["invite", "2019"], cwd=REPO_ROOT, env=_environment(**env))
        server.pid = process.pid
        assert process.wait(timeout=120) == -signal.SIGKILL, "the run ended before it could be killed"
        _use(monkeypatch, **env)
        send_invitations(2019)
        result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0))
        send_invitations(2019)
        unknown = _recipients_of_unknown(engine, result.unknown_ids)
        assert 1 <= result.still_unknown <= -(-len(crash_round) // BATCH_SIZE)  # at most one per batch
        received = _smtp_recipients(server)
        _assert_one_each_or_unknown(received, crash_round, unknown)
        assert sum(received.values()) >= len(crash_round) - len(unknown)
        states = _states(engine)
        assert (states["sent"], states["unknown"]) == (len(crash_round) - len(unknown), len(unknown))


@pytest.mark.parametrize("kill_at", [1, 14, 33])
def test_invite_killed_at_the_sendgrid_stub_ends_with_exactly_one_invitation_each(
        engine, settings, crash_round, monkeypatch, kill_at):
    """`consult invite` to the SendGrid stub is killed when the stub has accepted message `kill_at`, before its
    answer. The re-run never sends an accepted batch again; the webhook's events settle the batches the stub
    took; what is still unknown is reported by id and, the stub holding nothing for those contacts,
    `reconcile --release` and `invite` send them theirs: exactly one invitation each in the end."""
    stub = SendGridStub().start()
    try:
        env = {"CONSULT_MAIL_BACKEND": "sendgrid", "CONSULT_SENDGRID_API_KEY": stub.api_key,
               "CONSULT_SENDGRID_HOST": stub.url}
        stub.crash_after = kill_at
        process = start_consult(["invite", "2019"], cwd=REPO_ROOT, env=_environment(**env))
        stub.crash_pid = process.pid
        assert process.wait(timeout=120) == -signal.SIGKILL, "the run ended before it could be killed"
        _use(monkeypatch, **env)
        send_invitations(2019)
        signer = WebhookSigner()
        body = json.dumps(stub.webhook_events()).encode()
        handle_post(engine, signer.public_key, body, signer.headers(body))
        result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0))
        send_invitations(2019)  # what the dead run had claimed but not handed over
        received = Counter(item.email for item in stub.accepted)
        unknown = _recipients_of_unknown(engine, result.unknown_ids)
        assert not set(received) & unknown  # unknown only where the provider shows nothing
        _assert_one_each_or_unknown(received, crash_round, unknown)

        released = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0), release=True)
        assert released.released == len(unknown)
        send_invitations(2019)
        assert Counter(item.email for item in stub.accepted) == Counter(crash_round)
        assert _states(engine) == {"sent": len(crash_round)}
    finally:
        stub.stop()


def test_reconcile_release_never_resends_what_the_maildir_holds(engine, settings, crash_round):
    """Rows left `unknown` whose messages are in the Maildir become `sent` on `reconcile --release`, not
    pending: the next run writes nothing twice."""
    send_invitations(2019)
    with session_scope(engine) as session:
        for row in session.scalars(select(OutboxMessage)):
            row.state = "unknown"
    result = outbox.reconcile(engine, year=2019, release=True, mailbox=MailboxMailer(settings.resolved_mailbox_dir))
    assert (result.confirmed_sent, result.released, result.still_unknown) == (len(crash_round), 0, 0)
    send_invitations(2019)
    _assert_one_each_or_unknown(_maildir_recipients(settings.resolved_mailbox_dir), crash_round, set())


STAKEHOLDER_COUNT = 30


@pytest.fixture
def published_round(engine, settings, round_2019, tmp_path):
    """Round 2019 with the reference answers, and a list of 30 stakeholders; returns (list file, addresses)."""
    from tests.factories import add_reference_responses

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    addresses = [f"stakeholder{number}@s{number}.example" for number in range(STAKEHOLDER_COUNT)]
    path = tmp_path / "stakeholders.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["email", "name"])
        writer.writerows([address, f"Stakeholder {number}"] for number, address in enumerate(addresses))
    return path, addresses


@pytest.mark.parametrize("backend", ["mailbox", "smtp"])
def test_publish_send_to_killed_mid_run_ends_with_one_summary_each_or_reported_unknown(
        engine, settings, published_round, monkeypatch, tmp_path, backend):
    """`consult publish 2019 --send-to LIST` is killed (SIGKILL) after 11 summaries reached the Maildir or the
    SMTP server; publishing again and reconciling gives every stakeholder exactly one summary (over SMTP: or
    its row is reported unknown and it has at most one)."""
    from flows.publish import publish_and_send_summary

    path, addresses = published_round
    out = tmp_path / "out"
    kill_at = 11
    command = ["publish", "2019", "--send-to", str(path), "--out", str(out)]
    if backend == "mailbox":
        _kill_once_the_maildir_holds(command, settings.resolved_mailbox_dir, kill_at, timeout=180)
        publish_and_send_summary(2019, str(path), str(out))
        result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0),
                                  mailbox=MailboxMailer(settings.resolved_mailbox_dir))
        publish_and_send_summary(2019, str(path), str(out))
        assert result.still_unknown == 0
        _assert_one_each_or_unknown(_maildir_recipients(settings.resolved_mailbox_dir), addresses, set())
        assert _states(engine) == {"sent": STAKEHOLDER_COUNT}
        return
    with KillingSmtpServer(kill_at) as server:
        env = {"CONSULT_MAIL_BACKEND": "smtp", "CONSULT_SMTP_HOST": "127.0.0.1", "CONSULT_SMTP_PORT": str(server.port)}
        process = start_consult(command, cwd=REPO_ROOT, env=_environment(**env))
        server.pid = process.pid
        assert process.wait(timeout=180) == -signal.SIGKILL, "the run ended before it could be killed"
        _use(monkeypatch, **env)
        publish_and_send_summary(2019, str(path), str(out))
        result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0))
        publish_and_send_summary(2019, str(path), str(out))
        unknown = _recipients_of_unknown(engine, result.unknown_ids)
        assert 1 <= len(unknown) <= -(-STAKEHOLDER_COUNT // BATCH_SIZE)
        _assert_one_each_or_unknown(_smtp_recipients(server), addresses, unknown)
