"""The benchmark scripts still run (on small inputs): a benchmark that rots is found here, not on release day.

They print figures; goals are judged on full-size runs of the scripts, never by timing inside a test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_ADMIN_URL, REPO_ROOT

pytestmark = pytest.mark.slow

SMALL_RUNS = {
    "bench_commands.py": ["--quick", "--repeat", "1"],
    "bench_indicators.py": ["--rows", "5000", "--repeat", "1"],
    "bench_send.py": ["--contacts", "2000"],
    "bench_form.py": ["--partnerships", "5", "--postgres-admin-url", POSTGRES_ADMIN_URL],
    # One repeat, without the to_sql comparison: each measurement is a process of its own (forked, imports done).
    "bench_ingest.py": ["--rows", "2000", "--repeat", "1", "--no-to-sql", "--postgres-admin-url", POSTGRES_ADMIN_URL],
}


@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_the_benchmark_script_runs_and_prints_its_baseline(script, tmp_path):
    databases_before = _bench_databases()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CONSULT_")}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "bench" / script), *SMALL_RUNS[script]],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "baseline" in result.stdout.lower() or "floor" in result.stdout.lower() or "bare" in result.stdout.lower()
    if script == "bench_commands.py":  # each flow command next to its plain functions and its bare flow
        for command in ("ingest", "publish"):
            row = rf"^{command} +[\d.]+ +[\d.]+ +[\d.]+ \(\d+t\) +[\d.]+x +[\d.]+x"
            assert re.search(row, result.stdout, re.MULTILINE)
            # and where its goals lie against the floor measured in the same run
            assert re.search(rf"^{command}: within 1.5x bare \([\d.]+ s\): (met|NOT met)", result.stdout, re.MULTILINE)
    if script == "bench_ingest.py":  # the bench's databases dropped after
        assert "1 repeat(s); medians" in result.stdout
        assert "== PostgreSQL" in result.stdout
        # the same-work peer, on each database, with the two ratios of issue 15
        assert result.stdout.count("same-work peer (read_csv + the same GX suite") == 2
        assert len(re.findall(r"ingest / peer: [\d.]+x", result.stdout)) == 2
        assert len(re.findall(r"ingest / \(floor \+ validate\): [\d.]+x", result.stdout)) == 2
        assert _bench_databases() == databases_before


def _bench_databases() -> set[str]:
    admin = create_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.connect() as connection:
            return set(connection.scalars(text("SELECT datname FROM pg_database WHERE datname LIKE 'bench_ingest_%'")))
    finally:
        admin.dispose()
