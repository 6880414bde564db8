"""Multi-node on one machine: a 2-node ray.cluster_utils.Cluster (own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
HERE = Path(__file__).parent


def run_driver(name: str, tmp_path: Path) -> dict:
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(HERE / name), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=HERE.parents[1],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-5000:]
    return json.loads(lines[-1])


def test_meta_fits_spread_over_three_nodes_equal_the_serial_fits(tmp_path):
    out = run_driver("_spread_driver.py", tmp_path)
    assert out["nodes"] == 3 and out["fitted"] == 24
    assert len(out["fit_nodes"]) == 3, out["fit_nodes"]
    assert sum(out["fit_nodes"].values()) == 24
    assert out["same_as_serial"]


def test_sama_workers_and_meta_fits_spread_over_two_nodes(tmp_path):
    out = run_driver("_multinode_driver.py", tmp_path)
    assert out["nodes"] == 2
    assert len(out["train_nodes"]) == 2, (
        "the two SAMA workers should sit on different nodes"
    )
    assert len(out["hetrom_nodes"]) == 2, "HeTRoM workers on different nodes"
    assert out["task_rows"] == 6 * 8  # 6 steps x 8 tasks, written by rank 0
    assert out["fitted"] == 4 and out["meta_rows"] == 4
    assert out["weight_rows"] > 0
