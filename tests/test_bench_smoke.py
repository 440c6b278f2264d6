"""The benchmark scripts still run (on small inputs): a benchmark that rots is found here, not on release day.

They print figures; goals are judged on full-size runs of the scripts, never by timing inside a test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

SMALL_RUNS = {
    "bench_indicators.py": ["--rows", "5000", "--repeat", "1"],
    "bench_send.py": ["--contacts", "2000"],
    "bench_ingest.py": ["--rows", "5000", "--no-postgres"],
}


@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_the_benchmark_script_runs_and_prints_its_baseline(script, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *SMALL_RUNS[script]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "baseline" in result.stdout.lower() or "floor" in result.stdout.lower() or "bare" in result.stdout.lower()
