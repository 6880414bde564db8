"""Driver for the interrupted-run tests: a Tune run the test kills mid-experiment.

Run as ``python -m tests.integration._tune_restore_driver ADDRESS STORAGE STORE N``
(the single-kill test) or ``... ADDRESS STORAGE - N stress`` (the driver-crash stress
test: trials report several iterations, the searcher has meta-data, and a rerun
resumes with ``Tuner.restore(resume_errored=True)`` when the experiment exists).
It connects to the test session's Ray cluster, so killing it leaves no cluster
behind.
"""

from __future__ import annotations

import glob
import os
import sys
import time

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.search import ConcurrencyLimiter

from raymeta.results import ResultStore
from raymeta.results.atomic_fs import atomic_local_filesystem
from raymeta.search.callback import ReconcileCallback, StoreCallback
from raymeta.search.resume import restorable
from raymeta.search.searcher import ScaMLGPSearch

EXPERIMENT = "interrupted"
STRESS_EXPERIMENT = "stress"
SPACE = {"x": tune.uniform(-2.0, 2.0), "k": tune.choice(["a", "b"])}
FAST = {"restarts": 0, "num_restarts": 1, "raw_samples": 64}
STRESS_ITERATIONS = 4


def objective(config):
    time.sleep(1.0)
    offset = 0.0 if config["k"] == "a" else 0.5
    tune.report({"loss": (config["x"] - 0.3) ** 2 + offset})


def stress_objective(config):
    offset = 0.0 if config["k"] == "a" else 0.5
    for step in range(1, STRESS_ITERATIONS + 1):
        time.sleep(0.5)
        tune.report({"loss": (config["x"] - 0.3) ** 2 + offset + 1.0 / step})


def stress_meta_data() -> pd.DataFrame:
    """Two earlier tasks of the stress objective (so restores carry meta-data)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-2.0, 2.0, 16)
    k = rng.choice(["a", "b"], 16)
    return pd.DataFrame(
        {
            "task_id": np.repeat(["old-0", "old-1"], 8),
            "x": x,
            "k": k,
            "loss": (x - 0.2) ** 2 + np.where(k == "a", 0.0, 0.5),
        }
    )


def build_tuner(
    storage: str, store: str | None, num_samples: int, *, stress: bool = False
) -> tune.Tuner:
    searcher = ScaMLGPSearch(
        metric="loss",
        mode="min",
        seed=0,
        meta_data=stress_meta_data() if stress else None,
        meta_restarts=0,
        **FAST,
    )
    callbacks = [StoreCallback(ResultStore(store), metric="loss")] if store else []
    callbacks.append(ReconcileCallback(searcher))
    return tune.Tuner(
        stress_objective if stress else objective,
        param_space=SPACE,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
            num_samples=num_samples,
            metric="loss",
            mode="min",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=STRESS_EXPERIMENT if stress else EXPERIMENT,
            storage_path=storage,
            storage_filesystem=atomic_local_filesystem(),
            callbacks=callbacks,
            verbose=0,
        ),
    )


def latest_searcher(path: str) -> ScaMLGPSearch:
    """The searcher restored from the newest ``searcher-state-*.pkl`` in ``path``."""
    files = sorted(glob.glob(os.path.join(path, "searcher-state-*.pkl")))
    assert files, f"no searcher checkpoint in {path}"
    searcher = ScaMLGPSearch()
    searcher.restore(files[-1])  # names carry the session start time; newest last
    return searcher


def run_stress(storage: str, num_samples: int) -> None:
    """Start the stress experiment, or resume it (errored trials too) if it exists."""
    # as raymeta's tuning jobs: save the experiment state after every step
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    path = os.path.join(storage, STRESS_EXPERIMENT)
    if restorable(path):
        tuner = tune.Tuner.restore(
            path,
            trainable=stress_objective,
            resume_errored=True,
            storage_filesystem=atomic_local_filesystem(),
        )
    else:
        tuner = build_tuner(storage, None, num_samples, stress=True)
    grid = tuner.fit()
    if grid.errors or len(grid) != num_samples:
        raise SystemExit(
            f"{len(grid)} trials, {len(grid.errors)} errored; expected {num_samples}"
        )


if __name__ == "__main__":
    import ray

    address, storage, store, num_samples = sys.argv[1:5]
    ray.init(address=address, log_to_driver=False)
    if sys.argv[5:] == ["stress"]:
        run_stress(storage, int(num_samples))
    else:
        build_tuner(storage, store, int(num_samples)).fit()
