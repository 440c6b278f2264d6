"""The Great Expectations Data Docs of a hostile file: the value is quarantined and shown as text, the pages run
no script and make no network request (checked in Debian's headless Chromium), and they stay small."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from db.engine import session_scope
from db.models import QuarantinedRow
from tests.conftest import EXAMPLES
from tests.test_ingest_refusals import run_consult
from tests.test_summary_browser import (
    CHROMIUM,
    browser,  # noqa: F401 - the fixture, used by name
    evaluate,
    open_page,
    problems,
)

pytestmark = pytest.mark.slow

HOSTILE = "<img src=x onerror=alert(document.domain)>"


def write_with_answer(path: Path, column: str, values: list[str]) -> None:
    """The reference 2019 export with ``column`` of its first rows replaced by ``values``."""
    with open(EXAMPLES / "responses-2019.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    position = rows[0].index(column)
    for row, value in zip(rows[1:], values, strict=False):
        row[position] = value
    with open(path, "w", encoding="utf-8", newline="") as handle:
        csv.writer(handle).writerows(rows)


def validation_pages(settings) -> list[Path]:
    return sorted((settings.output_dir / "data-docs" / "2019" / "validations").rglob("*.html"))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_hostile_answer_is_quarantined_and_shown_only_escaped_in_the_data_docs(tmp_path, engine, settings,
                                                                                 round_2019):
    path = tmp_path / "hostile.csv"
    write_with_answer(path, "business_missions_planned", [HOSTILE])
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with session_scope(engine) as session:
        raws = [row.raw for row in session.scalars(select(QuarantinedRow))]
    assert any(raw.get("business_missions_planned") == HOSTILE for raw in raws)

    docs = settings.output_dir / "data-docs" / "2019"
    pages = sorted(docs.rglob("*.html"))
    assert docs / "index.html" in pages and validation_pages(settings)
    page_text = validation_pages(settings)[0].read_text(encoding="utf-8")
    assert "&lt;img src=x onerror=alert(document.domain)&gt;" in page_text
    for page in pages:
        text = page.read_text(encoding="utf-8")
        assert "<img src=x" not in text, page
        assert "<script" not in text.lower(), page
        assert "Content-Security-Policy" in text and "script-src 'none'" in text, page
        assert not re.search(r"<(?:link|img|script)\b[^>]*(?:href|src)=\"(?:https?:)?//", text), page
    index = (docs / "index.html").read_text(encoding="utf-8")
    assert "hostile.csv" in index and "failed" in index


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)")
@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_data_docs_of_a_hostile_answer_run_nothing_and_request_nothing_in_chromium(tmp_path, engine, settings,
                                                                                       round_2019, browser):  # noqa: F811
    path = tmp_path / "hostile.csv"
    write_with_answer(path, "business_missions_planned", [HOSTILE])
    assert run_consult("ingest", "2019", str(path), cwd=tmp_path).returncode == 0
    docs = settings.output_dir / "data-docs" / "2019"
    for page in [docs / "index.html", validation_pages(settings)[0]]:
        url = page.resolve().as_uri()
        browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": "window.__alerts = 0;"})
        open_page(browser, url, width=1100, height=900, mobile=False)
        # Only the page and its own stylesheet/images beside it, never the network.
        found = [item for item in problems(browser, url)
                 if not item.startswith(f"network request: {docs.resolve().as_uri()}/")]
        assert found == [], found
        assert not any(event.get("method") == "Page.javascriptDialogOpening" for event in browser.events)
        assert evaluate(browser, "document.scripts.length") == 0
        assert evaluate(browser, "document.querySelectorAll('img[src=\"x\"]').length") == 0
    # On the validation page the answer reads as text, exactly as it was written.
    assert evaluate(browser, f"document.body.innerText.includes({HOSTILE!r})")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_data_docs_show_a_capped_sample_while_every_invalid_row_is_quarantined(tmp_path, engine, settings,
                                                                                   round_2019):
    """15 distinct bad yes/no answers, a cap of 5 (CONSULT_DATA_DOCS_MAX_UNEXPECTED): all 15 rows go to quarantine
    with their values, the Data Docs page lists 5 of them and the exact count."""
    answers = [f"maybe-{number:02d}" for number in range(15)]
    path = tmp_path / "many.csv"
    write_with_answer(path, "business_missions_planned", answers)
    result = run_consult("ingest", "2019", str(path), cwd=tmp_path, env={"CONSULT_DATA_DOCS_MAX_UNEXPECTED": "5"})
    assert result.returncode == 0, result.stderr
    with session_scope(engine) as session:
        values = {row.raw.get("business_missions_planned") for row in session.scalars(select(QuarantinedRow))}
    assert set(answers) <= values
    page = validation_pages(settings)[0].read_text(encoding="utf-8")
    shown = {answer for answer in answers if answer in page}
    assert len(shown) == 5, shown
    assert "15 unexpected values found" in page
