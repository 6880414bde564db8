"""Multi-node on one machine: a 2-node ray.cluster_utils.Cluster (own process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
DRIVER = Path(__file__).with_name("_multinode_driver.py")


def test_sama_workers_and_meta_fits_spread_over_two_nodes(tmp_path):
    env = {**os.environ, "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1"}
    env.pop("RAY_ADDRESS", None)
    done = subprocess.run(
        [sys.executable, str(DRIVER), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert done.returncode == 0 and lines, (done.stdout + done.stderr)[-5000:]
    out = json.loads(lines[-1])
    assert out["nodes"] == 2
    assert len(out["train_nodes"]) == 2, (
        "the two SAMA workers should sit on different nodes"
    )
    assert out["fitted"] == 4 and out["meta_rows"] == 4
    assert out["weight_rows"] > 0
