"""Specification of SendGrid sending against a local stub that plays SendGrid's faults: rate limits, outages,
answers that come too late, refused addresses, concurrent runs and a crash right after the provider accepted.

Whatever happens, the end state is the same: every contact of the panel has exactly one invitation at the
provider, and the outbox accounts for every message. Expected recipients come from examples/escp4i/panel.csv.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
from collections import Counter

import pytest
from sqlalchemy import select

from consult import settings as settings_module
from consult.mail import outbox
from consult.mail.message import TransientMailError
from consult.mail.sendgrid_mailer import SendGridMailer
from consult.mail.sending import send_batch
from consult.webhook import handle_post
from db.engine import session_scope
from db.models import OutboxMessage
from flows.mailing import send_invitations
from tests.conftest import EXAMPLES, REPO_ROOT
from tests.mail_servers import Fault, SendGridStub, WebhookSigner, free_port, sendgrid_stub

BATCH_SIZE = 5


def panel_emails() -> list[str]:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return [row["contact_email"] for row in csv.DictReader(handle)]


@pytest.fixture
def stub(monkeypatch: pytest.MonkeyPatch, settings):  # type: ignore[no-untyped-def]
    """The SendGrid stub, with the settings switched to the sendgrid backend and batches of 5."""
    with sendgrid_stub() as server:
        monkeypatch.setenv("CONSULT_MAIL_BACKEND", "sendgrid")
        monkeypatch.setenv("CONSULT_SENDGRID_API_KEY", server.api_key)
        monkeypatch.setenv("CONSULT_SENDGRID_HOST", server.url)
        monkeypatch.setenv("CONSULT_MAIL_BATCH_SIZE", str(BATCH_SIZE))
        settings_module.get_settings.cache_clear()
        yield server
        settings_module.get_settings.cache_clear()


def outbox_rows(engine) -> list[OutboxMessage]:  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def assert_exactly_one_invitation_each(engine, stub: SendGridStub) -> None:  # type: ignore[no-untyped-def]
    """The provider has one message per panel contact, and the outbox has one `sent` row for each of them."""
    assert Counter(item.email for item in stub.accepted) == Counter(panel_emails())
    rows = outbox_rows(engine)
    assert Counter(row.state for row in rows) == {"sent": len(panel_emails())}
    assert sorted(row.id for row in rows) == sorted(item.outbox_id for item in stub.accepted)


def deliver_webhook_events(engine, stub: SendGridStub) -> None:  # type: ignore[no-untyped-def]
    signer = WebhookSigner()
    body = json.dumps(stub.webhook_events()).encode()
    handle_post(engine, signer.public_key, body, signer.headers(body))


@pytest.mark.slow
def test_requests_carry_outbox_ids_categories_and_personal_links(engine, settings, round_2019, stub):
    """One request per batch of up to 5; each personalization names its outbox row in custom_args and
    carries its own link; categories name the round and the kind; SendGrid's X-Message-Id is stored."""
    report = send_invitations(2019)
    assert report.sent == len(panel_emails())
    assert_exactly_one_invitation_each(engine, stub)
    assert len(stub.requests) == len({item.x_message_id for item in stub.accepted})
    assert all(len([a for a in stub.accepted if a.x_message_id == x]) <= BATCH_SIZE
               for x in {a.x_message_id for a in stub.accepted})
    rows = {row.id: row for row in outbox_rows(engine)}
    for item in stub.accepted:
        assert item.categories == ("consultation-2019", "invitation")
        assert rows[item.outbox_id].provider_message_id == item.x_message_id
        assert rows[item.outbox_id].recipient == item.email
        links = [value for key, value in item.substitutions.items() if key.startswith("%%link")]
        assert links and all(link.startswith("http://127.0.0.1:8000/r/") for link in links)


@pytest.mark.slow
def test_rate_limit_waits_for_the_reset_time_then_resumes(engine, settings, round_2019, stub):
    """A 429 with X-RateLimit-Reset: nothing more is sent before that time, and then every contact gets
    exactly one invitation."""
    stub.faults.append(Fault("429", seconds=1))
    send_invitations(2019)
    limited_at, status = stub.requests[0]
    assert status == 429
    reset = int(limited_at + 1 + 0.999)
    assert min(item.at for item in stub.accepted) >= reset - 0.05
    assert_exactly_one_invitation_each(engine, stub)


@pytest.mark.slow
def test_outages_are_retried_until_every_contact_has_one_invitation(engine, settings, round_2019, stub):
    """Two 5xx answers in a row: Prefect retries the batch, nothing is lost and nothing doubled."""
    stub.faults.extend([Fault("500"), Fault("503")])
    report = send_invitations(2019)
    assert [status for _, status in stub.requests].count(202) == len(stub.requests) - 2
    assert report.sent == len(panel_emails()) and report.unknown == 0
    assert_exactly_one_invitation_each(engine, stub)


def test_a_refused_address_fails_alone_with_the_reason(engine, settings, round_2019, stub):
    """SendGrid refuses a request naming one bad address: that message is `failed` with SendGrid's reason and
    the other recipients of the batch still get theirs."""
    bad = panel_emails()[3]
    stub.refuse_addresses.add(bad)
    report = send_invitations(2019)
    assert (report.sent, report.failed) == (len(panel_emails()) - 1, 1)
    assert Counter(item.email for item in stub.accepted) == Counter(e for e in panel_emails() if e != bad)
    (failed,) = [row for row in outbox_rows(engine) if row.state == "failed"]
    assert failed.recipient == bad and "Does not contain a valid address" in failed.error


@pytest.mark.slow
def test_an_answer_that_comes_too_late_is_never_resent_blindly(engine, settings, round_2019, stub):
    """SendGrid accepts a batch but answers after the client gave up: its rows become `unknown`, a new run
    does not send them again, and the webhook events (carrying the outbox ids) settle them as `sent`."""
    stub.faults.append(Fault("late", seconds=1.5))
    mailer = SendGridMailer(api_key=stub.api_key, host=stub.url, timeout=0.5)
    planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=BATCH_SIZE)
    with pytest.raises(TransientMailError):
        send_batch(engine, settings, mailer, planned.batch_keys[0])
    late_batch = [row for row in outbox_rows(engine) if row.batch_key == planned.batch_keys[0]]
    assert {row.state for row in late_batch} == {"unknown"}
    assert Counter(row.state for row in outbox_rows(engine))["unknown"] == len(late_batch)

    send_invitations(2019)  # the resumed run: everything else, not the unknown batch
    assert Counter(item.email for item in stub.accepted) == Counter(panel_emails())
    deliver_webhook_events(engine, stub)
    result = outbox.reconcile(engine, year=2019)
    assert (result.confirmed_sent, result.still_unknown) == (len(late_batch), 0)
    assert_exactly_one_invitation_each(engine, stub)


@pytest.mark.slow
def test_an_unreachable_provider_leaves_the_batch_pending_for_the_next_run(engine, settings, round_2019, stub):
    """Connection refused: nothing can have been accepted, so the rows go back to `pending` and the next run
    sends them."""
    mailer = SendGridMailer(api_key=stub.api_key, host=f"http://127.0.0.1:{free_port()}", timeout=1)
    planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=BATCH_SIZE)
    with pytest.raises(TransientMailError):
        send_batch(engine, settings, mailer, planned.batch_keys[0])
    assert Counter(row.state for row in outbox_rows(engine)) == {"pending": len(panel_emails())}
    send_invitations(2019)
    assert_exactly_one_invitation_each(engine, stub)


def test_two_concurrent_runs_never_send_a_message_twice(engine, settings, round_2019, stub):
    """Two runs plan and send the same round at the same time: each message is claimed by exactly one."""
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            mailer = SendGridMailer(api_key=stub.api_key, host=stub.url)
            barrier.wait()
            planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=BATCH_SIZE)
            for key in planned.batch_keys:
                send_batch(engine, settings, mailer, key)
        except BaseException as error:  # noqa: BLE001 - re-raised by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors
    assert_exactly_one_invitation_each(engine, stub)


CRASHING_RUN = """
from consult.settings import get_settings
from consult.mail import outbox
from consult.mail.mailer import get_mailer
from consult.mail.sending import send_batch
from db.engine import get_engine

settings = get_settings()
engine = get_engine(settings.resolved_database_url)
planned = outbox.plan(engine, year=2019, kind="invitation", sequence=0, batch_size=settings.mail_batch_size)
for key in planned.batch_keys:
    send_batch(engine, settings, get_mailer(settings), key)
"""


@pytest.mark.parametrize("k", [1, 8, 27])
@pytest.mark.slow
def test_a_crash_right_after_the_kth_accepted_message_ends_with_exactly_one_invitation_each(
    engine, settings, round_2019, stub, k
):
    """The sending process is killed just after SendGrid accepted the batch holding message k, before it could
    record that. Resuming sends the rest and never the accepted batch again; its rows wait as `sending`, then
    `unknown`, and the webhook events settle them: every contact has exactly one invitation and every message
    at the provider is a `sent` row of the outbox."""
    stub.crash_after = k
    process = subprocess.Popen([sys.executable, "-c", CRASHING_RUN], cwd=REPO_ROOT, env=dict(os.environ))
    stub.crash_pid = process.pid
    assert process.wait(timeout=120) == -9, "the sending process should have been killed by the stub"
    at_crash = len(stub.accepted)
    assert at_crash >= k
    last_batch = [item for item in stub.accepted if item.x_message_id == stub.accepted[-1].x_message_id]
    states = Counter(row.state for row in outbox_rows(engine))
    in_flight = states["sending"]
    assert (in_flight, states["sent"]) == (len(last_batch), at_crash - len(last_batch))

    report = send_invitations(2019)
    assert report.sending == in_flight
    assert Counter(item.email for item in stub.accepted) == Counter(panel_emails())

    deliver_webhook_events(engine, stub)
    result = outbox.reconcile(engine, year=2019, stale_after=dt.timedelta(0))
    assert (result.confirmed_sent, result.still_unknown) == (in_flight, 0)
    assert_exactly_one_invitation_each(engine, stub)


@pytest.mark.slow
def test_the_api_key_can_come_from_a_prefect_secret_block(engine, settings, round_2019, stub, monkeypatch):
    """Without CONSULT_SENDGRID_API_KEY, the key is read from the Prefect Secret block `sendgrid-api-key`;
    without either, the run stops with one line saying where to put it."""
    from prefect.blocks.system import Secret

    from consult.errors import ConsultError
    from consult.mail.mailer import get_mailer

    monkeypatch.delenv("CONSULT_SENDGRID_API_KEY")
    settings_module.get_settings.cache_clear()
    missing = f"sendgrid-api-key-missing-{os.getpid()}"
    monkeypatch.setattr("consult.mail.mailer.SENDGRID_SECRET_BLOCK", missing)
    with pytest.raises(ConsultError, match=missing):
        get_mailer(settings_module.get_settings())
    monkeypatch.setattr("consult.mail.mailer.SENDGRID_SECRET_BLOCK", "sendgrid-api-key")
    Secret(value=stub.api_key).save("sendgrid-api-key", overwrite=True)
    report = send_invitations(2019)
    assert report.sent == len(panel_emails())
    assert_exactly_one_invitation_each(engine, stub)
