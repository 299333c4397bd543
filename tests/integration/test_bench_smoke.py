"""A small run of the benchmark (`python -m bench --quick`): it starts, drains and counts exactly.

No speed is asserted: the figures depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration

SMOKE_TIMEOUT_S = 120


def test_a_quick_benchmark_run_on_both_backends_lands_every_row_and_dead_letter_exactly(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [sys.executable, "-m", "bench", "--quick", "--designs", "ours,ceiling",
            "--backends", "postgres,timescaledb", "--out", str(out)]
    run = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=SMOKE_TIMEOUT_S, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    [result_file] = out.glob("*.json")
    assert list(out.glob("*.png")), "the plot is drawn next to the JSON"
    doc = json.loads(result_file.read_text())
    assert doc["designs"].keys() == {"ours@postgres", "ours@timescaledb", "ceiling"}, "the ceiling runs once"
    ceiling = doc["designs"]["ceiling"]
    assert ceiling["landed"]["rows"] == ceiling["expected"]["messages"]
    assert doc["errors"] == {}
    assert doc["ratios"].keys() == {"ours@postgres/ceiling", "ours@timescaledb/ceiling"}
    for backend in ("postgres", "timescaledb"):
        ours = doc["designs"][f"ours@{backend}"]
        expected = ours["expected"]
        assert expected["messages"] == 3000 and expected["invalid"] == 30
        assert ours["landed"] == {"rows": expected["rows"], "dead": expected["invalid"]}
        assert ours["latency"]["messages"] == expected["valid"]
        roles = {p["role"] for p in ours["processes"]}
        assert {"listener-1", "worker-1", "mosquitto", "redis", "postgres-backend"} <= roles
        assert ours["cpu"]["postgres"]["us_per_point"] > 0
        assert ours["backend"]["name"] == backend
        assert (ours["backend"]["timescaledb"] is not None) == (backend == "timescaledb")
