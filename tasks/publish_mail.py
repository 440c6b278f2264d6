"""Prefect tasks that send the published summary to stakeholders: read list -> render -> plan -> one task per
batch -> report (flows/publish_send.py)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from consult.indicators import IndicatorReport
from consult.mail import outbox
from consult.mail.mailer import get_mailer
from consult.mail.message import Address
from consult.mail.outbox import BatchOutcome, MailReport, PlannedMail
from consult.publish import PublishResult, summary_context
from consult.publish_send import (
    Stakeholder,
    SummaryMail,
    plan_summary,
    read_stakeholders,
    render_summary_mail,
    send_summary_batch,
)
from consult.settings import get_settings
from db.engine import get_engine
from tasks.mail import MAIL_BATCH_RETRIES  # the same rule: retry rate limits and outages, not refusals


@task(name="read-stakeholders", cache_policy=NONE)
def read_stakeholders_task(path: str) -> list[Stakeholder]:
    """Every row of the stakeholder CSV checked before anything is published or sent."""
    return read_stakeholders(Path(path))


@task(name="render-summary-mail", cache_policy=NONE)
def render_summary_mail_task(report: IndicatorReport, result: PublishResult) -> SummaryMail:
    sender = Address.parse(get_settings().mail_from)
    return render_summary_mail(summary_context(report), result, sender_name=sender.name or sender.email)


@task(name="plan-summary-mail", cache_policy=NONE)
def plan_summary_mail_task(result: PublishResult, stakeholders: list[Stakeholder]) -> PlannedMail:
    """Expire dead runs' claims, reconcile from webhook events, and plan the rows of this content not planned yet."""
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    outbox.expire_sending(engine, year=result.year)
    outbox.reconcile(engine, year=result.year)
    return plan_summary(engine, year=result.year, content_sha256=result.content_sha256, stakeholders=stakeholders,
                        batch_size=settings.mail_batch_size)


@task(
    name="send-summary-batch",
    cache_policy=NONE,
    **MAIL_BATCH_RETRIES,
)
def send_summary_batch_task(batch_key: str, mail: SummaryMail) -> BatchOutcome:
    settings = get_settings()
    engine = get_engine(settings.resolved_database_url)
    return send_summary_batch(engine, settings, get_mailer(settings), batch_key, mail)


@task(name="summary-mail-report", cache_policy=NONE)
def summary_mail_report_task(planned: PlannedMail, year: int) -> MailReport:
    engine = get_engine(get_settings().resolved_database_url)
    return outbox.report(engine, year=year, kind=planned.kind, sequence=planned.sequence)
