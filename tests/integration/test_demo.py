"""`raymeta demo` as a newcomer runs it: its own progress on the terminal, Ray's
output in a log file, and the memory effect against a baseline on the same target.

The demo runs in a subprocess with its own local Ray while the test session's Ray
is up too, so it also checks that another Ray instance on the machine breaks
nothing ("Found multiple active Ray instances").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]
RAYMETA = Path(sys.executable).parent / "raymeta"
# Lines Ray, Tune and Train print on their own: log records, worker prefixes,
# Tune's tables and hints, Train's report lines.
RAY_LINE = re.compile(
    r"\b(INFO|WARNING|ERROR)\b.*\.py:\d+|pid=\d+\)|TrainController|Reporting training"
    r"|Checkpoint successfully|View detailed results|Configuration for experiment"
    r"|tensorboard|multiple active Ray|Traceback|╭|│"
)


def demo(
    store: Path, *extra: str, stages: str = "tune,baseline"
) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [str(RAYMETA), "demo", "--store", str(store), "--stages", stages, *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_shows_its_progress_and_the_memory_effect_not_rays_logs(
    tmp_path, ray_local
):
    store = tmp_path / "store"
    first = demo(store, stages="tune,baseline,sama")
    assert first.returncode == 0, (first.stdout + first.stderr)[-3000:]
    for text in (first.stdout, first.stderr):
        assert not [line for line in text.splitlines() if RAY_LINE.search(line)]
    assert "==> [1/4] ScaML-GP tuning with memory, demo run 1" in first.stdout
    assert "trial 10/10 (100%)" in first.stdout
    assert "memory effect (same target, 10 trials each)" in first.stdout
    log = store / "logs" / "demo-1.log"
    assert f"Ray's own output: {log}" in first.stdout
    assert "Started a local Ray instance" in log.read_text()
    # Train's placement-group cleaner reaches this cluster's State API, even with
    # the test session's Ray on the same machine.
    assert "step 600/600 (100%)" in first.stdout
    assert "multiple active Ray instances" not in log.read_text()

    second = demo(store)
    assert second.returncode == 0, (second.stdout + second.stderr)[-3000:]
    assert "(1 earlier demo run(s) reused as meta-data)" in second.stdout
    assert "earlier demo runs: ['demo-tune-1']" in second.stdout
    effect = re.search(
        r"best regret (\S+) with meta-data vs (\S+) without", second.stdout
    )
    assert effect, second.stdout
    assert not [line for line in second.stdout.splitlines() if RAY_LINE.search(line)]


def test_verbose_demo_shows_rays_output(tmp_path, ray_local):
    done = demo(tmp_path / "store", "--verbose", stages="tune")
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    both = done.stdout + done.stderr
    assert "Started a local Ray instance" in both
    assert not (tmp_path / "store" / "logs" / "demo-1.log").exists()
