"""The ingest flow and its command line: the data-quality report in the Prefect UI, a task count that does not
grow with the files, and the analysts' quarantine review."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from sqlalchemy import func, select
from typer.testing import CliRunner

from consult.cli import app as cli_app
from consult.errors import ConsultError
from db.engine import session_scope
from db.models import IngestedFile, Response
from flows.ingest import ingest_responses
from tests.factories import EXAMPLES

HEADER = ("partnership_id,submitted_at,markets,sme_involvement,cooperation_agreements,business_missions_planned,"
          "sme_members,success_story")


def latest_artifact(key: str, flow_run_id):  # type: ignore[no-untyped-def]
    """The artifact ``key`` as the given flow run left it (the session's server is shared by parallel tests)."""
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))
    assert found, f"no artifact {key}"
    return max(found, key=lambda artifact: artifact.created)


def task_run_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return sorted(run.name.rsplit("-", 1)[0] for run in runs)


@pytest.mark.slow
def test_flow_posts_a_readable_data_quality_report(engine, settings, round_2019, tmp_path):
    """After the reference file: a Markdown report with the counts and the failed checks, a table of the
    quarantined row, and a link to Data Docs that exist on disk."""
    state = ingest_responses(2019, [str(EXAMPLES / "responses-2019.csv")], return_state=True)
    summary = state.result()
    assert (summary.files[0].accepted, summary.files[0].quarantined) == (19, 1)
    run_id = state.state_details.flow_run_id

    markdown = latest_artifact("dq-2019", run_id).data
    assert "22 rows: **19 accepted**, 1 superseded, 1 partial (not counted), **1 quarantined**" in markdown
    assert "| partnership matched | partnership | error | FAILED | 1 of 22 | `unknown partnership ESCP4I-99` |" in markdown
    assert "| range (expect_column_values_to_be_between) | cooperation_agreements | error | passed | 0 of 21 |" in markdown

    table = latest_artifact("dq-2019-quarantine", run_id).data
    assert "ESCP4I-99" in str(table) and "unknown partnership ESCP4I-99" in str(table)

    link = latest_artifact("dq-2019-data-docs", run_id).data  # Markdown: [Data Docs 2019](file:///.../index.html)
    target = link.split("](", 1)[1].rstrip(")")
    assert target.startswith("file://") and target.endswith("index.html")
    docs = Path(target.removeprefix("file://"))
    assert docs.is_file() and docs.is_relative_to(settings.output_dir.resolve())
    assert (settings.output_dir / "data-quality" / "dq-2019.md").read_text(encoding="utf-8") == markdown


@pytest.mark.slow
def test_task_runs_do_not_grow_with_the_number_of_files(engine, settings, round_2019, tmp_path):
    """One task per stage: one file or three files, the flow runs the same six tasks."""
    paths = []
    for number in range(3):
        path = tmp_path / f"part-{number}.csv"
        path.write_text(f"{HEADER}\nESCP4I-0{number + 1},2019-04-0{number + 1}T10:00:00,US,other,1,yes,5,\n")
        paths.append(str(path))
    one = ingest_responses(2019, paths[:1], return_state=True)
    three = ingest_responses(2019, paths, return_state=True)
    expected = sorted(["read-response-files", "match-partnerships", "validate-responses", "store-responses",
                       "write-data-docs", "publish-data-quality-report"])
    assert task_run_names(one.state_details.flow_run_id) == expected
    assert task_run_names(three.state_details.flow_run_id) == expected
    summary = three.result()
    assert [f.skipped_as_duplicate_file for f in summary.files] == [True, False, False]


def test_flow_stops_on_an_unreadable_file_and_stores_nothing(engine, settings, round_2019, tmp_path):
    """A file with no question column names itself in the error; the good file before it is not stored."""
    stray = tmp_path / "contacts.csv"
    stray.write_text("name,phone\nAda,123\n")
    with pytest.raises(ConsultError, match=r"contacts\.csv: no recognisable question column"):
        ingest_responses(2019, [str(EXAMPLES / "responses-2019.csv"), str(stray)])
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(IngestedFile)) == 0


def test_values_from_the_file_are_escaped_in_the_report(engine, settings, round_2019, tmp_path):
    """A partnership id carrying HTML shows up escaped in the Markdown report and the quarantine table."""
    path = tmp_path / "evil.csv"
    path.write_text(f'{HEADER}\n"<img src=x onerror=alert(1)>",2019-04-01T10:00:00,US,other,1,yes,5,\n')
    run_id = ingest_responses(2019, [str(path)], return_state=True).state_details.flow_run_id
    markdown = latest_artifact("dq-2019", run_id).data
    assert "<img" not in markdown and "&lt;img src=x onerror=alert(1)&gt;" in markdown
    table = str(latest_artifact("dq-2019-quarantine", run_id).data)
    assert "<img" not in table and "&lt;img" in table


@pytest.mark.slow
def test_cli_ingest_then_review_the_quarantine(engine, settings, round_2019):
    """`consult ingest` prints the counts; `consult quarantine list/show/accept` review the unknown partnership."""
    runner = CliRunner()
    result = runner.invoke(cli_app, ["ingest", "2019", str(EXAMPLES / "responses-2019.csv")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "responses-2019.csv: 22 rows, 19 accepted, 1 superseded, 1 partial, 1 quarantined" in result.output

    listed = runner.invoke(cli_app, ["quarantine", "list", "2019"], catch_exceptions=False)
    assert "row 21" in listed.output and "unknown partnership ESCP4I-99" in listed.output
    row_id = listed.output.split()[0]

    shown = runner.invoke(cli_app, ["quarantine", "show", "2019", row_id], catch_exceptions=False)
    assert 'partnership_id: "ESCP4I-99"' in shown.output

    accepted = runner.invoke(
        cli_app, ["quarantine", "accept", "2019", row_id, "--partnership", "ESCP4I-07", "--note", "renamed"],
        catch_exceptions=False,
    )
    assert accepted.exit_code == 0, accepted.output
    assert "accepted as response" in accepted.output
    with session_scope(engine) as session:
        assert session.scalar(select(func.count()).select_from(Response).where(Response.status == "accepted")) == 20
    listed = runner.invoke(cli_app, ["quarantine", "list", "2019"], catch_exceptions=False)
    assert "no open quarantined row" in listed.output


@pytest.mark.slow
def test_cli_files_list_show_and_export_give_back_what_was_received(engine, settings, round_2019, tmp_path):
    """The file is kept byte for byte: listed with its SHA-256, a row shown cell by cell, exported unchanged;
    a wrong file id or row is one line naming it."""
    source = EXAMPLES / "responses-2019.csv"
    runner = CliRunner()
    runner.invoke(cli_app, ["ingest", "2019", str(source)], catch_exceptions=False)
    listed = runner.invoke(cli_app, ["files", "list", "2019"], catch_exceptions=False)
    assert "responses-2019.csv  22 rows" in listed.output
    assert hashlib.sha256(source.read_bytes()).hexdigest()[:16] in listed.output
    file_id = listed.output.split()[0]

    shown = runner.invoke(cli_app, ["files", "show", "2019", file_id, "9"], catch_exceptions=False)
    assert 'partnership_id: "ESCP4I-09"' in shown.output
    assert "\\n" in shown.output.split("success_story: ")[1]  # the two-line story, its line break visible

    exported = runner.invoke(cli_app, ["files", "export", "2019", file_id, "--to", str(tmp_path)],
                             catch_exceptions=False)
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "responses-2019.csv").read_bytes() == source.read_bytes()
    again = runner.invoke(cli_app, ["files", "export", "2019", file_id, "--to", str(tmp_path)])
    assert again.exit_code != 0 and "already exists" in str(again.exception)

    missing_row = runner.invoke(cli_app, ["files", "show", "2019", file_id, "99"])
    assert "responses-2019.csv has no row 99 (rows 2..23)" in str(missing_row.exception)
    missing_file = runner.invoke(cli_app, ["files", "export", "2019", "999"])
    assert "round 2019 has no ingested file 999" in str(missing_file.exception)


@pytest.mark.slow
def test_cli_quarantine_accept_refuses_a_fix_that_is_still_invalid(engine, settings, round_2019, tmp_path):
    """Accepting with a wrong fix stops with one line and leaves the row in quarantine."""
    path = tmp_path / "bad.csv"
    path.write_text(f"{HEADER}\nESCP4I-01,2019-04-01T10:00:00,US,other,abc,yes,5,\n")
    runner = CliRunner()
    runner.invoke(cli_app, ["ingest", "2019", str(path)], catch_exceptions=False)
    row_id = runner.invoke(cli_app, ["quarantine", "list", "2019"]).output.split()[0]
    result = runner.invoke(cli_app, ["quarantine", "accept", "2019", row_id, "--set", "cooperation_agreements=x1"])
    assert isinstance(result.exception, ConsultError)
    assert "'x1' is not a whole number" in str(result.exception)
    rejected = runner.invoke(cli_app, ["quarantine", "reject", "2019", row_id, "--note", "spam"], catch_exceptions=False)
    assert "rejected" in rejected.output
    listed = runner.invoke(cli_app, ["quarantine", "list", "2019", "--status", "rejected"], catch_exceptions=False)
    assert "rejected" in listed.output and "'abc' is not a whole number" in listed.output
