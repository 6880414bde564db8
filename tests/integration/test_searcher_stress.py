"""Check C4: the Tune driver is SIGKILLed 4 times and restored each time.

Modelled on Ray's ``test_experiment_restore.py``: a subprocess driver runs a Tune
experiment (num_samples=16, max_concurrent=2, ScaMLGPSearch with meta-data) and is
killed at random times (uniform in 0-3 s after the run completed its first trial,
drawn from a seeded numpy Generator); every rerun resumes with
``Tuner.restore(resume_errored=True)``. The experiment must end with exactly 16
trials, distinct configurations, one searcher observation per completed trial,
completed trials never losing iterations, and a clean exit.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from ray import tune

from raymeta.search.resume import newest_complete_session
from tests.integration import _tune_restore_driver as driver

pytestmark = [pytest.mark.ray, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
NUM_SAMPLES = 16
NUM_KILLS = 4


def _start_driver(address: str, storage: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration._tune_restore_driver",
            address,
            storage,
            "-",
            str(NUM_SAMPLES),
            "stress",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_for_a_completion(
    path: str, before: dict[str, int], proc: subprocess.Popen
) -> None:
    """Block until this driver completes a trial that was not completed before."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        if set(_completed_iterations(path)) - set(before):
            return
        time.sleep(0.5)
    raise AssertionError(f"the driver completed no trial (rc {proc.poll()})")


def _completed_iterations(path: str) -> dict[str, int]:
    """Trial id -> iterations of the TERMINATED trials in the state Tune restores.

    Read from Tune's experiment-state JSON directly (after setting aside sessions a
    killed sync left truncated; see ``newest_complete_session``).
    """
    for _ in range(20):  # a running driver may be rewriting the file under us
        session = newest_complete_session(path, repair=False)
        if session is None:
            return {}
        try:
            with open(os.path.join(path, f"experiment_state-{session}.json")) as f:
                trial_data = json.load(f)["trial_data"]
            break
        except (json.JSONDecodeError, KeyError, FileNotFoundError):
            time.sleep(0.1)
    else:
        raise AssertionError(f"no readable experiment state in {path}")
    completed = {}
    for trial_json, runtime_json in trial_data:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        if trial["status"] == "TERMINATED":
            last = runtime.get("last_result") or {}
            completed[trial["trial_id"]] = int(last.get("training_iteration", 0))
    return completed


def test_driver_killed_four_times_finishes_exactly_once(ray_local, tmp_path):
    address = ray_local.get_runtime_context().gcs_address
    storage = str(tmp_path / "runs")
    path = os.path.join(storage, driver.STRESS_EXPERIMENT)
    kill_after = np.random.default_rng(2024).uniform(0.0, 3.0, size=NUM_KILLS)
    completed: dict[str, int] = {}
    for delay in kill_after:
        proc = _start_driver(address, storage)
        _wait_for_a_completion(path, completed, proc)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            pass
        assert proc.poll() is None, "the driver ended before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        now = _completed_iterations(path)
        for trial_id, iterations in completed.items():
            assert now.get(trial_id, -1) >= iterations, (trial_id, completed, now)
        completed = now
        print(f"killed {delay:.1f} s after a completion: {len(completed)} completed")
    assert len(completed) < NUM_SAMPLES, "the kills left nothing to resume"

    final = _start_driver(address, storage)
    _, stderr = final.communicate(timeout=180)
    assert final.returncode == 0, stderr.decode()[-3000:]

    analysis = tune.ExperimentAnalysis(path)
    trials = analysis.trials
    assert len(trials) == NUM_SAMPLES
    assert all(t.status == "TERMINATED" for t in trials), [t.status for t in trials]
    iterations = _completed_iterations(path)
    assert set(iterations.values()) == {driver.STRESS_ITERATIONS}
    for trial_id, before in completed.items():
        assert iterations[trial_id] >= before
    hashes = {json.dumps(t.config, sort_keys=True) for t in trials}
    assert len(hashes) == NUM_SAMPLES, "a configuration was suggested twice"
    searcher = driver.latest_searcher(path)
    assert searcher.num_observations == NUM_SAMPLES and searcher.pending_trials == []
    observed = sorted(map(tuple, np.round(searcher.get_state()["X"], 12)))
    expected = sorted(
        tuple(np.round(searcher.search_space.encode(t.config), 12)) for t in trials
    )
    assert observed == expected  # each completed trial observed exactly once
    assert glob.glob(os.path.join(path, "scamlgp-meta-*.pkl")), "meta file not synced"
    set_aside = sorted(
        map(os.path.basename, glob.glob(os.path.join(path, "*.corrupt")))
    )
    print(f"state files set aside as truncated by a killed sync: {set_aside}")
