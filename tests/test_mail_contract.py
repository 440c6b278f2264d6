"""Contract: every request the engine makes to SendGrid is valid against SendGrid's official OpenAPI spec.

The real ``sendgrid`` client talks to Prism serving ``../shared/contracts/sendgrid/tsg_mail_v3.json``. Prism
answers 202 to a valid request and 400 to one that breaks the spec; a deliberately broken request shows that
this check can fail.
"""

from __future__ import annotations

import copy
import csv
import datetime as dt
from collections.abc import Iterator

import pytest
from python_http_client.exceptions import HTTPError
from sqlalchemy import select

from consult import settings as settings_module
from consult.mail.message import Address, OutgoingBatch, Recipient
from consult.mail.render import BatchContext, RecipientValues, recipient_substitutions, render_content
from consult.mail.sendgrid_mailer import SendGridMailer
from db.engine import session_scope
from db.models import Contact
from flows.mailing import send_invitations, send_reminders, send_thank_yous
from tests.conftest import EXAMPLES
from tests.mail_servers import prism_server, prism_skip_reason

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def prism(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    reason = prism_skip_reason()
    if reason:
        pytest.skip(reason)
    with prism_server(tmp_path_factory.mktemp("prism")) as url:
        yield url


def panel_size() -> int:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def batch_of(size: int, kind: str = "invitation", language: str = "en") -> OutgoingBatch:
    content = render_content(kind, BatchContext(2019, dt.date(2019, 6, 30), "ESCP-4i consultation", "ECCP", language))
    recipients = [
        Recipient(
            outbox_id=index, email=f"contact{index}@cluster{index}.example", name=f"Ana María {index}, O'Neil; Jr",
            substitutions=recipient_substitutions(content, RecipientValues(
                "Ana María", "O'Neil", f"contact{index}@cluster{index}.example", "Blue & Green <Clusters>", "B&G",
                f"P{index}", f"https://survey.example/tok{index}?a=1&b=2")),
        )
        for index in range(1, size + 1)
    ]
    return OutgoingBatch(batch_key=f"2019-{kind}-0-{language}-test", kind=kind,
                         sender=Address("consultation@eccp.example", "ECCP Consultation"), content=content,
                         categories=("consultation-2019", kind), recipients=recipients)


@pytest.mark.parametrize("kind", ["invitation", "reminder", "thank_you"])
@pytest.mark.parametrize("size", [1, 1000])
@pytest.mark.slow
def test_every_kind_of_batch_is_accepted_by_sendgrids_spec(prism, kind, size):
    """Invitation, reminder and thank-you requests, with 1 and with the maximum 1,000 personalizations, are
    answered 202."""
    mailer = SendGridMailer(api_key="SG.contract", host=prism)
    result = mailer.send(batch_of(size, kind))
    assert len(result.accepted) == size and not result.rejected


def test_a_request_that_breaks_the_contract_is_refused(prism):
    """The check can fail: the same request with 1,001 personalizations, or a sender that is not an email
    address, or no recipient, is answered 400 by Prism."""
    mailer = SendGridMailer(api_key="SG.contract", host=prism)
    good = SendGridMailer.request_body(batch_of(2), batch_of(2).recipients)
    assert mailer.post(good).status_code == 202
    too_many = copy.deepcopy(good)
    too_many["personalizations"] = good["personalizations"][:1] * 1001
    no_sender = copy.deepcopy(good) | {"from": {"email": "not an address"}}
    no_recipient = copy.deepcopy(good)
    del no_recipient["personalizations"][0]["to"]
    for broken in (too_many, no_sender, no_recipient):
        with pytest.raises(HTTPError) as refused:
            mailer.post(broken)
        assert refused.value.status_code == 400


@pytest.mark.slow
def test_the_engines_own_runs_pass_the_contract(prism, engine, settings, round_2019, monkeypatch):
    """Invitations, a reminder and thank-yous for the reference round, sent through the flows with the
    sendgrid backend pointed at Prism, are all accepted: the outbox shows every message `sent`."""
    monkeypatch.setenv("CONSULT_MAIL_BACKEND", "sendgrid")
    monkeypatch.setenv("CONSULT_SENDGRID_API_KEY", "SG.contract")
    monkeypatch.setenv("CONSULT_SENDGRID_HOST", prism)
    settings_module.get_settings.cache_clear()
    with session_scope(engine) as session:  # a name that would break a To header if it were not cleaned
        contact = session.scalars(select(Contact).order_by(Contact.id)).first()
        contact.first_name = "Zoë\r\nBcc: x@evil.example; Ann, Jr"
    invitations = send_invitations(2019)
    assert (invitations.sent, invitations.failed, invitations.unknown) == (panel_size(), 0, 0)
    reminders = send_reminders(2019, force=True, today=dt.date(2019, 6, 1))
    assert reminders.sent == panel_size()
    from tests.factories import add_reference_responses

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    thanks = send_thank_yous(2019)
    assert thanks.sent > 0 and thanks.failed == 0

