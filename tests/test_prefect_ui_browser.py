"""An analyst reads the round's data-quality report in the Prefect UI, rendered by a real headless Chromium
(Debian's `chromium`) against the real Prefect server that ran the round."""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from html import unescape
from pathlib import Path

import prefect_server as harness
import pytest

# One xdist worker for every test of the deployed server: it and its reference round run are made once.
pytestmark = [
    pytest.mark.browser, pytest.mark.prefect_server, pytest.mark.slow, pytest.mark.xdist_group("deployed-server")
]

CHROMIUM = harness.chromium_binary()
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1800,2200",
    # The UI is a single-page app: let its scripts fetch from the API and render before the DOM is taken.
    "--virtual-time-budget=20000",
]


def chromium(*args: str) -> str:
    """Run headless Chromium with a throw-away profile; return what it printed (the DOM for --dump-dom)."""
    assert CHROMIUM is not None
    with tempfile.TemporaryDirectory(prefix="consult-chromium-") as profile:
        result = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def dump_dom_showing(url: str, pattern: str, patience_s: float = 90.0) -> str:
    """The page's DOM once it shows ``pattern`` (a regex), asking again until ``patience_s`` have passed: the UI
    fetches its lists after the first render, and on a machine busy with the rest of the suite (the shared server
    writing other tests' runs to its SQLite database) one page load does not always get them."""
    deadline = time.monotonic() + patience_s
    while True:
        dom = chromium("--dump-dom", url)
        if re.search(pattern, dom) or time.monotonic() > deadline:
            return dom
        time.sleep(2)


def visible_text(dom: str) -> str:
    without_code = re.sub(r"<(script|style)\b.*?</\1>", " ", dom, flags=re.DOTALL | re.IGNORECASE)
    return " ".join(unescape(re.sub(r"<[^>]+>", " ", without_code)).split())


@pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install -y chromium)"
)
def test_the_data_quality_report_of_a_round_is_readable_in_the_prefect_ui(test_output_dir: Path) -> None:
    """Opening Artifacts > dq-2019 shows the report's title and its latest version; following that version
    shows the report itself as the analyst reads it: the file, how many rows were accepted, the unknown
    partnership that was quarantined. A screenshot of the report is saved in test-output/."""
    run = harness.reference_round_run()
    server = harness.shared_server()
    assert run.flow_run.state.is_completed()
    expected = harness.reference_figures(2019)

    key_url = f"{server.url}/artifacts/key/dq-2019"
    key_page = dump_dom_showing(key_url, r'href="/artifacts/artifact/')
    assert "Data quality of round 2019" in visible_text(key_page)
    versions = re.findall(r'href="(/artifacts/artifact/[0-9a-f-]{36})"', key_page)
    assert versions, "the artifact's page lists no version to open"

    report_url = f"{server.url}{versions[0]}"
    report = visible_text(dump_dom_showing(report_url, "Data quality: round 2019"))
    assert "Data quality: round 2019" in report
    assert "responses-2019.csv" in report
    assert f"{expected['accepted']} accepted" in report
    assert f"{expected['rows']} rows" in report
    for unknown in expected["unknown"]:  # type: ignore[attr-defined]
        assert f"unknown partnership {unknown}" in report
    screenshot = test_output_dir / "prefect-ui-dq-2019.png"
    chromium(f"--screenshot={screenshot}", report_url)
    assert screenshot.stat().st_size > 10_000
