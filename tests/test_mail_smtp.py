"""Specification of the SMTP backend against a real SMTP server (aiosmtpd) on a local port."""

from __future__ import annotations

import csv
import hashlib
import hmac
from collections import Counter
from email import message_from_bytes, policy

import pytest

from consult import settings as settings_module
from consult.mail.render import render_content
from flows.mailing import send_invitations
from tests.conftest import EXAMPLES, TEST_TOKEN_SECRET, alnum_token
from tests.mail_servers import SmtpCatcher


def panel_contacts() -> dict[str, str]:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return {row["contact_email"]: row["partnership_id"] for row in csv.DictReader(handle)}


def link(code: str) -> str:
    digest = hmac.new(TEST_TOKEN_SECRET.encode(), f"2019:{code}".encode(), hashlib.sha256).digest()
    return "http://127.0.0.1:8000/r/" + alnum_token(digest)


@pytest.fixture
def smtp(monkeypatch: pytest.MonkeyPatch, settings):  # type: ignore[no-untyped-def]
    with SmtpCatcher() as catcher:
        monkeypatch.setenv("CONSULT_MAIL_BACKEND", "smtp")
        monkeypatch.setenv("CONSULT_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("CONSULT_SMTP_PORT", str(catcher.port))
        monkeypatch.setenv("CONSULT_MAIL_BATCH_SIZE", "10")
        settings_module.get_settings.cache_clear()
        yield catcher
        settings_module.get_settings.cache_clear()


@pytest.mark.slow
def test_smtp_delivers_one_invitation_per_contact_with_its_link(engine, settings, round_2019, smtp):
    """The SMTP server receives one message per contact, addressed to that contact only, from the configured
    sender, whose text and HTML carry the partnership's link; running again sends nothing."""
    contacts = panel_contacts()
    report = send_invitations(2019)
    assert report.sent == len(contacts)
    assert Counter(rcpt for _, rcpts, _ in smtp.messages for rcpt in rcpts) == Counter(list(contacts))
    for mail_from, (rcpt,), raw in smtp.messages:
        assert mail_from == "consultation@eccp.example"
        message = message_from_bytes(raw, policy=policy.default)
        assert message["To"].addresses[0].addr_spec == rcpt
        text = message.get_body(("plain",)).get_content()
        html = message.get_body(("html",)).get_content()
        assert link(contacts[rcpt]) in text and f'href="{link(contacts[rcpt])}"' in html
    send_invitations(2019)
    assert len(smtp.messages) == len(contacts)


def test_an_address_the_smtp_server_refuses_fails_alone(engine, settings, round_2019, smtp):
    """A 550 for one recipient marks that message `failed` with the server's answer; the others are sent."""
    contacts = list(panel_contacts())
    smtp.refuse.add(contacts[2])
    report = send_invitations(2019)
    assert (report.sent, report.failed) == (len(contacts) - 1, 1)
    assert Counter(rcpt for _, rcpts, _ in smtp.messages for rcpt in rcpts) == Counter(contacts[:2] + contacts[3:])


def test_every_template_renders_with_a_subject_in_each_language():
    """Each kind has a subject and text and HTML bodies, in English and (where provided) French."""
    import datetime as dt

    from consult.mail.render import KINDS, BatchContext

    for kind in KINDS:
        for language in ("en", "fr", "de"):
            content = render_content(kind, BatchContext(2019, dt.date(2019, 6, 30), "Consultation", "ECCP", language))
            assert content.subject and "%%link%%" in content.text and "%%link:html%%" in content.html
