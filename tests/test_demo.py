"""The Quick start's first command: `consult demo` runs the 2019 and 2020 reference rounds end to end.

Expected figures are computed here from the example CSV files with the standard library only, independently of
the engine's ingest and indicator code.
"""

from __future__ import annotations

import csv
import json
import os
import re
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from db.models import IngestedFile, OutboxMessage, Partnership, QuarantinedRow, Response, Round
from tests.conftest import EXAMPLES

# One worker runs the whole module: the demo runs once (twice) per module, not once per worker.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("demo")]


def accepted_rows(year: int) -> list[dict[str, str]]:
    """Latest complete submission per partnership of the panel."""
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        known = {row["partnership_id"] for row in csv.DictReader(handle)}
    with open(EXAMPLES / f"responses-{year}.csv", encoding="utf-8", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["submitted_at"] and row["partnership_id"] in known]
    latest: dict[str, dict[str, str]] = {}
    for row in sorted(rows, key=lambda row: row["submitted_at"]):
        latest[row["partnership_id"]] = row
    return list(latest.values())


def strands() -> dict[str, str]:
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        return {row["partnership_id"]: row["strand"] for row in csv.DictReader(handle)}


def market_counts(year: int) -> Counter[str]:
    return Counter(code for row in accepted_rows(year) for code in row["markets"].split(";") if code)


DEMO_PORTS: dict[Path, int] = {}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("PREFECT_API", "CONSULT_"))
    }
    env |= {
        "CONSULT_DATA_DIR": str(workdir / "data"),
        "CONSULT_OUTPUT_DIR": str(workdir / "output"),
        "PREFECT_HOME": str(workdir / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # The local server's port: one of its own (4200 may be taken on a shared machine; said in a note then).
        "CONSULT_PREFECT_PORT": str(DEMO_PORTS.setdefault(workdir, free_port())),
    }
    consult = Path(sys.executable).parent / "consult"
    return subprocess.run([str(consult), "demo"], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=900, check=False)


def prefect_ui_check(workdir: Path, stdout: str) -> dict[str, object]:
    """What an analyst finds at the addresses the demo printed, asked of the local server it left running:
    the artifact keys the API lists and whether each printed UI page is served."""
    state = json.loads((workdir / "data" / "prefect" / "server.json").read_text())
    listed = httpx.post(f"{state['url']}/api/artifacts/filter", json={"limit": 100}, timeout=10).json()
    pages = re.findall(r"data-quality report (\d{4}) in the Prefect UI: (\S+)", stdout)
    served = {
        year: httpx.get(address, headers={"Accept": "text/html"}, timeout=10).status_code for year, address in pages
    }
    return {"url": state["url"], "keys": {item["key"] for item in listed}, "pages": pages, "served": served}


@pytest.fixture(scope="module")
def demo_twice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str], dict]:
    """The demo run twice in a fresh folder, with the database counts after each run (and, under "ui", what
    the local Prefect server the first run started shows; it is stopped afterwards)."""
    if "demo_twice" in _RUN:  # pytest-xdist may tear module fixtures down between a module's tests: run once
        return _RUN["demo_twice"]
    workdir = tmp_path_factory.mktemp("demo")
    counts: list[dict] = []
    try:
        ui = _run_twice(workdir, counts)
    finally:
        consult = Path(sys.executable).parent / "consult"
        subprocess.run([str(consult), "server", "stop"], cwd=workdir, timeout=120, check=False, capture_output=True,
                       env={**os.environ, "CONSULT_DATA_DIR": str(workdir / "data")})
    first, ui_seen = ui
    _RUN["demo_twice"] = (workdir, first, {"first": counts[0], "second": counts[1], "ui": ui_seen})
    return _RUN["demo_twice"]


_RUN: dict[str, tuple[Path, subprocess.CompletedProcess[str], dict]] = {}


def _run_twice(workdir: Path, counts: list[dict]) -> tuple[subprocess.CompletedProcess[str], dict]:
    first = None
    ui_seen: dict = {}
    for _ in range(2):
        result = run_demo(workdir)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if first is None:
            first = result
            ui_seen = prefect_ui_check(workdir, result.stdout)
        engine = create_engine(f"sqlite:///{workdir / 'data' / 'consult.db'}")
        with engine.connect() as connection:
            counts.append({
                model.__tablename__: connection.scalar(select(func.count()).select_from(model))
                for model in (Partnership, Round, Response, OutboxMessage, IngestedFile, QuarantinedRow)
            })
        engine.dispose()
    return first, ui_seen


def summary(workdir: Path, year: int, suffix: str = "md") -> str:
    return (workdir / "output" / str(year) / f"summary-{year}.{suffix}").read_text(encoding="utf-8")


def test_the_demo_prints_where_the_summary_and_the_quality_report_are(demo_twice):
    workdir, result, _ = demo_twice
    for year in (2019, 2020):
        assert f"summary-{year}.html" in result.stdout
        assert f"dq-{year}" in result.stdout or "data-quality" in result.stdout
        assert (workdir / "output" / str(year) / f"summary-{year}.html").is_file()
        assert (workdir / "output" / str(year) / f"indicators-{year}.csv").is_file()


def test_the_demo_ends_with_the_data_quality_reports_in_the_prefect_ui_it_left_running(demo_twice):
    """The demo starts the local Prefect server, says so once, and ends with the address of each year's
    data-quality report in its UI; the server it left running serves those pages and holds those reports."""
    _, result, counts = demo_twice
    ui = counts["ui"]
    lines = result.stdout.strip().splitlines()
    assert [line for line in lines if "started the local Prefect server" in line] == [
        f"started the local Prefect server: UI at {ui['url']} (stop it with `consult server stop`)"
    ]
    assert lines[-1] == f"data-quality report 2020 in the Prefect UI: {ui['url']}/artifacts/key/dq-2020"
    assert ui["pages"] == [(str(year), f"{ui['url']}/artifacts/key/dq-{year}") for year in (2019, 2020)]
    assert ui["served"] == {"2019": 200, "2020": 200}
    assert {"dq-2019", "dq-2020", "summary-2019", "summary-2020"} <= ui["keys"]


def test_running_the_demo_twice_duplicates_nothing(demo_twice):
    """No partnership, round, response, file or message is stored twice by a second run."""
    _, _, counts = demo_twice
    assert counts["first"] == counts["second"]
    assert counts["first"]["partnerships"] == 23
    assert counts["first"]["rounds"] == 2


def test_the_2019_summary_states_consulted_and_responses(demo_twice):
    text = summary(demo_twice[0], 2019)
    assert re.search(r"\b23 partnerships\b.*\bconsulted\b|\bconsulted\b.*\b23\b", text, re.DOTALL | re.IGNORECASE)
    assert re.search(r"\b19 responses\b", text, re.IGNORECASE)
    assert len(accepted_rows(2019)) == 19


def test_the_2019_summary_ranks_the_united_states_first_and_canada_second(demo_twice):
    """Every market count of the published report appears, with the United States first and Canada second."""
    text = summary(demo_twice[0], 2019)
    counts = market_counts(2019)
    assert counts.most_common(1) == [("US", 8)]
    narrative = text[: text.find("\n#", 10) if "\n#" in text[10:] else len(text)]
    assert "United States of America" in text and "(8 partnerships)" in text
    assert text.index("United States of America") < text.index("Canada")
    for name, count in [("Canada", 7), ("Japan", 7), ("China", 5), ("Israel", 4), ("South Africa", 4),
                        ("India", 3), ("Republic of Korea", 3)]:
        assert re.search(rf"{re.escape(name)}\D{{0,40}}\b{count}\b", text), (name, count)
    assert narrative


def test_the_2019_summary_gives_strand_1_sme_involvement_and_strand_2_size(demo_twice):
    text = summary(demo_twice[0], 2019)
    by_strand = strands()
    strand1 = Counter(option for row in accepted_rows(2019) if by_strand[row["partnership_id"]] == "1"
                      for option in row["sme_involvement"].split(";") if option)
    assert (strand1["business_contacts"], strand1["knowledge_sharing"], strand1["joint_events"]) == (8, 7, 4)
    for label, count in [("business contacts", 8), ("nowledge sharing", 7), ("oint business events", 4)]:
        assert re.search(rf"{label}\D{{0,60}}\b{count}\b", text, re.IGNORECASE), (label, count)
    strand2 = sum(1 for row in accepted_rows(2019) if by_strand[row["partnership_id"]] == "2")
    assert strand2 == 6
    assert re.search(r"Strand 2\D{0,80}\b6\b", text)


def test_the_2019_summary_counts_21_cooperation_agreements(demo_twice):
    text = summary(demo_twice[0], 2019)
    total = sum(int(row["cooperation_agreements"]) for row in accepted_rows(2019))
    assert total == 21
    assert re.search(rf"\b{total}\b cooperation agreements", text, re.IGNORECASE)


def test_the_2020_summary_shows_year_over_year_changes(demo_twice):
    text = summary(demo_twice[0], 2020)
    before, after = market_counts(2019), market_counts(2020)
    assert before["JP"] != after["JP"]
    assert "2019" in text
    total_2019 = sum(int(row["cooperation_agreements"]) for row in accepted_rows(2019))
    total_2020 = sum(int(row["cooperation_agreements"]) for row in accepted_rows(2020))
    assert re.search(rf"\b{total_2020}\b", text) and re.search(rf"\b{total_2019}\b", text)
    assert f"+{total_2020 - total_2019}" in text
    new_markets = set(after) - set(before)
    assert new_markets == {"BR"}
    assert "Brazil" in text


def test_the_indicators_csv_has_the_documented_columns(demo_twice):
    path = demo_twice[0] / "output" / "2020" / "indicators-2020.csv"
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames[:6] == ["round_year", "indicator", "dimension", "value", "previous_value", "change"]
        rows = list(reader)
    assert all(row["round_year"] == "2020" for row in rows)


def test_invitations_reach_every_contact_and_reminders_only_non_respondents(demo_twice):
    workdir = demo_twice[0]
    engine = create_engine(f"sqlite:///{workdir / 'data' / 'consult.db'}")
    with open(EXAMPLES / "panel.csv", encoding="utf-8") as handle:
        panel = list(csv.DictReader(handle))
    responded = {row["partnership_id"] for row in accepted_rows(2019)}
    with engine.connect() as connection:
        sent = connection.execute(
            select(OutboxMessage.kind, Partnership.code, OutboxMessage.recipient)
            .join(Partnership, Partnership.id == OutboxMessage.partnership_id)
            .join(Round, Round.id == OutboxMessage.round_id)
            .where(Round.year == 2019, OutboxMessage.state == "sent")
        ).all()
    engine.dispose()
    invitations = sorted(recipient for kind, _, recipient in sent if kind == "invitation")
    assert invitations == sorted(row["contact_email"] for row in panel)
    reminded = {code for kind, code, _ in sent if kind == "reminder"}
    assert reminded == {row["partnership_id"] for row in panel} - responded
