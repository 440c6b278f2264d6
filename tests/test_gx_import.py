"""Great Expectations is imported without altair and scipy.stats (consult/ingest/gx_import.py), which only an
expectation type the generated suites never use needs; that expectation still works when a suite asks for it."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys, time
from consult.ingest.gx_import import DeferredModule, import_great_expectations
import_great_expectations()
deferred = {name: isinstance(sys.modules[name], DeferredModule) for name in ("altair", "scipy.stats")}
from great_expectations.expectations.core import expect_column_kl_divergence_to_be_less_than as kl
entropy = float(kl.stats.entropy([0.5, 0.5], [0.25, 0.75]))
chart = kl.alt.Chart.__name__
loaded = {name: not isinstance(sys.modules[name], DeferredModule) for name in ("altair", "scipy.stats")}
print(json.dumps({"deferred": deferred, "entropy": entropy, "chart": chart, "loaded": loaded}))
"""


def test_gx_is_imported_without_altair_and_scipy_stats_which_load_when_used() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["deferred"] == {"altair": True, "scipy.stats": True}
    # KL divergence of (1/2, 1/2) from (1/4, 3/4): 1/2 ln 2 + 1/2 ln(2/3)
    assert abs(found["entropy"] - 0.1438410362258904) < 1e-12
    assert found["chart"] == "Chart"
    assert found["loaded"] == {"altair": True, "scipy.stats": True}
