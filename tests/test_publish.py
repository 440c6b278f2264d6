"""Publishing: the summary (HTML, Markdown), the indicator CSV and the stories CSV of a round.

The 2019 summary must state every figure of the published ECCP report (/work/shared/DOMAIN.md); expected values
are computed here from the example CSV files with the standard library.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from consult.indicators import compute_report, store_report
from consult.publish import publish_report
from db.engine import session_scope
from db.models import Publication, Round
from tests.factories import (
    accepted_reference_rows,
    add_reference_responses,
    add_responses,
    open_reference_round,
    panel_strands,
    split,
)

CSV_HEADER = ["round_year", "indicator", "dimension", "value", "previous_value", "change"]
DOMAIN_MARKETS = [("United States of America", "US", 8), ("Canada", "CA", 7), ("Japan", "JP", 7),
                  ("China", "CN", 5), ("Israel", "IL", 4), ("South Africa", "ZA", 4), ("India", "IN", 3),
                  ("Republic of Korea", "KR", 3)]


class _Text(HTMLParser):
    """The text a reader sees (no <style>, no <title> of the document), tags removed, entities decoded."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.tags: list[str] = []
        self._skip = 0

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        self.tags.append(tag)
        if tag in ("style", "head"):
            self._skip += 1

    def handle_endtag(self, tag):  # type: ignore[no-untyped-def]
        if tag in ("style", "head"):
            self._skip -= 1

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        if not self._skip:
            self.parts.append(data)


def html_text(html: str) -> tuple[str, list[str]]:
    parser = _Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts)), parser.tags


def publish(engine, year: int, out: Path):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        report = compute_report(session, year)
        store_report(session, report)
        return publish_report(session, report, out, flow_run_id=None)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


@pytest.fixture
def published_2019(engine, round_2019, tmp_path):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    return publish(engine, 2019, tmp_path / "out")


@pytest.fixture
def published_2020(engine, settings, round_2019, tmp_path):  # type: ignore[no-untyped-def]
    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
        open_reference_round(session, 2020, token_secret=settings.resolved_token_secret())
        add_reference_responses(session, 2020)
    return publish(engine, 2020, tmp_path / "out")


def summaries(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The reader's text of each summary: HTML as rendered text, Markdown with its escapes removed."""
    markdown = re.sub(r"\\(.)", r"\1", result.markdown.read_text(encoding="utf-8"))
    return {"html": html_text(result.html.read_text(encoding="utf-8"))[0], "md": markdown}


def narrative_of(text: str) -> str:
    """The text before the charts/tables: the narrative the reader meets first."""
    cut = min(i for i in (text.find("Charts"), text.find("## Overview")) if i > 0)
    return text[:cut]


def test_files_are_written_under_a_folder_per_round(published_2019, tmp_path):
    folder = tmp_path / "out" / "2019"
    assert sorted(p.name for p in folder.iterdir()) == [
        "indicators-2019.csv", "stories-2019.csv", "summary-2019.html", "summary-2019.md"]
    assert published_2019.html == folder / "summary-2019.html"


@pytest.mark.parametrize("kind", ["html", "md"])
def test_the_2019_summary_states_every_figure_of_the_published_report(published_2019, kind):
    """23 consulted, 19 responses, each market count with the US first and Canada second, the Strand 1 SME
    figures, 6 Strand 2 partnerships, 21 agreements, more than half planning missions, NF4's story."""
    text = summaries(published_2019)[kind]
    narrative = narrative_of(text)
    accepted = accepted_reference_rows(2019)
    strands = panel_strands()
    assert len(strands) == 23 and len(accepted) == 19
    assert "The 23 partnerships" in narrative and "consulted" in narrative
    assert "19 responses were collected" in narrative
    markets = Counter(code for row in accepted.values() for code in set(split(row["markets"])))
    for name, code, count in DOMAIN_MARKETS:
        assert markets[code] == count
        assert re.search(rf"{re.escape(name)}[^()]{{0,40}}\({count} partnerships", narrative), name
    assert re.search(r"United States of America is the most selected market \(8 partnerships\)", narrative)
    assert narrative.index("United States of America") < narrative.index("Canada") < narrative.index("China")
    assert "Canada and Japan share second place (7 partnerships each)" in narrative
    assert "No other market was selected by more than 2 partnerships" in narrative
    strand1 = Counter(o for pid, row in accepted.items() if strands[pid] == 1 for o in split(row["sme_involvement"]))
    strand1_text = narrative[narrative.index("Strand 1 partnerships (13"):narrative.index("Strand 2 partnerships (")]
    for label, option in [("Establishment of business contacts between members", "business_contacts"),
                          ("Knowledge sharing and information exchange", "knowledge_sharing"),
                          ("Joint business events", "joint_events")]:
        assert f"{label} ({strand1[option]} partnerships)" in strand1_text
    assert (strand1["business_contacts"], strand1["knowledge_sharing"], strand1["joint_events"]) == (8, 7, 4)
    strand2 = sum(1 for pid in accepted if strands[pid] == 2)
    assert f"Strand 2 partnerships ({strand2} responding partnerships) have been strongly involved in" in narrative
    strand2_text = narrative[narrative.index("Strand 2 partnerships ("):]
    for label in ("business contacts", "Knowledge sharing", "Exports/imports", "Soft-landing", "Joint business"):
        assert label in strand2_text
    agreements = sum(int(row["cooperation_agreements"]) for row in accepted.values())
    assert f"A total of {agreements} cooperation agreements" in narrative
    planned = sum(row["business_missions_planned"] == "yes" for row in accepted.values())
    assert planned / len(accepted) > 0.5
    assert "Most partnerships plan business missions to countries beyond Europe" in narrative
    assert f"{planned} of {len(accepted)} ({100 * planned / len(accepted):.1f}%)" in narrative
    assert "Natural Products Canada" in text


@pytest.mark.slow
def test_the_2019_csv_holds_every_figure_of_the_published_report(published_2019):
    header, rows = read_csv(published_2019.csv)
    assert header[:6] == CSV_HEADER
    values = {(row["indicator"], row["dimension"]): row["value"] for row in rows}
    assert all(row["round_year"] == "2019" for row in rows)
    assert values[("consulted", "")] == "23"
    assert values[("responses", "")] == "19"
    for _name, code, count in DOMAIN_MARKETS:
        assert values[("markets", f"option={code}")] == str(count)
    others = [int(row["value"]) for row in rows if row["indicator"] == "markets" and not row["group"]
              and row["dimension"].removeprefix("option=") not in {c for _, c, _ in DOMAIN_MARKETS}]
    assert max(others) <= 3
    assert values[("sme_involvement", "option=business_contacts;strand=1")] == "8"
    assert values[("sme_involvement", "option=knowledge_sharing;strand=1")] == "7"
    assert values[("sme_involvement", "option=joint_events;strand=1")] == "4"
    assert values[("responses", "strand=2")] == "6"
    assert values[("cooperation_agreements_sum", "")] == "21"
    assert float(values[("business_missions_planned_yes_share", "")]) > 50


def test_the_2020_summary_shows_changes_new_and_dropped_markets_and_the_new_question(published_2020):
    texts = summaries(published_2020)
    agreements = {y: sum(int(r["cooperation_agreements"]) for r in accepted_reference_rows(y).values())
                  for y in (2019, 2020)}
    for text in texts.values():
        narrative = narrative_of(text)
        assert f"{agreements[2020] - agreements[2019]} more than in 2019 ({agreements[2019]})" in narrative
        assert "India moved up from 7th to 5th place" in narrative
        assert "New market this year, not selected in 2019: Brazil (3 partnerships)" in narrative
        assert "No longer selected: Morocco (1 partnership in 2019)" in narrative
        assert "New question in 2020" in narrative and "not asked in 2019" in narrative
        # The renamed option is compared with its 2019 code, in the narrative and in the table.
        assert "Joint business events (6 partnerships; 4 of 13 in 2019)" in narrative
    assert re.search(r"Digital matchmaking tools used this year \| [^|]+ \| — \| new \|", texts["md"])


def test_the_2020_csv_has_changes_rank_changes_and_marks_the_new_question(published_2020):
    header, rows = read_csv(published_2020.csv)
    assert header[:6] == CSV_HEADER
    by_key = {(row["indicator"], row["dimension"]): row for row in rows}
    india = by_key[("markets", "option=IN")]
    assert (india["value"], india["previous_value"], india["change"], india["rank_change"]) == ("4", "3", "1", "2")
    brazil = by_key[("markets", "option=BR")]
    assert (brazil["previous_value"], brazil["change"], brazil["comparison"]) == ("0", "3", "added")
    morocco = by_key[("markets", "option=MA")]
    assert (morocco["value"], morocco["change"], morocco["comparison"]) == ("0", "-1", "dropped")
    digital = by_key[("digital_tools_yes_share", "")]
    assert (digital["previous_value"], digital["change"], digital["comparison"]) == ("", "", "new")
    joint = by_key[("sme_involvement", "option=joint_business_events")]
    assert (joint["value"], joint["previous_value"]) == ("11", "8")


def test_a_story_with_markup_and_a_formula_is_shown_as_text_and_neutralised(published_2020):
    """<script> is text in the HTML, escaped in the Markdown; =HYPERLINK( cannot run in a spreadsheet."""
    html = published_2020.html.read_text(encoding="utf-8")
    text, tags = html_text(html)
    assert "script" not in tags
    assert "<script>alert(1)</script>" in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    markdown = published_2020.markdown.read_text(encoding="utf-8")
    assert "<script>" not in markdown and r"\<script\>" in markdown
    _, stories = read_csv(published_2020.stories_csv)
    story = next(row["story"] for row in stories if "HYPERLINK" in row["story"])
    assert story.startswith("'=HYPERLINK(")
    for row in stories:
        for value in row.values():
            assert not value.startswith(("=", "+", "-", "@"))


def test_a_formula_in_any_text_cell_of_the_csv_exports_is_neutralised(engine, round_2019, tmp_path):
    with session_scope(engine) as session:
        add_responses(session, 2019, [{"partnership_id": "ESCP4I-05", "answers": {
            "markets": ["US"], "sme_involvement": ["other"], "cooperation_agreements": 1,
            "business_missions_planned": False, "sme_members": 3, "success_story": "@SUM(A1:A9) +1 -2"}}])
    result = publish(engine, 2019, tmp_path)
    _, stories = read_csv(result.stories_csv)
    assert [row["story"] for row in stories] == ["'@SUM(A1:A9) +1 -2"]
    _, rows = read_csv(result.csv)
    assert all(not row[c].startswith(("=", "+", "@")) for row in rows for c in ("indicator", "dimension"))


def test_republishing_the_same_data_gives_byte_identical_files(engine, published_2020, tmp_path):
    """Nothing in the files depends on the time of publishing; each publication is recorded with its hashes."""
    first = {p.name: p.read_bytes() for p in published_2020.paths}
    again = publish(engine, 2020, tmp_path / "out")
    assert {p.name: p.read_bytes() for p in again.paths} == first
    assert again.content_sha256 == published_2020.content_sha256
    with session_scope(engine) as session:
        publications = session.scalars(select(Publication).join(Round).where(Round.year == 2020)
                                       .order_by(Publication.id)).all()
        assert len(publications) == 2
        assert publications[-1].files == {name: hashlib.sha256(data).hexdigest() for name, data in first.items()}


def test_the_cli_publishes_and_prints_where_the_files_are(engine, settings, round_2019, tmp_path):
    """`consult publish 2019 --out DIR` runs the flow; `consult indicators 2019` prints the table."""
    from consult.cli_publish import app

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    runner = CliRunner()
    result = runner.invoke(app, ["publish", "2019", "--out", str(tmp_path / "site")])
    assert result.exit_code == 0, result.output
    html = tmp_path / "site" / "2019" / "summary-2019.html"
    assert str(html) in result.output and html.is_file()
    with session_scope(engine) as session:
        publication = session.scalars(select(Publication)).one()
        assert publication.flow_run_id  # published by a flow run, recorded
    listing = runner.invoke(app, ["indicators", "2019"])
    assert listing.exit_code == 0, listing.output
    assert re.search(r"markets\s+option=US\s+8\s", listing.output)


def test_publishing_a_round_that_does_not_exist_is_one_clear_error(engine, settings, tmp_path):
    from consult.cli_publish import app

    result = CliRunner().invoke(app, ["indicators", "2031"])
    assert result.exit_code != 0
    assert "round 2031 does not exist" in str(result.exception or result.output)


def test_the_publish_flow_posts_the_summary_and_the_indicators_as_artifacts(engine, settings, round_2019, tmp_path):
    """compute_and_publish: indicators stored, files written, the Markdown summary and the table in Prefect,
    under keys that name the round, attached to the flow run recorded with the publication."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    from flows.publish import compute_and_publish

    with session_scope(engine) as session:
        add_reference_responses(session, 2019)
    result = compute_and_publish(2019, str(tmp_path / "flow-out"))
    assert result.html.is_file() and result.html.parent == tmp_path / "flow-out" / "2019"
    with session_scope(engine) as session:
        publication = session.scalars(select(Publication)).one()
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["summary-2019", "indicators-2019"]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[publication.flow_run_id])))
    by_key = {artifact.key: artifact for artifact in artifacts}
    assert set(by_key) == {"summary-2019", "indicators-2019"}
    assert by_key["summary-2019"].type == "markdown"
    assert by_key["summary-2019"].data == result.markdown.read_text(encoding="utf-8")
    assert by_key["indicators-2019"].type == "table"
    assert "option=US" in str(by_key["indicators-2019"].data)
