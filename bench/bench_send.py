"""Benchmark: invitations to N synthetic contacts (default 100,000) through the engine - outbox planning,
claiming, rendering, the sendgrid client, recording - against the local SendGrid stub, next to a baseline
measured in the same run: a bare loop making the same client calls (same request bodies) with no outbox.

Reports messages per second accounted in the outbox (rows `sent`), the ratio to the bare loop, and the number
of Prefect task runs per 10,000 messages. Goals: >= 5,000 messages/s and <= 20 task runs per 10,000 messages.

The Prefect server: PREFECT_API_URL when set, else Prefect's temporary test server for the run.

Usage: .venv/bin/python bench/bench_send.py [--contacts N] [--batch-size B] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_LOGGING_LEVEL", "WARNING")

from tests.mail_servers import SendGridStub  # after sys.path is set


def populate(url: str, contacts: int, secret: bytes) -> None:
    """N partnerships with one contact each, and round 2019 open with every one of them enrolled."""
    from sqlalchemy import insert

    from consult.questionnaire import load_questionnaire
    from consult.rounds import store_questionnaire
    from consult.tokens import derive_token, hash_token
    from db.engine import get_engine, session_scope, upgrade
    from db.models import Contact, Partnership, Round, RoundParticipant, utcnow

    upgrade(url)
    engine = get_engine(url)
    now = utcnow()
    codes = [f"P{index:07d}" for index in range(contacts)]
    with engine.begin() as connection:
        connection.execute(insert(Partnership), [
            {"id": i + 1, "code": code, "name": f"Partnership {i} & Co", "attributes": {"acronym": f"P{i}", "strand": str(1 + i % 2), "country": "DE"},
             "language": "fr" if i % 10 == 0 else "en", "active": True, "created_at": now,
             "updated_at": now}
            for i, code in enumerate(codes)
        ])
        connection.execute(insert(Contact), [
            {"id": i + 1, "partnership_id": i + 1, "first_name": "Ana", "last_name": f"Example {i}",
             "email": f"contact{i}@cluster{i % 977}.example", "status": "active"}
            for i in range(contacts)
        ])
    with session_scope(engine) as session:
        version = store_questionnaire(session, load_questionnaire(REPO_ROOT / "examples/escp4i/questionnaire-2019.yaml"))
        round_ = Round(year=2019, questionnaire_version_id=version.id, closes_on=dt.date(2019, 6, 30),
                       reminder_days=[14, 3], status="open")
        session.add(round_)
        session.flush()
        round_id = round_.id
    with engine.begin() as connection:
        connection.execute(insert(RoundParticipant), [
            {"round_id": round_id, "partnership_id": i + 1, "attributes": {"strand": str(1 + i % 2)}, "created_at": now,
             "token_hash": hash_token(derive_token(secret, 2019, code))}
            for i, code in enumerate(codes)
        ])


def bare_loop(stub: SendGridStub, contacts: int, batch_size: int) -> float:
    """The same client calls with the same bodies, in a plain loop: no database, no Prefect. Seconds."""
    from consult.mail.message import Address, OutgoingBatch, Recipient
    from consult.mail.render import BatchContext, RecipientValues, recipient_substitutions, render_content
    from consult.mail.sendgrid_mailer import SendGridMailer

    mailer = SendGridMailer(api_key=stub.api_key, host=stub.url)
    content = render_content("invitation", BatchContext(2019, dt.date(2019, 6, 30), "Consultation", "ECCP"))
    recipients = [
        Recipient(outbox_id=i, email=f"contact{i}@cluster{i % 977}.example", name=f"Ana Example {i}",
                  substitutions=recipient_substitutions(content, RecipientValues(
                      "Ana", f"Example {i}", f"contact{i}@cluster{i % 977}.example", f"Partnership {i} & Co",
                      f"P{i}", f"P{i:07d}", f"https://survey.example/{i:043d}")))
        for i in range(contacts)
    ]
    sender = Address("consultation@eccp.example", "ECCP")
    started = time.perf_counter()
    for start in range(0, contacts, batch_size):
        batch = OutgoingBatch("bare", "invitation", sender, content, ("consultation-2019", "invitation"),
                              recipients[start:start + batch_size])
        mailer.post(SendGridMailer.request_body(batch, batch.recipients))
    return time.perf_counter() - started


async def count_task_runs(flow_run_id) -> int:  # type: ignore[no-untyped-def]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    total, offset = 0, 0
    async with get_client() as client:
        while True:  # the API pages results (200 at most per call)
            page = await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200, offset=offset
            )
            total += len(page)
            offset += len(page)
            if len(page) < 200:
                return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--database-url", default="", help="default: a SQLite file in a temporary folder")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-send-"))
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # its database too: ~100 MB at full size
    url = args.database_url or f"sqlite:///{workdir / 'consult.db'}"
    stub = SendGridStub().start()
    os.environ.update({
        "CONSULT_DATABASE_URL": url, "CONSULT_DATA_DIR": str(workdir), "CONSULT_MAIL_BACKEND": "sendgrid",
        "CONSULT_SENDGRID_API_KEY": stub.api_key, "CONSULT_SENDGRID_HOST": stub.url,
        "CONSULT_MAIL_BATCH_SIZE": str(args.batch_size), "CONSULT_TOKEN_SECRET": "bench-secret-" + "0" * 40,
    })
    from consult.settings import get_settings

    get_settings.cache_clear()
    started = time.perf_counter()
    populate(url, args.contacts, get_settings().resolved_token_secret())
    print(f"setup: {args.contacts:,} contacts in {time.perf_counter() - started:.1f} s ({url.split(':')[0]})")

    baseline = bare_loop(stub, args.contacts, args.batch_size)
    stub.accepted.clear()

    import contextlib

    from prefect.testing.utilities import prefect_test_harness
    from sqlalchemy import func, select

    from db.engine import get_engine
    from db.models import OutboxMessage
    from flows.mailing import send_invitations

    # A server that already runs (PREFECT_API_URL) rather than one started, and its database migrated, for
    # one flow run.
    server = (contextlib.nullcontext() if os.environ.get("PREFECT_API_URL")
              else prefect_test_harness(server_startup_timeout=120))
    with server:
        started = time.perf_counter()
        state = send_invitations(2019, return_state=True)
        elapsed = time.perf_counter() - started
        report = state.result()
        task_runs = asyncio.run(count_task_runs(state.state_details.flow_run_id))

    with get_engine(url).connect() as connection:
        sent = connection.scalar(select(func.count()).select_from(OutboxMessage).where(OutboxMessage.state == "sent"))
    distinct_at_provider = len({item.outbox_id for item in stub.accepted})
    stub.stop()

    engine_rate = sent / elapsed
    bare_rate = args.contacts / baseline
    print(f"outbox: {report}")
    print(f"provider: {len(stub.accepted):,} messages accepted, {distinct_at_provider:,} distinct outbox ids")
    print(f"bare client loop : {bare_rate:>10,.0f} messages/s ({baseline:.2f} s)")
    print(f"engine (outbox)  : {engine_rate:>10,.0f} messages/s ({elapsed:.2f} s, flow run incl. planning)")
    print(f"ratio engine/bare: {engine_rate / bare_rate:.2f}")
    per_10k = task_runs / args.contacts * 10_000
    print(f"prefect task runs: {task_runs} ({per_10k:.1f} per 10,000 messages; goal <= 20)")
    goal = "met" if engine_rate >= 5000 and per_10k <= 20 else "NOT met"
    print(f"goal (>= 5,000 messages/s, <= 20 task runs per 10,000): {goal}")
    if sent != args.contacts or len(stub.accepted) != args.contacts or distinct_at_provider != args.contacts:
        sys.exit("accounting mismatch: every contact must have exactly one message, all recorded as sent")


if __name__ == "__main__":
    main()
