"""Specification of the mail commands: `consult remind`, `consult outbox`, `consult reconcile`."""

from __future__ import annotations

import csv

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from consult import settings as settings_module
from consult.cli_mail import app
from db.engine import session_scope
from db.models import OutboxMessage
from flows.mailing import send_invitations
from tests.conftest import EXAMPLES

runner = CliRunner()


def panel_size() -> int:
    with (EXAMPLES / "panel.csv").open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def test_remind_force_sends_one_now_and_says_how_many(engine, settings, round_2019):
    """`consult remind 2019 --force` reminds every contact (nobody answered yet) and prints the counts;
    `consult outbox 2019` then shows them sent."""
    result = runner.invoke(app, ["remind", "2019", "--force"])
    assert result.exit_code == 0, result.output
    assert f"{panel_size()} planned: {panel_size()} sent, 0 skipped, 0 failed, 0 unknown" in result.output
    table = runner.invoke(app, ["outbox", "2019"])
    assert table.exit_code == 0
    (line,) = [row for row in table.output.splitlines() if row.startswith("reminder")]
    assert line.split()[2:] == ["0", "0", str(panel_size()), "0", "0", "0"]


def test_reconcile_lists_what_it_cannot_resolve_and_exits_non_zero(engine, settings, round_2019, monkeypatch):
    """With a provider that keeps no record we can read (SendGrid, SMTP), messages of unknown fate without
    delivery events stay unknown: reconcile names them and exits 2; with --release they go back to pending."""
    send_invitations(2019)
    with session_scope(engine) as session:
        session.execute(update(OutboxMessage).where(OutboxMessage.id <= 2).values(state="unknown"))
    monkeypatch.setenv("CONSULT_MAIL_BACKEND", "smtp")
    settings_module.get_settings.cache_clear()
    result = runner.invoke(app, ["reconcile", "2019"])
    assert result.exit_code == 2
    assert "2 still unknown" in result.output and "unknown outbox ids: 1, 2" in result.output
    released = runner.invoke(app, ["reconcile", "2019", "--release"])
    assert released.exit_code == 0 and "2 released for sending" in released.output


def test_an_unknown_round_is_named(engine, settings):
    """Reminding a round that was never opened is one clear error naming the year."""
    result = runner.invoke(app, ["remind", "2031", "--force"])
    assert result.exit_code != 0
    assert "round 2031 does not exist" in str(result.exception)


@pytest.mark.slow
def test_outbox_lists_the_stakeholders_copies_of_the_summary(engine, settings, round_2019, tmp_path):
    """Stakeholders have no partnership: after invitations and the summary mail to a three-address list,
    `consult outbox 2019` counts the `summary` kind and lists one `(stakeholder)` line per address, sent, next to
    the contacts' invitations."""
    from flows.publish import publish_and_send_summary
    from tests.factories import add_reference_responses

    send_invitations(2019)
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    stakeholders = ["minister.office@example.org", "press@example.com", "board@example.net"]
    path = tmp_path / "stakeholders.csv"
    path.write_text("email,name\n" + "".join(f"{address},Reader {n}\n" for n, address in enumerate(stakeholders)),
                    encoding="utf-8")
    publish_and_send_summary(2019, str(path), str(tmp_path / "out"))

    result = runner.invoke(app, ["outbox", "2019"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    (counts,) = [line for line in lines if line.startswith("summary")]
    assert counts.split()[2:] == ["0", "0", str(len(stakeholders)), "0", "0", "0"]
    listed = [line.split() for line in lines if line.startswith("(stakeholder)")]
    assert sorted(fields[4] for fields in listed) == sorted(stakeholders)
    assert all(fields[1] == "summary" and fields[3] == "sent" for fields in listed)
    invitations = [line for line in lines if line.split()[1:2] == ["invitation"] and not line.startswith("invitation")]
    assert len(invitations) == panel_size()
