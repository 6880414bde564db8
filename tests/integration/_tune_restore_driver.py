"""Driver for the interrupted-run test: a Tune run the test kills mid-experiment.

Run as ``python -m tests.integration._tune_restore_driver ADDRESS STORAGE STORE N``;
it connects to the test session's Ray cluster, so killing it leaves no cluster behind.
"""

from __future__ import annotations

import sys
import time

from ray import tune
from ray.tune.search import ConcurrencyLimiter

from raymeta.results import ResultStore
from raymeta.search.callback import StoreCallback
from raymeta.search.searcher import ScaMLGPSearch

EXPERIMENT = "interrupted"
SPACE = {"x": tune.uniform(-2.0, 2.0), "k": tune.choice(["a", "b"])}
FAST = {"restarts": 0, "num_restarts": 1, "raw_samples": 64}


def objective(config):
    time.sleep(1.0)
    offset = 0.0 if config["k"] == "a" else 0.5
    tune.report({"loss": (config["x"] - 0.3) ** 2 + offset})


def build_tuner(storage: str, store: str, num_samples: int) -> tune.Tuner:
    searcher = ScaMLGPSearch(metric="loss", mode="min", seed=0, **FAST)
    return tune.Tuner(
        objective,
        param_space=SPACE,
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=2),
            num_samples=num_samples,
            metric="loss",
            mode="min",
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=EXPERIMENT,
            storage_path=storage,
            callbacks=[StoreCallback(ResultStore(store), metric="loss")],
            verbose=0,
        ),
    )


if __name__ == "__main__":
    import ray

    address, storage, store, num_samples = sys.argv[1:5]
    ray.init(address=address, log_to_driver=False)
    build_tuner(storage, store, int(num_samples)).fit()
