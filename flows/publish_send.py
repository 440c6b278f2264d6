"""Publish a round's summary, then send it to a stakeholder list: read list -> compute_indicators ->
publish_summary -> artifacts -> render -> plan -> send each batch -> report."""

from __future__ import annotations

from prefect import allow_failure, flow, unmapped
from prefect.task_runners import ThreadPoolTaskRunner

from consult.mail.outbox import MailReport
from consult.publish import PublishResult
from flows.mailing import MAIL_CONCURRENCY
from tasks.indicators import compute_indicators
from tasks.publish import post_summary_artifacts, publish_summary
from tasks.publish_mail import (
    plan_summary_mail_task,
    read_stakeholders_task,
    render_summary_mail_task,
    send_summary_batch_task,
    summary_mail_report_task,
)


@flow(name="publish-and-send-summary", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=MAIL_CONCURRENCY))
def publish_and_send_summary(year: int, stakeholders_file: str,
                             out_dir: str | None = None) -> tuple[PublishResult, MailReport]:
    """Check the stakeholder list, publish as :func:`flows.publish.compute_and_publish`, then send the summary
    (HTML attached) once to each address of the list: a re-run with the same published content sends nothing
    again."""
    stakeholders = read_stakeholders_task(stakeholders_file)
    report = compute_indicators(year)
    result = publish_summary(report, out_dir)
    post_summary_artifacts(report, result)
    mail = render_summary_mail_task(report, result)
    planned = plan_summary_mail_task(result, stakeholders)
    sent = send_summary_batch_task.map(planned.batch_keys, mail=unmapped(mail))
    mail_report = summary_mail_report_task(planned, year, wait_for=[allow_failure(sent)])
    sent.result()  # a batch that failed for good fails the run, once the report says where things stand
    return result, mail_report
